// Contract checks of the attention ops, shared by csrc/cpu/attention.cpp and csrc/cuda/attention.cu.
//
// Every check raises a one-line c10::Error (ValueError in Python) naming the op. Checks that need
// the *values* of cu_seqlens run on the host: the CPU kernel calls check_cu_seqlens on its data;
// the CUDA kernel cannot read them without a device sync, so e2econd/ops/attention.py checks them
// in eager mode (check_packed_values) before launching.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

namespace e2econd {
namespace attn {

// q, k, v: `dim` dims, identical shapes and dtypes; lengths / cu_seqlens 1-D integer.
inline void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& seq, int64_t dim) {
  TORCH_CHECK_VALUE(q.dim() == dim, op, ": q must have ", dim, " dims, got ", q.sizes());
  TORCH_CHECK_VALUE(k.sizes() == q.sizes() && v.sizes() == q.sizes(), op, ": q, k, v shapes differ: ", q.sizes(),
                    " ", k.sizes(), " ", v.sizes());
  TORCH_CHECK_VALUE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
                    ": q, k, v dtypes differ");
  TORCH_CHECK_VALUE(seq.dim() == 1, op, ": lengths / cu_seqlens must be 1-D, got ", seq.sizes());
  TORCH_CHECK_VALUE(!at::isFloatingType(seq.scalar_type()) && seq.scalar_type() != at::kBool, op,
                    ": lengths / cu_seqlens must be an integer tensor, got ", seq.scalar_type());
  if (dim == 3) TORCH_CHECK_VALUE(seq.size(0) >= 1, op, ": cu_seqlens must be (B+1,), got ", seq.sizes());
}

// Backward: grad_out and out have q's shape; lse is (B, H, N) padded or (H, total) packed.
inline void check_bwd(const char* op, const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& out,
                      const at::Tensor& lse, bool packed) {
  TORCH_CHECK_VALUE(grad_out.sizes() == q.sizes() && out.sizes() == q.sizes(), op,
                    ": grad_out / out shape mismatch: ", grad_out.sizes(), " ", out.sizes(), " vs q ", q.sizes());
  if (packed) {
    TORCH_CHECK_VALUE(lse.dim() == 2 && lse.size(0) == q.size(1) && lse.size(1) == q.size(0), op,
                      ": lse must be (H, total) = (", q.size(1), ", ", q.size(0), "), got ", lse.sizes());
  } else {
    TORCH_CHECK_VALUE(lse.dim() == 3 && lse.size(0) == q.size(0) && lse.size(1) == q.size(1) &&
                          lse.size(2) == q.size(2),
                      op, ": lse must be (B, H, N), got ", lse.sizes());
  }
}

// Host values of cu_seqlens (B+1 entries): start at 0, non-decreasing, end at <= total; the longest
// jet is returned, and must be <= max_seqlen when max_seqlen >= 0.
inline int64_t check_cu_seqlens(const char* op, const int64_t* cp, int64_t B, int64_t total, int64_t max_seqlen) {
  TORCH_CHECK_VALUE(cp[0] == 0 && cp[B] <= total, op, ": cu_seqlens must start at 0 and end at <= total (", total,
                    "), got ", cp[0], " .. ", cp[B]);
  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(cp[b + 1] >= cp[b], op, ": cu_seqlens must be non-decreasing (jet ", b, ": ", cp[b], " -> ",
                      cp[b + 1], ")");
    longest = std::max(longest, cp[b + 1] - cp[b]);
  }
  TORCH_CHECK_VALUE(max_seqlen < 0 || longest <= max_seqlen, op, ": max_seqlen = ", max_seqlen,
                    " is below the longest jet (", longest, " hits)");
  return longest;
}

// CUDA launch grid (B, H, ceil(max_len / tile)): the same limits for the forward and the backward.
inline void check_grid(const char* op, int64_t B, int64_t H, int64_t max_len, int64_t tile) {
  TORCH_CHECK_VALUE(B <= INT32_MAX && H <= 65535 && (max_len + tile - 1) / tile <= 65535, op,
                    ": problem too large for the launch grid (B = ", B, ", H = ", H, ", max_len = ", max_len, ")");
  TORCH_CHECK_VALUE(max_len <= INT32_MAX, op, ": max_seqlen ", max_len, " exceeds int32");
}

}  // namespace attn
}  // namespace e2econd
