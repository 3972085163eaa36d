// e2econd::diffusion_step / diffusion_step_ called through the dispatcher against a scalar loop.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "check.h"
#include "philox.h"

using OptT = std::optional<at::Tensor>;

// Scalar oracle: the documented formula, one element at a time.
static at::Tensor oracle(const at::Tensor& x, const at::Tensor& v, const at::Tensor& coef, const OptT& mask,
                         const OptT& xp, const OptT& noise, double clip, int64_t seed, int64_t offset,
                         at::Tensor* x0_out) {
  const int64_t n = x.numel(), F = x.size(-1), B = x.size(0), pps = n / F / B;
  at::Tensor out = at::empty_like(x);
  *x0_out = at::empty_like(x);
  const float *px = x.data_ptr<float>(), *pv = v.data_ptr<float>(), *pc = coef.data_ptr<float>();
  float *po = out.data_ptr<float>(), *p0 = x0_out->data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t point = i / F, b = point / pps;
    const float* c = pc + (coef.dim() == 2 ? 6 * b : 0);
    if (mask && !mask->data_ptr<bool>()[point]) {
      po[i] = px[i];
      p0[i] = 0.0f;
      continue;
    }
    float x0 = c[0] * px[i] - c[1] * pv[i];
    if (clip > 0) x0 = std::fmin(std::fmax(x0, -float(clip)), float(clip));
    float o = c[2] * px[i] + c[3] * x0;
    if (xp) o = o + c[4] * xp->data_ptr<float>()[i];
    if (noise) {
      o = o + c[5] * noise->data_ptr<float>()[i];
    } else if (seed >= 0) {
      float z[4];
      e2econd::philox::block_normals(uint64_t(i / 4), uint64_t(seed), uint64_t(offset), z);
      o = o + c[5] * z[i % 4];
    }
    po[i] = o;
    p0[i] = x0;
  }
  return out;
}

static double rel(const at::Tensor& a, const at::Tensor& b) {
  const double den = b.norm().item<double>();
  return (a - b).norm().item<double>() / (den > 0 ? den : 1.0);
}

int main() {
  auto& disp = c10::Dispatcher::singleton();
  auto step = disp.findSchemaOrThrow("e2econd::diffusion_step", "")
                  .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                            const OptT&, const OptT&, const OptT&, double, int64_t,
                                                            int64_t, bool)>();
  auto step_ = disp.findSchemaOrThrow("e2econd::diffusion_step_", "")
                   .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptT&, const OptT&,
                               const OptT&, double, int64_t, int64_t)>();
  torch::manual_seed(0);
  const std::vector<std::vector<int64_t>> shapes = {{1, 1, 1}, {2, 5, 3}, {3, 1001, 7}, {4, 333, 3}, {0, 4, 3}};
  for (const auto& shape : shapes) {
    for (int variant = 0; variant < 4; ++variant) {
      const at::Tensor x = torch::randn(shape), v = torch::randn(shape);
      const bool per_sample = variant % 2 == 1;
      const at::Tensor coef = per_sample ? torch::randn({shape[0], 6}) : torch::randn({6});
      const OptT mask = variant >= 1 ? OptT(torch::rand({shape[0], shape[1]}) > 0.3) : std::nullopt;
      const OptT xp = variant >= 2 ? OptT(torch::randn(shape)) : std::nullopt;
      const OptT noise = variant == 3 ? OptT(torch::randn(shape)) : std::nullopt;
      const double clip = variant == 2 ? 0.7 : 0.0;
      const int64_t seed = variant == 2 ? 1234 : -1, offset = 5;
      at::Tensor ref_x0;
      const at::Tensor ref = oracle(x, v, coef, mask, xp, noise, clip, seed, offset, &ref_x0);
      auto [out, x0] = step.call(x, v, coef, mask, xp, noise, clip, seed, offset, true);
      CHECK(out.sizes() == x.sizes() && x0.sizes() == x.sizes());
      CHECK(rel(out, ref) <= 1e-6);
      CHECK(rel(x0, ref_x0) <= 1e-6);
      if (mask) {
        const at::Tensor keep = mask->unsqueeze(-1).expand_as(x);
        CHECK(torch::equal(out.masked_select(~keep), x.masked_select(~keep)));
      }
      at::Tensor xi = x.clone();
      step_.call(xi, v, coef, mask, xp, noise, clip, seed, offset);
      CHECK(torch::equal(xi, out));
      auto [out2, empty] = step.call(x, v, coef, mask, xp, noise, clip, seed, offset, false);
      CHECK(empty.numel() == 0 && torch::equal(out2, out));
    }
  }
  // a wrong coef shape is rejected
  bool threw = false;
  try {
    const at::Tensor x = torch::randn({2, 3, 3});
    step.call(x, x, torch::zeros({3, 6}), std::nullopt, std::nullopt, std::nullopt, 0.0, -1, 0, false);
  } catch (const c10::Error&) {
    threw = true;
  }
  CHECK(threw);
  return finish("test_diffusion_step");
}
