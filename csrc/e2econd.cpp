// The one schema file of the e2econd operator library.
//
// Every op of the extension is declared here, once, with TORCH_LIBRARY. Device kernels are
// registered with TORCH_LIBRARY_IMPL in csrc/cpu/*.cpp and csrc/cuda/*.cu; fake (meta) kernels
// and autograd formulas are registered from Python (e2econd/ops/*.py), where the pure-PyTorch
// reference implementations live too.
//
// E2ECOND_PYTHON_MODULE (set by setup.py) adds PyInit__C so the library imports as e2econd._C;
// the CMake build (CMakeLists.txt) leaves it out and needs no Python.
#ifdef E2ECOND_PYTHON_MODULE
#include <Python.h>
#endif
#include <torch/library.h>

#include <string>

#ifdef E2ECOND_PYTHON_MODULE
extern "C" {
// The extension is loaded as a Python module (import e2econd._C) only to run the static
// registrations below; it defines no Python functions of its own.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
#endif

namespace e2econd {

std::string attention_cpu_isa();  // csrc/cpu/attention.cpp: "avx2" or "generic"

// How this library was built and runs: "cpu;cpu_isa=<isa>" plus ";cuda=<CUDART_VERSION>;arch=<list>"
// for a CUDA build.

std::string build_info() {
  std::string info = "cpu;cpu_isa=" + attention_cpu_isa();
#ifdef E2ECOND_WITH_CUDA
  info += ";cuda=" + std::to_string(E2ECOND_CUDA_VERSION);
#ifdef E2ECOND_CUDA_ARCHS
  info += std::string(";arch=") + E2ECOND_CUDA_ARCHS;
#endif
#endif
  return info;
}

TORCH_LIBRARY(e2econd, m) {
  // Build description; the trivial op that proves the registration machinery end to end.
  m.def("build_info() -> str", &build_info);

  // ---- Kernel 1: fused reverse-diffusion step (csrc/cpu/diffusion_step.cpp, csrc/cuda/diffusion_step.cu)
  // coef (..., 6) = [alpha_t, sigma_t, c_x, c_0, c_p, c_n], shape (6,) or (B, 6).
  // x0 = alpha_t * x - sigma_t * v (clamped to +-clip if clip > 0);
  // out = c_x * x + c_0 * x0 + c_p * x0_prev + c_n * z, z = noise or Philox(seed, offset, index).
  // Points where mask is False are copied unchanged. Returns (out, x0) (x0 empty unless return_x0).
  m.def(
      "diffusion_step(Tensor x, Tensor v, Tensor coef, Tensor? mask, Tensor? x0_prev, Tensor? noise, "
      "float clip, int seed, int offset, bool return_x0) -> (Tensor, Tensor)");
  m.def(
      "diffusion_step_(Tensor(a!) x, Tensor v, Tensor coef, Tensor? mask, Tensor? x0_prev, Tensor? noise, "
      "float clip, int seed, int offset) -> ()");

  // ---- Kernel 2: masked multi-head attention over variable-size hit sets
  // (csrc/cpu/attention.cpp, csrc/cuda/attention.cu). Padded (B, H, N, D) with lengths (B,);
  // packed (total, H, D) with cu_seqlens (B+1,). Returns (out, lse) with lse the per-query natural
  // log-sum-exp of the scaled scores kept for the backward pass: (B, H, N) padded, (H, total) packed;
  // float32 (float64 for float64 inputs, CPU only); -inf for rows beyond a jet's length.
  m.def("masked_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor lengths, float scale) -> (Tensor, Tensor)");
  m.def(
      "masked_attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor lengths, float scale) -> (Tensor, Tensor, Tensor)");
  m.def(
      "packed_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens, int max_seqlen, float scale) "
      "-> (Tensor, Tensor)");
  m.def(
      "packed_attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor cu_seqlens, int max_seqlen, float scale) -> (Tensor, Tensor, Tensor)");
}

}  // namespace e2econd
