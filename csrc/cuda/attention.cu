// CUDA kernels of e2econd::masked_attention_{fwd,bwd} and e2econd::packed_attention_{fwd,bwd}.
//
// Flash-attention-2 structure without tensor cores (plain fp32 FMA):
//   forward  one CTA per (jet, head, 64-query tile), one thread per query; 64-key K/V tiles in
//            shared memory (fp32); online softmax in the log2 domain over 16-key chunks; output
//            and the per-query log-sum-exp (fp32) written for valid queries only.
//   backward delta = rowsum(dO o O) (one pass), then dK/dV with one CTA per (jet, head, 64-key
//            tile) streaming Q/dO tiles, and dQ with one CTA per (jet, head, 64-query tile)
//            streaming K/V tiles; each recomputes P = exp2(s * scale * log2e - lse * log2e) so
//            there are no atomics and results are deterministic. For D = 64 two lanes share a
//            key/query row (32 dims each, dot products reduced with a warp shuffle).
// Templated on the storage dtype (float, at::Half, at::BFloat16; fp32 accumulation) and the
// padded head dim (16, 32, 64; the real head dim Dr <= D is a runtime argument). Packed layout is
// native; the padded layout uses jet position b with its own strides and lengths clamped to N.
// Padded outputs and gradients beyond a jet's length are zero (buffers are zero-initialised).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "attention_checks.h"

#include <cmath>
#include <limits>

namespace e2econd {
namespace {

constexpr int kTile = 64;   // queries (or keys) per CTA and rows per streamed tile
constexpr int kChunk = 16;  // keys per online-softmax rescale in the forward pass
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Element strides of a (jet, head, token, dim) view, unit stride along dim.
struct View {
  int64_t sj, sh, st;
};

__device__ __forceinline__ int64_t at_(const View& v, int64_t pos, int h, int64_t i) {
  return pos * v.sj + (int64_t)h * v.sh + i * v.st;
}

// Jet b -> (position, length): packed: pos = cu[b], L = cu[b+1] - cu[b]; padded: pos = b,
// L = clamp(lengths[b], 0, N).
struct Seq {
  const int* seq;
  int packed;
  int N;
  __device__ __forceinline__ void get(int b, int64_t& pos, int& L) const {
    if (packed) {
      const int s = seq[b];
      pos = s;
      L = seq[b + 1] - s;
    } else {
      pos = b;
      L = min(max(seq[b], 0), N);
    }
  }
};

template <typename T>
__device__ __forceinline__ float ldf(const T* p) {
  return static_cast<float>(*p);
}

// Cooperative load of rows [r0, r0 + n) of a (jet, head) slice into sm[kTile][D] as fp32,
// zero beyond n rows and Dr columns.
template <typename T, int D>
__device__ __forceinline__ void load_tile(float (*sm)[D], const T* __restrict__ x, const View& vx, int64_t pos,
                                          int h, int r0, int n, int Dr) {
  for (int idx = threadIdx.x; idx < kTile * D; idx += blockDim.x) {
    const int r = idx / D, d = idx % D;
    sm[r][d] = (r < n && d < Dr) ? ldf(x + at_(vx, pos, h, r0 + r) + d) : 0.f;
  }
}

template <int DPT>
__device__ __forceinline__ float dot_sm(const float (&a)[DPT], const float* __restrict__ s) {
  float acc = 0.f;
#pragma unroll
  for (int d = 0; d < DPT; d += 4) {
    const float4 x = *reinterpret_cast<const float4*>(s + d);
    acc = fmaf(a[d], x.x, acc);
    acc = fmaf(a[d + 1], x.y, acc);
    acc = fmaf(a[d + 2], x.z, acc);
    acc = fmaf(a[d + 3], x.w, acc);
  }
  return acc;
}

template <int DPT>
__device__ __forceinline__ void axpy_sm(float (&acc)[DPT], float a, const float* __restrict__ s) {
#pragma unroll
  for (int d = 0; d < DPT; d += 4) {
    const float4 x = *reinterpret_cast<const float4*>(s + d);
    acc[d] = fmaf(a, x.x, acc[d]);
    acc[d + 1] = fmaf(a, x.y, acc[d + 1]);
    acc[d + 2] = fmaf(a, x.z, acc[d + 2]);
    acc[d + 3] = fmaf(a, x.w, acc[d + 3]);
  }
}

template <int LANES>
__device__ __forceinline__ float lane_sum(float x) {
#pragma unroll
  for (int o = LANES / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// ------------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------------
template <typename T, int D>
__global__ void __launch_bounds__(kTile) attn_fwd_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                         const T* __restrict__ v, T* __restrict__ out,
                                                         float* __restrict__ lse, View vq, View vk, View vv,
                                                         View vo, View vl, Seq seq, int Dr, float c) {
  const int b = blockIdx.x, h = blockIdx.y, i0 = blockIdx.z * kTile;
  int64_t pos;
  int L;
  seq.get(b, pos, L);
  if (i0 >= L) return;  // uniform over the CTA
  __shared__ __align__(16) float Ks[kTile][D];
  __shared__ __align__(16) float Vs[kTile][D];
  const int i = i0 + threadIdx.x;
  const bool valid = i < L;
  float qr[D], o[D];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    qr[d] = (valid && d < Dr) ? ldf(q + at_(vq, pos, h, i) + d) * c : 0.f;
    o[d] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int k0 = 0; k0 < L; k0 += kTile) {
    const int nk = min(kTile, L - k0);
    __syncthreads();
    load_tile<T, D>(Ks, k, vk, pos, h, k0, nk, Dr);
    load_tile<T, D>(Vs, v, vv, pos, h, k0, nk, Dr);
    __syncthreads();
    if (valid) {
      for (int c0 = 0; c0 < nk; c0 += kChunk) {
        float s[kChunk];
        float mx = m;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          const float dotv = dot_sm<D>(qr, &Ks[c0 + j][0]);
          s[j] = (c0 + j < nk) ? dotv : -INFINITY;
          mx = fmaxf(mx, s[j]);
        }
        const float alpha = exp2f(m - mx);  // 0 on the first chunk (m = -inf, mx finite)
        l *= alpha;
#pragma unroll
        for (int d = 0; d < D; ++d) o[d] *= alpha;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          const float p = exp2f(s[j] - mx);
          l += p;
          axpy_sm<D>(o, p, &Vs[c0 + j][0]);
        }
        m = mx;
      }
    }
  }
  if (valid) {
    const float inv = 1.f / l;
    T* dst = out + at_(vo, pos, h, i);
#pragma unroll
    for (int d = 0; d < D; ++d)
      if (d < Dr) dst[d] = static_cast<T>(o[d] * inv);
    lse[at_(vl, pos, h, i)] = (m + log2f(l)) * kLn2;
  }
}

// ------------------------------------------------------------------------------------------
// Backward
// ------------------------------------------------------------------------------------------
template <typename T, int D>
__global__ void __launch_bounds__(kTile) attn_bwd_delta_kernel(const T* __restrict__ out, const T* __restrict__ dout,
                                                               float* __restrict__ delta, View vo, View vdo, View vl,
                                                               Seq seq, int Dr) {
  const int b = blockIdx.x, h = blockIdx.y, i = blockIdx.z * kTile + threadIdx.x;
  int64_t pos;
  int L;
  seq.get(b, pos, L);
  if (i >= L) return;
  const T* o = out + at_(vo, pos, h, i);
  const T* g = dout + at_(vdo, pos, h, i);
  float acc = 0.f;
  for (int d = 0; d < Dr; ++d) acc = fmaf(ldf(o + d), ldf(g + d), acc);
  delta[at_(vl, pos, h, i)] = acc;
}

// dK, dV for 64 keys per CTA; LANES threads per key, each owning DPT = D / LANES dims.
template <typename T, int D>
__global__ void __launch_bounds__(kTile*(D > 32 ? 2 : 1))
    attn_bwd_dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                         T* __restrict__ dk, T* __restrict__ dv, View vq, View vk, View vv, View vdo, View vl,
                         View vg, Seq seq, int Dr, float c, float scale) {
  constexpr int LANES = D > 32 ? 2 : 1;
  constexpr int DPT = D / LANES;
  const int b = blockIdx.x, h = blockIdx.y, j0 = blockIdx.z * kTile;
  int64_t pos;
  int L;
  seq.get(b, pos, L);
  if (j0 >= L) return;
  __shared__ __align__(16) float Qs[kTile][D];
  __shared__ __align__(16) float Gs[kTile][D];
  __shared__ float lse2[kTile];
  __shared__ float dl[kTile];
  const int part = threadIdx.x % LANES;
  const int j = j0 + threadIdx.x / LANES;
  const bool valid = j < L;
  const int d0 = part * DPT;
  float kr[DPT], vr[DPT], dkr[DPT], dvr[DPT];
#pragma unroll
  for (int e = 0; e < DPT; ++e) {
    const bool ok = valid && d0 + e < Dr;
    kr[e] = ok ? ldf(k + at_(vk, pos, h, j) + d0 + e) : 0.f;
    vr[e] = ok ? ldf(v + at_(vv, pos, h, j) + d0 + e) : 0.f;
    dkr[e] = 0.f;
    dvr[e] = 0.f;
  }
  for (int i0 = 0; i0 < L; i0 += kTile) {
    const int ni = min(kTile, L - i0);
    __syncthreads();
    load_tile<T, D>(Qs, q, vq, pos, h, i0, ni, Dr);
    load_tile<T, D>(Gs, dout, vdo, pos, h, i0, ni, Dr);
    for (int r = threadIdx.x; r < kTile; r += blockDim.x) {
      lse2[r] = r < ni ? lse[at_(vl, pos, h, i0 + r)] * kLog2e : 0.f;
      dl[r] = r < ni ? delta[at_(vl, pos, h, i0 + r)] : 0.f;
    }
    __syncthreads();
    for (int r = 0; r < ni; ++r) {
      const float s = lane_sum<LANES>(dot_sm<DPT>(kr, &Qs[r][d0]));
      const float dp = lane_sum<LANES>(dot_sm<DPT>(vr, &Gs[r][d0]));
      const float p = exp2f(s * c - lse2[r]);
      const float ds = p * (dp - dl[r]);
      axpy_sm<DPT>(dvr, p, &Gs[r][d0]);
      axpy_sm<DPT>(dkr, ds, &Qs[r][d0]);
    }
  }
  if (valid) {
    T* gk = dk + at_(vg, pos, h, j);
    T* gv = dv + at_(vg, pos, h, j);
#pragma unroll
    for (int e = 0; e < DPT; ++e) {
      if (d0 + e < Dr) {
        gk[d0 + e] = static_cast<T>(dkr[e] * scale);
        gv[d0 + e] = static_cast<T>(dvr[e]);
      }
    }
  }
}

// dQ for 64 queries per CTA; LANES threads per query.
template <typename T, int D>
__global__ void __launch_bounds__(kTile*(D > 32 ? 2 : 1))
    attn_bwd_dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                       const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                       T* __restrict__ dq, View vq, View vk, View vv, View vdo, View vl, View vg, Seq seq, int Dr,
                       float c, float scale) {
  constexpr int LANES = D > 32 ? 2 : 1;
  constexpr int DPT = D / LANES;
  const int b = blockIdx.x, h = blockIdx.y, i0 = blockIdx.z * kTile;
  int64_t pos;
  int L;
  seq.get(b, pos, L);
  if (i0 >= L) return;
  __shared__ __align__(16) float Ks[kTile][D];
  __shared__ __align__(16) float Vs[kTile][D];
  const int part = threadIdx.x % LANES;
  const int i = i0 + threadIdx.x / LANES;
  const bool valid = i < L;
  const int d0 = part * DPT;
  float qr[DPT], gr[DPT], dqr[DPT];
#pragma unroll
  for (int e = 0; e < DPT; ++e) {
    const bool ok = valid && d0 + e < Dr;
    qr[e] = ok ? ldf(q + at_(vq, pos, h, i) + d0 + e) : 0.f;
    gr[e] = ok ? ldf(dout + at_(vdo, pos, h, i) + d0 + e) : 0.f;
    dqr[e] = 0.f;
  }
  const float l2 = valid ? lse[at_(vl, pos, h, i)] * kLog2e : 0.f;
  const float dli = valid ? delta[at_(vl, pos, h, i)] : 0.f;
  for (int k0 = 0; k0 < L; k0 += kTile) {
    const int nk = min(kTile, L - k0);
    __syncthreads();
    load_tile<T, D>(Ks, k, vk, pos, h, k0, nk, Dr);
    load_tile<T, D>(Vs, v, vv, pos, h, k0, nk, Dr);
    __syncthreads();
    for (int jj = 0; jj < nk; ++jj) {
      const float s = lane_sum<LANES>(dot_sm<DPT>(qr, &Ks[jj][d0]));
      const float dp = lane_sum<LANES>(dot_sm<DPT>(gr, &Vs[jj][d0]));
      const float p = exp2f(s * c - l2);
      axpy_sm<DPT>(dqr, p * (dp - dli), &Ks[jj][d0]);
    }
  }
  if (valid) {
    T* g = dq + at_(vg, pos, h, i);
#pragma unroll
    for (int e = 0; e < DPT; ++e)
      if (d0 + e < Dr) g[d0 + e] = static_cast<T>(dqr[e] * scale);
  }
}

// ------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------
at::Tensor unit_last(const at::Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); }

// (jet, head, token) strides of a padded (B, H, N, D) or packed (total, H, D) tensor.
View view_of(const at::Tensor& x, bool packed) {
  if (packed) return {x.stride(0), x.stride(1), x.stride(0)};
  return {x.stride(0), x.stride(1), x.stride(2)};
}

// lse / delta buffers: padded (B, H, N); packed (H, total).
View row_view(bool packed, int64_t H, int64_t N_or_total) {
  if (packed) return {1, N_or_total, 1};
  return {H * N_or_total, N_or_total, 1};
}

void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& seq, int64_t dim) {
  attn::check_qkv(op, q, k, v, seq, dim);
  TORCH_CHECK_VALUE(q.is_cuda() && k.device() == q.device() && v.device() == q.device() && seq.device() == q.device(),
                    op, ": q, k, v and lengths / cu_seqlens must be on the same CUDA device");
  TORCH_CHECK_VALUE(q.scalar_type() == at::kFloat || q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16,
                    op, ": CUDA kernel supports float32, float16 and bfloat16, got ", q.scalar_type());
  TORCH_CHECK_VALUE(q.size(-1) <= 64, op, ": CUDA kernel supports head dim <= 64, got ", q.size(-1));
}

// float32, float16, bfloat16 only (float64 inputs take the reference path in Python).
#define E2E_ATTN_CASES(...)                             \
  AT_DISPATCH_CASE(at::ScalarType::Float, __VA_ARGS__)  \
  AT_DISPATCH_CASE(at::ScalarType::Half, __VA_ARGS__)   \
  AT_DISPATCH_CASE(at::ScalarType::BFloat16, __VA_ARGS__)

template <typename F>
void dispatch_d(int64_t Dr, const F& f) {
  if (Dr <= 16)
    f(std::integral_constant<int, 16>{});
  else if (Dr <= 32)
    f(std::integral_constant<int, 32>{});
  else
    f(std::integral_constant<int, 64>{});
}

std::tuple<at::Tensor, at::Tensor> attention_fwd_cuda(const at::Tensor& q_, const at::Tensor& k_,
                                                      const at::Tensor& v_, const at::Tensor& seq_, bool packed,
                                                      int64_t max_len, double scale) {
  const char* op = packed ? "packed_attention_fwd" : "masked_attention_fwd";
  check_inputs(op, q_, k_, v_, seq_, packed ? 3 : 4);
  c10::cuda::CUDAGuard guard(q_.device());
  const at::Tensor q = unit_last(q_), k = unit_last(k_), v = unit_last(v_);
  const at::Tensor seq = seq_.to(at::kInt).contiguous();
  const int64_t H = packed ? q.size(1) : q.size(1);
  const int64_t Dr = q.size(-1);
  const int64_t B = packed ? seq.size(0) - 1 : q.size(0);
  const int64_t rows = packed ? q.size(0) : q.size(2);  // total (packed) or N (padded)
  if (!packed) {
    TORCH_CHECK(seq.size(0) == B, op, ": lengths must be (B,)");
    max_len = rows;
  }
  at::Tensor out = at::zeros(q.sizes(), q.options());
  at::Tensor lse = packed ? at::full({H, rows}, -INFINITY, q.options().dtype(at::kFloat))
                          : at::full({B, H, rows}, -INFINITY, q.options().dtype(at::kFloat));
  if (B <= 0 || H == 0 || max_len <= 0 || q.numel() == 0) return {out, lse};
  attn::check_grid(op, B, H, max_len, kTile);
  const Seq s{seq.data_ptr<int>(), packed ? 1 : 0, (int)(packed ? 0 : rows)};
  const dim3 grid((unsigned)B, (unsigned)H, (unsigned)((max_len + kTile - 1) / kTile));
  const float c = (float)scale * kLog2e;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_SWITCH(q.scalar_type(), "attention_fwd_cuda", E2E_ATTN_CASES([&] {
    dispatch_d(Dr, [&](auto dc) {
      constexpr int D = decltype(dc)::value;
      attn_fwd_kernel<scalar_t, D><<<grid, kTile, 0, stream>>>(
          q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
          lse.data_ptr<float>(), view_of(q, packed), view_of(k, packed), view_of(v, packed), view_of(out, packed),
          row_view(packed, H, rows), s, (int)Dr, c);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_bwd_cuda(const at::Tensor& grad_out,
                                                                  const at::Tensor& q_, const at::Tensor& k_,
                                                                  const at::Tensor& v_, const at::Tensor& out_,
                                                                  const at::Tensor& lse_, const at::Tensor& seq_,
                                                                  bool packed, int64_t max_len, double scale) {
  const char* op = packed ? "packed_attention_bwd" : "masked_attention_bwd";
  check_inputs(op, q_, k_, v_, seq_, packed ? 3 : 4);
  attn::check_bwd(op, grad_out, q_, out_, lse_, packed);
  c10::cuda::CUDAGuard guard(q_.device());
  const at::Tensor q = unit_last(q_), k = unit_last(k_), v = unit_last(v_);
  const at::Tensor go = unit_last(grad_out.to(q.scalar_type())), out = unit_last(out_.to(q.scalar_type()));
  const at::Tensor seq = seq_.to(at::kInt).contiguous();
  const at::Tensor lse = lse_.to(at::kFloat).contiguous();
  const int64_t H = q.size(1);
  const int64_t Dr = q.size(-1);
  const int64_t B = packed ? seq.size(0) - 1 : q.size(0);
  const int64_t rows = packed ? q.size(0) : q.size(2);
  if (!packed) max_len = rows;
  at::Tensor dq = at::zeros(q.sizes(), q.options());
  at::Tensor dk = at::zeros(q.sizes(), q.options());
  at::Tensor dv = at::zeros(q.sizes(), q.options());
  if (B <= 0 || H == 0 || max_len <= 0 || q.numel() == 0) return {dq, dk, dv};
  attn::check_grid(op, B, H, max_len, kTile);
  at::Tensor delta = at::zeros(lse.sizes(), lse.options());
  const Seq s{seq.data_ptr<int>(), packed ? 1 : 0, (int)(packed ? 0 : rows)};
  const dim3 grid((unsigned)B, (unsigned)H, (unsigned)((max_len + kTile - 1) / kTile));
  const float c = (float)scale * kLog2e;
  const View vl = row_view(packed, H, rows);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_SWITCH(q.scalar_type(), "attention_bwd_cuda", E2E_ATTN_CASES([&] {
    dispatch_d(Dr, [&](auto dc) {
      constexpr int D = decltype(dc)::value;
      constexpr int threads = kTile * (D > 32 ? 2 : 1);
      const View vq = view_of(q, packed), vk = view_of(k, packed), vv = view_of(v, packed);
      const View vdo = view_of(go, packed), vo = view_of(out, packed), vg = view_of(dq, packed);
      attn_bwd_delta_kernel<scalar_t, D><<<grid, kTile, 0, stream>>>(
          out.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(), delta.data_ptr<float>(), vo, vdo, vl, s, (int)Dr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      attn_bwd_dkdv_kernel<scalar_t, D><<<grid, threads, 0, stream>>>(
          q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(),
          lse.data_ptr<float>(), delta.data_ptr<float>(), dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(), vq, vk,
          vv, vdo, vl, vg, s, (int)Dr, c, (float)scale);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      attn_bwd_dq_kernel<scalar_t, D><<<grid, threads, 0, stream>>>(
          q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(),
          lse.data_ptr<float>(), delta.data_ptr<float>(), dq.data_ptr<scalar_t>(), vq, vk, vv, vdo, vl, vg, s,
          (int)Dr, c, (float)scale);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }));
  return {dq, dk, dv};
}

std::tuple<at::Tensor, at::Tensor> masked_attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const at::Tensor& lengths,
                                                             double scale) {
  return attention_fwd_cuda(q, k, v, lengths, false, 0, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_attention_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& lengths, double scale) {
  return attention_bwd_cuda(grad_out, q, k, v, out, lse, lengths, false, 0, scale);
}

std::tuple<at::Tensor, at::Tensor> packed_attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const at::Tensor& cu_seqlens,
                                                             int64_t max_seqlen, double scale) {
  return attention_fwd_cuda(q, k, v, cu_seqlens, true, max_seqlen, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> packed_attention_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& cu_seqlens, int64_t max_seqlen, double scale) {
  return attention_bwd_cuda(grad_out, q, k, v, out, lse, cu_seqlens, true, max_seqlen, scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(e2econd, CUDA, m) {
  m.impl("masked_attention_fwd", &masked_attention_fwd_cuda);
  m.impl("masked_attention_bwd", &masked_attention_bwd_cuda);
  m.impl("packed_attention_fwd", &packed_attention_fwd_cuda);
  m.impl("packed_attention_bwd", &packed_attention_bwd_cuda);
}

}  // namespace e2econd
