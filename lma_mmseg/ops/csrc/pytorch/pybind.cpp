// Python bindings of lma_mmseg._ext: one entry per op.
#include <torch/extension.h>

namespace lma {

// True when this build carries the CUDA kernels (built with WITH_CUDA).
bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace lma

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("with_cuda", &lma::with_cuda,
        "whether this build of lma_mmseg._ext has CUDA kernels");
}
