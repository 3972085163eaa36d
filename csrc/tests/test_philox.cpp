// csrc/philox.h against the Random123 Philox4x32-10 known-answer tests, plus Box-Muller sanity.
#include <cmath>
#include <cstdint>

#include "check.h"
#include "philox.h"

using e2econd::philox::U4;

static bool eq(U4 a, U4 b) { return a.x == b.x && a.y == b.y && a.z == b.z && a.w == b.w; }

int main() {
  using e2econd::philox::philox4x32_10;
  CHECK(eq(philox4x32_10(U4{0, 0, 0, 0}, 0, 0), U4{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  const uint32_t f = 0xffffffffu;
  CHECK(eq(philox4x32_10(U4{f, f, f, f}, f, f), U4{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  CHECK(eq(philox4x32_10(U4{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, 0xa4093822u, 0x299f31d0u),
           U4{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
  // counter layout: block g, offset in the upper two words
  const U4 c = e2econd::philox::counter(0x100000002ull, 0x300000004ull);
  CHECK(eq(c, U4{2u, 1u, 4u, 3u}));
  // uniforms strictly inside (0, 1); normals have mean ~0, variance ~1, |z| <= 5.77
  CHECK(e2econd::philox::uniform(0u) > 0.0f && e2econd::philox::uniform(f) < 1.0f);
  double sum = 0, sum2 = 0, zmax = 0;
  const int blocks = 200000;
  for (int g = 0; g < blocks; ++g) {
    float z[4];
    e2econd::philox::block_normals(g, 42, 0, z);
    for (float v : z) {
      sum += v;
      sum2 += double(v) * v;
      zmax = std::fmax(zmax, std::fabs(v));
    }
  }
  const double n = 4.0 * blocks, mean = sum / n, var = sum2 / n - mean * mean;
  std::printf("normals: mean %.5f var %.5f max|z| %.3f\n", mean, var, zmax);
  CHECK(std::fabs(mean) < 0.005);
  CHECK(std::fabs(var - 1.0) < 0.01);
  CHECK(zmax < 5.8);
  return finish("test_philox");
}
