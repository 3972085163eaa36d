// CUDA kernel of e2econd::diffusion_step / diffusion_step_: fp32 or bf16 storage, fp32 math.
//
// One thread per block of 4 consecutive elements (one Philox4x32-10 call gives its 4 normals,
// csrc/philox.h), 128-bit (fp32) / 64-bit (bf16) loads and stores when every pointer is aligned,
// scalar loads at the tail or when unaligned; grid-stride beyond the grid cap. Masked points
// are copied bitwise (raw storage value), their x0 output is 0.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <torch/library.h>

#include <cstdint>

#include "diffusion_step.h"
#include "philox.h"

namespace e2econd {
namespace {

enum NoiseMode { kNoNoise = 0, kNoiseTensor = 1, kNoisePhilox = 2 };

template <typename T>
struct Vec4;
template <>
struct alignas(16) Vec4<float> {
  float v[4];
};
template <>
struct alignas(8) Vec4<__nv_bfloat16> {
  __nv_bfloat16 v[4];
};

__device__ __forceinline__ float to_f(float a) { return a; }
__device__ __forceinline__ float to_f(__nv_bfloat16 a) { return __bfloat162float(a); }
template <typename T>
__device__ __forceinline__ T from_f(float a);
template <>
__device__ __forceinline__ float from_f<float>(float a) { return a; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float a) { return __float2bfloat16_rn(a); }

template <typename T>
__device__ __forceinline__ void load4(const T* __restrict__ p, int64_t i, int64_t n, bool vec, T r[4]) {
  if (vec) {
    const Vec4<T> t = *reinterpret_cast<const Vec4<T>*>(p + i);
#pragma unroll
    for (int j = 0; j < 4; ++j) r[j] = t.v[j];
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) r[j] = (i + j < n) ? p[i + j] : from_f<T>(0.0f);
  }
}

template <typename T>
__device__ __forceinline__ void store4(T* p, int64_t i, int64_t n, bool vec, const T r[4]) {
  if (vec) {
    Vec4<T> t;
#pragma unroll
    for (int j = 0; j < 4; ++j) t.v[j] = r[j];
    *reinterpret_cast<Vec4<T>*>(p + i) = t;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (i + j < n) p[i + j] = r[j];
  }
}

struct Params {
  int64_t n, feat, pps;
  const float* coef;
  const bool* mask;  // per point or null
  bool per_sample, clip_on, aligned;
  float clip;
  uint64_t seed, offset;
};

template <typename T, int kNoise>
__global__ void __launch_bounds__(256) diffusion_step_kernel(const T* x, const T* __restrict__ v,
                                                             const T* __restrict__ xp, const T* __restrict__ nz,
                                                             T* out, T* __restrict__ x0o, Params prm) {
  const int64_t groups = (prm.n + 3) / 4;
  // Scalar coefficients live in registers; per-sample ones are read (L1-cached) per element.
  float cs[6];
#pragma unroll
  for (int k = 0; k < 6; ++k) cs[k] = __ldg(prm.coef + k);
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = 4 * g;
    const bool vec = prm.aligned && i + 4 <= prm.n;
    T xr[4], vr[4], pr[4], nr[4];
    load4(x, i, prm.n, vec, xr);
    load4(v, i, prm.n, vec, vr);
    if (xp != nullptr) load4(xp, i, prm.n, vec, pr);
    float z[4] = {0.f, 0.f, 0.f, 0.f};
    if (kNoise == kNoiseTensor) {
      load4(nz, i, prm.n, vec, nr);
#pragma unroll
      for (int j = 0; j < 4; ++j) z[j] = to_f(nr[j]);
    } else if (kNoise == kNoisePhilox) {
      philox::block_normals(static_cast<uint64_t>(g), prm.seed, prm.offset, z);
    }
    // Point and sample of each element, stepped from the block's first element.
    int64_t pt = 0, rem = 0, smp = 0, next = 0;
    const bool need_point = prm.mask != nullptr || prm.per_sample;
    if (need_point) {
      pt = i / prm.feat;
      rem = i - pt * prm.feat;
      if (prm.per_sample) {
        smp = pt / prm.pps;
        next = (smp + 1) * prm.pps;
      }
    }
    T outr[4], x0r[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      bool keep = true;
      float c[6];
#pragma unroll
      for (int k = 0; k < 6; ++k) c[k] = cs[k];
      if (need_point && i + j < prm.n) {  // (tail lanes past n would index past the mask / coef)
        if (prm.mask != nullptr) keep = prm.mask[pt];
        if (prm.per_sample) {
#pragma unroll
          for (int k = 0; k < 6; ++k) c[k] = __ldg(prm.coef + 6 * smp + k);
        }
      }
      const float xv = to_f(xr[j]);
      float x0 = c[0] * xv - c[1] * to_f(vr[j]);
      if (prm.clip_on) x0 = x0 < -prm.clip ? -prm.clip : (x0 > prm.clip ? prm.clip : x0);  // NaN stays NaN
      float o = c[2] * xv + c[3] * x0;
      if (xp != nullptr) o = o + c[4] * to_f(pr[j]);
      if (kNoise != kNoNoise) o = o + c[5] * z[j];
      outr[j] = keep ? from_f<T>(o) : xr[j];
      x0r[j] = from_f<T>(keep ? x0 : 0.0f);
      if (need_point) {  // advance to the next element's point / sample
        if (++rem == prm.feat) {
          rem = 0;
          ++pt;
          if (prm.per_sample && pt == next) {
            ++smp;
            next += prm.pps;
          }
        }
      }
    }
    store4(out, i, prm.n, vec, outr);
    if (x0o != nullptr) store4(x0o, i, prm.n, vec, x0r);
  }
}

bool aligned_to(const void* p, int64_t bytes) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <typename T>
void launch_typed(const at::Tensor& x, const at::Tensor& v, const c10::optional<at::Tensor>& x0_prev,
                  const c10::optional<at::Tensor>& noise, T* out, T* x0o, Params prm, int noise_mode) {
  const T* xp = reinterpret_cast<const T*>(x.data_ptr());
  const T* vp = reinterpret_cast<const T*>(v.data_ptr());
  const T* pp = x0_prev.has_value() ? reinterpret_cast<const T*>(x0_prev->data_ptr()) : nullptr;
  const T* np = noise.has_value() ? reinterpret_cast<const T*>(noise->data_ptr()) : nullptr;
  const int64_t vb = 4 * sizeof(T);
  prm.aligned = aligned_to(xp, vb) && aligned_to(vp, vb) && aligned_to(pp, vb) && aligned_to(np, vb) &&
                aligned_to(out, vb) && aligned_to(x0o, vb);
  const int64_t groups = (prm.n + 3) / 4;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((groups + threads - 1) / threads, int64_t(1) << 20);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  switch (noise_mode) {
    case kNoiseTensor:
      diffusion_step_kernel<T, kNoiseTensor><<<blocks, threads, 0, stream>>>(xp, vp, pp, np, out, x0o, prm);
      break;
    case kNoisePhilox:
      diffusion_step_kernel<T, kNoisePhilox><<<blocks, threads, 0, stream>>>(xp, vp, pp, np, out, x0o, prm);
      break;
    default:
      diffusion_step_kernel<T, kNoNoise><<<blocks, threads, 0, stream>>>(xp, vp, pp, np, out, x0o, prm);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void run_cuda(const at::Tensor& x, const at::Tensor& v, const at::Tensor& coef, const c10::optional<at::Tensor>& mask,
              const c10::optional<at::Tensor>& x0_prev, const c10::optional<at::Tensor>& noise, double clip,
              int64_t seed, int64_t offset, const at::Tensor& out, const at::Tensor* x0_out) {
  const StepGeometry geo = check_diffusion_step(x, v, coef, mask, x0_prev, noise, clip, offset);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "diffusion_step (CUDA): float32 or bfloat16 storage, got ", x.scalar_type());
  if (geo.n == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  Params prm;
  prm.n = geo.n;
  prm.feat = geo.feat;
  prm.pps = geo.pps;
  prm.coef = coef.data_ptr<float>();
  prm.mask = mask.has_value() ? mask->data_ptr<bool>() : nullptr;
  prm.per_sample = geo.per_sample;
  prm.clip_on = clip > 0;
  prm.clip = static_cast<float>(clip);
  prm.seed = static_cast<uint64_t>(seed);
  prm.offset = static_cast<uint64_t>(offset);
  prm.aligned = false;
  const int noise_mode = noise.has_value() ? kNoiseTensor : (seed >= 0 ? kNoisePhilox : kNoNoise);
  if (x.scalar_type() == at::kFloat) {
    launch_typed<float>(x, v, x0_prev, noise, out.data_ptr<float>(), x0_out ? x0_out->data_ptr<float>() : nullptr,
                        prm, noise_mode);
  } else {
    using B = __nv_bfloat16;
    launch_typed<B>(x, v, x0_prev, noise, reinterpret_cast<B*>(out.data_ptr()),
                    x0_out ? reinterpret_cast<B*>(x0_out->data_ptr()) : nullptr, prm, noise_mode);
  }
}

std::tuple<at::Tensor, at::Tensor> diffusion_step_cuda(const at::Tensor& x_in, const at::Tensor& v,
                                                       const at::Tensor& coef, const c10::optional<at::Tensor>& mask,
                                                       const c10::optional<at::Tensor>& x0_prev,
                                                       const c10::optional<at::Tensor>& noise, double clip,
                                                       int64_t seed, int64_t offset, bool return_x0) {
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor x0 = return_x0 ? at::empty_like(x, at::MemoryFormat::Contiguous) : at::empty({0}, x.options());
  run_cuda(x, v, coef, mask, x0_prev, noise, clip, seed, offset, out, return_x0 ? &x0 : nullptr);
  return {out, x0};
}

void diffusion_step_inplace_cuda(const at::Tensor& x, const at::Tensor& v, const at::Tensor& coef,
                                 const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& x0_prev,
                                 const c10::optional<at::Tensor>& noise, double clip, int64_t seed, int64_t offset) {
  TORCH_CHECK(x.is_contiguous(), "diffusion_step_: x must be contiguous (it is written in place)");
  run_cuda(x, v, coef, mask, x0_prev, noise, clip, seed, offset, x, nullptr);
}

}  // namespace

TORCH_LIBRARY_IMPL(e2econd, CUDA, m) {
  m.impl("diffusion_step", &diffusion_step_cuda);
  m.impl("diffusion_step_", &diffusion_step_inplace_cuda);
}

}  // namespace e2econd
