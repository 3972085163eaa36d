// CPU kernel of e2econd::diffusion_step / diffusion_step_ (fp32): one pass over the elements,
// at::parallel_for over points, inner loops over contiguous runs of unmasked points of one sample
// with scalar coefficients (auto-vectorised at -O3). In-kernel noise: Philox4x32-10 (csrc/philox.h)
// generated tile by tile into a stack buffer, never materialised.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "diffusion_step.h"
#include "philox.h"

namespace e2econd {
namespace {

constexpr int64_t kTile = 1024;  // elements per inner tile (noise buffer on the stack)

enum NoiseMode { kNoNoise = 0, kNoiseTensor = 1, kNoisePhilox = 2 };

struct Ptrs {
  const float* x;
  const float* v;
  const float* xp;     // x0_prev or null
  const float* noise;  // noise tensor or null
  float* out;          // == x for the in-place op
  float* x0;           // x0 output or null
  uint64_t seed, offset;
  float clip;
};

// out[i] for i in [begin, end) with the scalar coefficients c[0..5]; all points unmasked.
template <bool kClip, bool kPrev, int kNoise, bool kX0>
void step_range(const Ptrs& p, const float* c, int64_t begin, int64_t end) {
  const float a = c[0], s = c[1], cx = c[2], c0 = c[3], cp = c[4], cn = c[5];
  const float clip = p.clip;
  alignas(64) float zbuf[kTile + 8];
  for (int64_t t0 = begin; t0 < end; t0 += kTile) {
    const int64_t len = std::min(kTile, end - t0);
    const float* z = nullptr;
    if (kNoise == kNoisePhilox) {
      const int64_t g0 = t0 / 4, g1 = (t0 + len + 3) / 4;
      for (int64_t g = g0; g < g1; ++g)
        philox::block_normals(static_cast<uint64_t>(g), p.seed, p.offset, zbuf + 4 * (g - g0));
      z = zbuf + (t0 - 4 * g0);
    } else if (kNoise == kNoiseTensor) {
      z = p.noise + t0;
    }
    const float* x = p.x + t0;  // no restrict: out may alias it
    const float* __restrict__ v = p.v + t0;
    const float* __restrict__ xp = kPrev ? p.xp + t0 : nullptr;
    float* out = p.out + t0;  // may alias x (in place): same index read before written
    float* __restrict__ x0o = kX0 ? p.x0 + t0 : nullptr;
    for (int64_t j = 0; j < len; ++j) {
      const float xv = x[j];
      float x0 = a * xv - s * v[j];
      if (kClip) x0 = x0 < -clip ? -clip : (x0 > clip ? clip : x0);
      float o = cx * xv + c0 * x0;
      if (kPrev) o = o + cp * xp[j];
      if (kNoise != kNoNoise) o = o + cn * z[j];
      out[j] = o;
      if (kX0) x0o[j] = x0;
    }
  }
}

using RangeFn = void (*)(const Ptrs&, const float*, int64_t, int64_t);

template <bool kClip, bool kPrev, int kNoise>
RangeFn pick_x0(bool x0) {
  return x0 ? &step_range<kClip, kPrev, kNoise, true> : &step_range<kClip, kPrev, kNoise, false>;
}
template <bool kClip, bool kPrev>
RangeFn pick_noise(int noise, bool x0) {
  switch (noise) {
    case kNoiseTensor: return pick_x0<kClip, kPrev, kNoiseTensor>(x0);
    case kNoisePhilox: return pick_x0<kClip, kPrev, kNoisePhilox>(x0);
    default: return pick_x0<kClip, kPrev, kNoNoise>(x0);
  }
}
RangeFn pick(bool clip, bool prev, int noise, bool x0) {
  if (clip) return prev ? pick_noise<true, true>(noise, x0) : pick_noise<true, false>(noise, x0);
  return prev ? pick_noise<false, true>(noise, x0) : pick_noise<false, false>(noise, x0);
}

void run_cpu(const at::Tensor& x, const at::Tensor& v, const at::Tensor& coef, const c10::optional<at::Tensor>& mask,
             const c10::optional<at::Tensor>& x0_prev, const c10::optional<at::Tensor>& noise, double clip,
             int64_t seed, int64_t offset, float* out, float* x0_out) {
  const StepGeometry geo = check_diffusion_step(x, v, coef, mask, x0_prev, noise, clip, offset);
  TORCH_CHECK(x.scalar_type() == at::kFloat, "diffusion_step (CPU): only float32 is supported, got ",
              x.scalar_type());
  if (geo.n == 0) return;
  Ptrs p;
  p.x = x.data_ptr<float>();
  p.v = v.data_ptr<float>();
  p.xp = x0_prev.has_value() ? x0_prev->data_ptr<float>() : nullptr;
  p.noise = noise.has_value() ? noise->data_ptr<float>() : nullptr;
  p.out = out;
  p.x0 = x0_out;
  p.seed = static_cast<uint64_t>(seed);
  p.offset = static_cast<uint64_t>(offset);
  p.clip = static_cast<float>(clip);
  const int noise_mode = noise.has_value() ? kNoiseTensor : (seed >= 0 ? kNoisePhilox : kNoNoise);
  const bool clip_on = clip > 0;
  const bool prev = x0_prev.has_value();
  const RangeFn fn = pick(clip_on, prev, noise_mode, x0_out != nullptr);
  // Philox noise times c_n == 0 is exactly 0 (the normals are finite): skip generating it.
  const RangeFn fn_quiet = noise_mode == kNoisePhilox ? pick(clip_on, prev, kNoNoise, x0_out != nullptr) : fn;
  const float* c = coef.data_ptr<float>();
  const bool* m = mask.has_value() ? mask->data_ptr<bool>() : nullptr;
  const int64_t F = geo.feat, pps = geo.pps, points = geo.points;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(F, 1));
  at::parallel_for(0, points, grain, [&](int64_t p0, int64_t p1) {
    int64_t q = p0;
    while (q < p1) {
      const int64_t b = q / pps;
      int64_t r = std::min(p1, (b + 1) * pps);  // run end: same sample
      const bool keep = m == nullptr || m[q];
      if (m != nullptr) {
        int64_t e = q + 1;
        while (e < r && m[e] == keep) ++e;
        r = e;
      }
      const int64_t e0 = q * F, e1 = r * F;
      if (keep) {
        const float* cb = c + (geo.per_sample ? 6 * b : 0);
        (cb[5] == 0.0f ? fn_quiet : fn)(p, cb, e0, e1);
      } else {
        if (p.out != p.x) std::memcpy(p.out + e0, p.x + e0, sizeof(float) * (e1 - e0));
        if (p.x0 != nullptr) std::memset(p.x0 + e0, 0, sizeof(float) * (e1 - e0));
      }
      q = r;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> diffusion_step_cpu(const at::Tensor& x_in, const at::Tensor& v,
                                                      const at::Tensor& coef, const c10::optional<at::Tensor>& mask,
                                                      const c10::optional<at::Tensor>& x0_prev,
                                                      const c10::optional<at::Tensor>& noise, double clip,
                                                      int64_t seed, int64_t offset, bool return_x0) {
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor x0 = return_x0 ? at::empty_like(x, at::MemoryFormat::Contiguous) : at::empty({0}, x.options());
  run_cpu(x, v, coef, mask, x0_prev, noise, clip, seed, offset,
          x.scalar_type() == at::kFloat ? out.data_ptr<float>() : nullptr,
          return_x0 && x.scalar_type() == at::kFloat ? x0.data_ptr<float>() : nullptr);
  return {out, x0};
}

void diffusion_step_inplace_cpu(const at::Tensor& x, const at::Tensor& v, const at::Tensor& coef,
                                const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& x0_prev,
                                const c10::optional<at::Tensor>& noise, double clip, int64_t seed, int64_t offset) {
  TORCH_CHECK(x.is_contiguous(), "diffusion_step_: x must be contiguous (it is written in place)");
  run_cpu(x, v, coef, mask, x0_prev, noise, clip, seed, offset,
          x.scalar_type() == at::kFloat ? x.data_ptr<float>() : nullptr, nullptr);
}

}  // namespace

TORCH_LIBRARY_IMPL(e2econd, CPU, m) {
  m.impl("diffusion_step", &diffusion_step_cpu);
  m.impl("diffusion_step_", &diffusion_step_inplace_cpu);
}

}  // namespace e2econd
