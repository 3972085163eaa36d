// e2econd::build_info through the dispatcher: the registrations of the op library ran.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <string>

#include "check.h"

int main() {
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow("e2econd::build_info", "").typed<std::string()>();
  const std::string info = op.call();
  std::printf("build_info = %s\n", info.c_str());
  CHECK(info.rfind("cpu", 0) == 0);
#ifdef E2ECOND_WITH_CUDA
  CHECK(info.find(";cuda=") != std::string::npos);
#endif
  for (const char* name : {"e2econd::diffusion_step", "e2econd::diffusion_step_"}) {
    const auto handle = c10::Dispatcher::singleton().findOp(c10::OperatorName(name, ""));
    CHECK(handle.has_value());
    if (handle) CHECK(handle->hasKernelForDispatchKey(c10::DispatchKey::CPU));
  }
  return finish("test_build_info");
}
