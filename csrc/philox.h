// Philox4x32-10 counter-based RNG + Box-Muller normals, host and device inline.
//
// Shared by the CPU and CUDA kernels of diffusion_step and bit-compatible with the pure-PyTorch
// e2econd/ops/philox.py (normals agree up to float rounding of log/sin/cos). Layout: element i of
// a contiguous tensor takes lane i % 4 of the block with
//   counter = (g lo, g hi, offset lo, offset hi), g = i / 4;  key = (seed lo, seed hi).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define E2E_HD __host__ __device__ __forceinline__
#else
#define E2E_HD inline
#endif

namespace e2econd {
namespace philox {

constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;
constexpr uint32_t kW1 = 0xBB67AE85u;
constexpr float kTwoPi = 6.2831855f;           // float32(2*pi), as in philox.py
constexpr float kInv2Pow23 = 1.1920928955078125e-07f;  // 2^-23

struct U4 {
  uint32_t x, y, z, w;
};

E2E_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  lo = a * b;
  hi = __umulhi(a, b);
#else
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  lo = static_cast<uint32_t>(p);
  hi = static_cast<uint32_t>(p >> 32);
#endif
}

// Philox4x32 with 10 rounds (Random123 philox4x32_R(10, ...)).
E2E_HD U4 philox4x32_10(U4 c, uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += kW0;
      k1 += kW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kM0, c.x, hi0, lo0);
    mulhilo(kM1, c.z, hi1, lo1);
    c = U4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
  }
  return c;
}

// Counter of block g (elements 4g .. 4g+3) for a step with this offset.
E2E_HD U4 counter(uint64_t g, uint64_t offset) {
  return U4{static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32), static_cast<uint32_t>(offset),
            static_cast<uint32_t>(offset >> 32)};
}

// 32-bit word -> uniform in (0, 1) with 23 random bits, exact in fp32.
E2E_HD float uniform(uint32_t r) { return (static_cast<float>(r >> 9) + 0.5f) * kInv2Pow23; }

// -2 log(u) for u in (0, 1). Device: log1pf(u - 1) (u - 1 is exact in fp32 for these u), because the
// kernels build with --use_fast_math, which turns logf into __logf, whose absolute error (~2^-21.4)
// is the whole value near u -> 1 (radius sqrt(-2 log u) off by up to ~5e-4); log1pf has no fast-math
// substitute and stays within a few ulp. Host: std::log (bit-identical CPU streams across versions;
// philox.py reproduces either with log1p=False / True).
E2E_HD float neg2log(float u) {
#if defined(__CUDA_ARCH__)
  return -2.0f * log1pf(u - 1.0f);
#else
  return -2.0f * std::log(u);
#endif
}

// Four standard normals (Box-Muller) from one Philox block, in the order of philox.py::box_muller.
E2E_HD void normals4(U4 w, float z[4]) {
  const float u0 = uniform(w.x), u1 = uniform(w.y), u2 = uniform(w.z), u3 = uniform(w.w);
#if defined(__CUDA_ARCH__)
  const float ra = sqrtf(neg2log(u0));
  const float rb = sqrtf(neg2log(u2));
  float sa, ca, sb, cb;
  sincosf(kTwoPi * (u1 - 0.5f), &sa, &ca);
  sincosf(kTwoPi * (u3 - 0.5f), &sb, &cb);
#else
  const float ra = std::sqrt(neg2log(u0));
  const float rb = std::sqrt(neg2log(u2));
  const float ta = kTwoPi * (u1 - 0.5f), tb = kTwoPi * (u3 - 0.5f);
  const float sa = std::sin(ta), ca = std::cos(ta), sb = std::sin(tb), cb = std::cos(tb);
#endif
  z[0] = ra * ca;
  z[1] = ra * sa;
  z[2] = rb * cb;
  z[3] = rb * sb;
}

// Normals of block g for (seed, offset).
E2E_HD void block_normals(uint64_t g, uint64_t seed, uint64_t offset, float z[4]) {
  normals4(philox4x32_10(counter(g, offset), static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)), z);
}

}  // namespace philox
}  // namespace e2econd
