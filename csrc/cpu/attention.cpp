// CPU kernels of e2econd::masked_attention_{fwd,bwd} and e2econd::packed_attention_{fwd,bwd}.
//
// Flash-attention style: per (jet, head, 48-query tile) the keys are streamed in 128-key tiles
// with an online softmax (running max and sum, in the log2 domain), so no N x N matrix is ever
// stored and no work is spent beyond each jet's length. K^T and V of every (jet, head) are packed
// once per call into contiguous, zero-padded key tiles that all query tiles share. The backward pass
// recomputes P from the saved log-sum-exp: dV = P^T dO, dP = dO V^T, dS = P o (dP - rowsum(dO o O)),
// dQ = dS K scale, dK = dS^T Q scale, one task per (jet, head) so writes never collide. Tasks are
// pulled dynamically (longest jets first) by one worker per at::parallel_for thread.
// float32 (the production dtype) and float64 (for gradcheck); accumulation in the input dtype.
// The arithmetic lives in attention_impl.h, compiled twice: AVX2+FMA and baseline x86-64, chosen at
// run time (E2ECOND_CPU_ISA=generic forces the baseline copy). Timings: docs/BENCHMARKS.md.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "attention_checks.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define E2E_ATTN_X86 1
#else
#define E2E_ATTN_X86 0
#endif

namespace e2econd {
namespace {

// Strided view of a (jet, head, token, dim) tensor with unit stride along dim. `pos` is the
// jet's index (padded layout) or its first token (packed layout); sj is the matching stride.
template <typename T>
struct TView {
  T* p;
  int64_t sj, sh, st;
  T* ptr(int64_t pos, int64_t h, int64_t i) const { return p + pos * sj + h * sh + i * st; }
};

struct Job {
  int64_t pos;  // jet index (padded) or start token (packed)
  int64_t len;  // number of hits
};

template <typename T>
struct FwdArgs {
  TView<T> q, k, v, out, lse;
  int64_t H;
  int D;
  double scale;
};

template <typename T>
struct BwdArgs {
  TView<T> q, k, v, out, dout, lse, dq, dk, dv;
  int64_t H;
  int D;
  double scale;
};

}  // namespace

// 32-byte vector arguments of the (always inlined) helpers trigger an ABI note for the baseline copy.
#pragma GCC diagnostic ignored "-Wpsabi"

#if E2E_ATTN_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define E2E_ATTN_NS attn_avx2
#define E2E_ATTN_FMA 1
#include "cpu/attention_impl.h"
#undef E2E_ATTN_NS
#undef E2E_ATTN_FMA
#pragma GCC pop_options
#endif

#define E2E_ATTN_NS attn_generic
#define E2E_ATTN_FMA 0
#include "cpu/attention_impl.h"
#undef E2E_ATTN_NS
#undef E2E_ATTN_FMA

namespace {

// The instruction set the attention kernels run with: "avx2" (AVX2 + FMA, probed at run time) or
// "generic" (baseline x86-64 / other CPUs). E2ECOND_CPU_ISA=generic forces the baseline copy, so
// tests can check it on any machine. Read once.
const char* attention_isa() {
  static const char* isa = [] {
    const char* env = std::getenv("E2ECOND_CPU_ISA");
    if (env != nullptr && std::strcmp(env, "generic") == 0) return "generic";
#if E2E_ATTN_X86
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
    return "generic";
  }();
  return isa;
}

bool cpu_has_avx2_fma() { return std::strcmp(attention_isa(), "avx2") == 0; }

// View of a padded (B, H, N, D) tensor.
template <typename T>
TView<T> padded_view(const at::Tensor& x) {
  return {x.data_ptr<T>(), x.stride(0), x.stride(1), x.stride(2)};
}
// View of a packed (total, H, D) tensor: pos = first token, so sj = st = stride(0).
template <typename T>
TView<T> packed_view(const at::Tensor& x) {
  return {x.data_ptr<T>(), x.stride(0), x.stride(1), x.stride(0)};
}

at::Tensor unit_last(const at::Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); }

void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
               const at::Tensor& seq, int64_t dim) {
  attn::check_qkv(op, q, k, v, seq, dim);
  TORCH_CHECK_VALUE(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble, op,
                    ": CPU kernel supports float32 and float64, got ", q.scalar_type());
  TORCH_CHECK_VALUE(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), op,
                    ": tensors must be on CPU");
}

// Jobs of the padded layout, longest first (lengths clamped to [0, N]).
std::vector<Job> padded_jobs(const at::Tensor& lengths, int64_t B, int64_t N, int64_t* max_len) {
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == B, "masked_attention: lengths must be (B,) = (", B,
              ",), got ", lengths.sizes());
  TORCH_CHECK(!at::isFloatingType(lengths.scalar_type()), "masked_attention: lengths must be integer");
  const at::Tensor l = lengths.to(at::kLong).contiguous();
  const int64_t* lp = l.data_ptr<int64_t>();
  std::vector<Job> jobs;
  *max_len = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = std::min<int64_t>(std::max<int64_t>(lp[b], 0), N);
    if (len > 0) jobs.push_back({b, len});
    *max_len = std::max(*max_len, len);
  }
  std::stable_sort(jobs.begin(), jobs.end(), [](const Job& a, const Job& b) { return a.len > b.len; });
  return jobs;
}

std::vector<Job> packed_jobs(const char* op, const at::Tensor& cu_seqlens, int64_t total, int64_t max_seqlen,
                             int64_t* max_len) {
  const at::Tensor cu = cu_seqlens.to(at::kLong).contiguous();
  const int64_t* cp = cu.data_ptr<int64_t>();
  const int64_t B = cu.size(0) - 1;
  *max_len = attn::check_cu_seqlens(op, cp, B, total, max_seqlen);
  std::vector<Job> jobs;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = cp[b + 1] - cp[b];
    if (len > 0) jobs.push_back({cp[b], len});
  }
  std::stable_sort(jobs.begin(), jobs.end(), [](const Job& a, const Job& b) { return a.len > b.len; });
  return jobs;
}

template <typename T>
void run_fwd(const FwdArgs<T>& a, const std::vector<Job>& jobs, int64_t max_len) {
#if E2E_ATTN_X86
  if (cpu_has_avx2_fma()) return attn_avx2::attention_forward<T>(a, jobs, max_len);
#endif
  attn_generic::attention_forward<T>(a, jobs, max_len);
}

template <typename T>
void run_bwd(const BwdArgs<T>& a, const std::vector<Job>& jobs, int64_t max_len) {
#if E2E_ATTN_X86
  if (cpu_has_avx2_fma()) return attn_avx2::attention_backward<T>(a, jobs, max_len);
#endif
  attn_generic::attention_backward<T>(a, jobs, max_len);
}

std::tuple<at::Tensor, at::Tensor> masked_attention_fwd_cpu(const at::Tensor& q_, const at::Tensor& k_,
                                                            const at::Tensor& v_, const at::Tensor& lengths,
                                                            double scale) {
  check_qkv("masked_attention_fwd", q_, k_, v_, lengths, 4);
  const at::Tensor q = unit_last(q_), k = unit_last(k_), v = unit_last(v_);
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3);
  int64_t max_len = 0;
  const std::vector<Job> jobs = padded_jobs(lengths, B, N, &max_len);
  at::Tensor out = at::zeros({B, H, N, D}, q.options());
  at::Tensor lse = at::full({B, H, N}, -std::numeric_limits<double>::infinity(), q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "masked_attention_fwd_cpu", [&] {
    FwdArgs<scalar_t> a{padded_view<scalar_t>(q),   padded_view<scalar_t>(k), padded_view<scalar_t>(v),
                        padded_view<scalar_t>(out), {lse.data_ptr<scalar_t>(), H * N, N, 1},
                        H,                          (int)D,                     scale};
    run_fwd<scalar_t>(a, jobs, max_len);
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_attention_bwd_cpu(
    const at::Tensor& grad_out, const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
    const at::Tensor& out_, const at::Tensor& lse_, const at::Tensor& lengths, double scale) {
  check_qkv("masked_attention_bwd", q_, k_, v_, lengths, 4);
  attn::check_bwd("masked_attention_bwd", grad_out, q_, out_, lse_, false);
  const at::Tensor q = unit_last(q_), k = unit_last(k_), v = unit_last(v_);
  const at::Tensor go = unit_last(grad_out.to(q.scalar_type())), out = unit_last(out_.to(q.scalar_type()));
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3);
  const at::Tensor lse = lse_.to(q.scalar_type()).contiguous();
  int64_t max_len = 0;
  const std::vector<Job> jobs = padded_jobs(lengths, B, N, &max_len);
  at::Tensor dq = at::zeros({B, H, N, D}, q.options());
  at::Tensor dk = at::zeros({B, H, N, D}, q.options());
  at::Tensor dv = at::zeros({B, H, N, D}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "masked_attention_bwd_cpu", [&] {
    BwdArgs<scalar_t> a{padded_view<scalar_t>(q),   padded_view<scalar_t>(k),  padded_view<scalar_t>(v),
                        padded_view<scalar_t>(out), padded_view<scalar_t>(go), {lse.data_ptr<scalar_t>(), H * N, N, 1},
                        padded_view<scalar_t>(dq),  padded_view<scalar_t>(dk), padded_view<scalar_t>(dv),
                        H,                          (int)D,                    scale};
    run_bwd<scalar_t>(a, jobs, max_len);
  });
  return {dq, dk, dv};
}

std::tuple<at::Tensor, at::Tensor> packed_attention_fwd_cpu(const at::Tensor& q_, const at::Tensor& k_,
                                                            const at::Tensor& v_, const at::Tensor& cu_seqlens,
                                                            int64_t max_seqlen, double scale) {
  check_qkv("packed_attention_fwd", q_, k_, v_, cu_seqlens, 3);
  const at::Tensor q = unit_last(q_), k = unit_last(k_), v = unit_last(v_);
  const int64_t total = q.size(0), H = q.size(1), D = q.size(2);
  int64_t max_len = 0;
  const std::vector<Job> jobs = packed_jobs("packed_attention_fwd", cu_seqlens, total, max_seqlen, &max_len);
  at::Tensor out = at::zeros({total, H, D}, q.options());
  at::Tensor lse = at::full({H, total}, -std::numeric_limits<double>::infinity(), q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "packed_attention_fwd_cpu", [&] {
    FwdArgs<scalar_t> a{packed_view<scalar_t>(q),   packed_view<scalar_t>(k), packed_view<scalar_t>(v),
                        packed_view<scalar_t>(out), {lse.data_ptr<scalar_t>(), 1, total, 1},
                        H,                          (int)D,                     scale};
    run_fwd<scalar_t>(a, jobs, max_len);
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> packed_attention_bwd_cpu(
    const at::Tensor& grad_out, const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
    const at::Tensor& out_, const at::Tensor& lse_, const at::Tensor& cu_seqlens, int64_t max_seqlen,
    double scale) {
  check_qkv("packed_attention_bwd", q_, k_, v_, cu_seqlens, 3);
  attn::check_bwd("packed_attention_bwd", grad_out, q_, out_, lse_, true);
  const at::Tensor q = unit_last(q_), k = unit_last(k_), v = unit_last(v_);
  const at::Tensor go = unit_last(grad_out.to(q.scalar_type())), out = unit_last(out_.to(q.scalar_type()));
  const int64_t total = q.size(0), H = q.size(1), D = q.size(2);
  const at::Tensor lse = lse_.to(q.scalar_type()).contiguous();
  int64_t max_len = 0;
  const std::vector<Job> jobs = packed_jobs("packed_attention_bwd", cu_seqlens, total, max_seqlen, &max_len);
  at::Tensor dq = at::zeros({total, H, D}, q.options());
  at::Tensor dk = at::zeros({total, H, D}, q.options());
  at::Tensor dv = at::zeros({total, H, D}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "packed_attention_bwd_cpu", [&] {
    BwdArgs<scalar_t> a{packed_view<scalar_t>(q),   packed_view<scalar_t>(k),  packed_view<scalar_t>(v),
                        packed_view<scalar_t>(out), packed_view<scalar_t>(go), {lse.data_ptr<scalar_t>(), 1, total, 1},
                        packed_view<scalar_t>(dq),  packed_view<scalar_t>(dk), packed_view<scalar_t>(dv),
                        H,                          (int)D,                    scale};
    run_bwd<scalar_t>(a, jobs, max_len);
  });
  return {dq, dk, dv};
}

}  // namespace

std::string attention_cpu_isa() { return attention_isa(); }

TORCH_LIBRARY_IMPL(e2econd, CPU, m) {
  m.impl("masked_attention_fwd", &masked_attention_fwd_cpu);
  m.impl("masked_attention_bwd", &masked_attention_bwd_cpu);
  m.impl("packed_attention_fwd", &packed_attention_fwd_cpu);
  m.impl("packed_attention_bwd", &packed_attention_bwd_cpu);
}

}  // namespace e2econd
