// Shared argument checks and geometry of the fused reverse-diffusion step (CPU and CUDA kernels).
// Semantics: e2econd/ops/diffusion_step.py (module docstring) and the schema in csrc/e2econd.cpp.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace e2econd {

struct StepGeometry {
  int64_t n = 0;        // elements
  int64_t feat = 1;     // F = x.size(-1)
  int64_t points = 0;   // prod(x.shape[:-1])
  int64_t pps = 1;      // points per sample (per-sample coef), else = points
  bool per_sample = false;
};

inline StepGeometry check_diffusion_step(const at::Tensor& x, const at::Tensor& v, const at::Tensor& coef,
                                         const c10::optional<at::Tensor>& mask,
                                         const c10::optional<at::Tensor>& x0_prev,
                                         const c10::optional<at::Tensor>& noise, double clip, int64_t offset) {
  TORCH_CHECK(x.dim() >= 1, "diffusion_step: x must have at least 1 dimension (features last)");
  TORCH_CHECK(x.is_contiguous(), "diffusion_step: x must be contiguous");
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.sizes() == x.sizes(), "diffusion_step: ", name, " has shape ", t.sizes(), ", x has ", x.sizes());
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "diffusion_step: ", name, " has dtype ", t.scalar_type(),
                ", x has ", x.scalar_type());
    TORCH_CHECK(t.device() == x.device(), "diffusion_step: ", name, " is on ", t.device(), ", x on ", x.device());
    TORCH_CHECK(t.is_contiguous(), "diffusion_step: ", name, " must be contiguous");
  };
  same(v, "v");
  if (x0_prev.has_value()) same(*x0_prev, "x0_prev");
  if (noise.has_value()) same(*noise, "noise");
  TORCH_CHECK(coef.scalar_type() == at::kFloat && coef.is_contiguous() && coef.device() == x.device(),
              "diffusion_step: coef must be a contiguous float32 tensor on x's device");
  StepGeometry g;
  g.n = x.numel();
  g.feat = x.size(-1);
  g.points = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) g.points *= x.size(d);
  if (coef.dim() == 1) {
    TORCH_CHECK(coef.size(0) == 6, "diffusion_step: coef must have shape (6,) or (B, 6), got ", coef.sizes());
    g.pps = g.points;
  } else {
    TORCH_CHECK(coef.dim() == 2 && coef.size(1) == 6 && x.dim() >= 2 && coef.size(0) == x.size(0),
                "diffusion_step: per-sample coef must have shape (x.size(0), 6) with x.dim() >= 2, got ",
                coef.sizes(), " for x ", x.sizes());
    g.per_sample = true;
    g.pps = x.size(0) > 0 ? g.points / x.size(0) : 1;
  }
  if (g.pps < 1) g.pps = 1;
  if (mask.has_value()) {
    const auto& m = *mask;
    TORCH_CHECK(m.scalar_type() == at::kBool && m.is_contiguous() && m.device() == x.device(),
                "diffusion_step: mask must be a contiguous bool tensor on x's device");
    TORCH_CHECK(m.numel() == g.points && m.sizes() == x.sizes().slice(0, x.dim() - 1),
                "diffusion_step: mask has shape ", m.sizes(), ", expected x.shape[:-1] = ",
                x.sizes().slice(0, x.dim() - 1));
  }
  TORCH_CHECK(clip >= 0, "diffusion_step: clip must be >= 0 (0 = no clamp), got ", clip);
  TORCH_CHECK(offset >= 0, "diffusion_step: offset must be >= 0, got ", offset);
  return g;
}

}  // namespace e2econd
