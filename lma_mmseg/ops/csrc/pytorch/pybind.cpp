// Python module lma_mmseg._ext. Importing it loads the library, which
// registers the ops torch.ops.lma.* (pytorch/local_attention.cpp); the
// module itself only carries what is not an op: whether the build has CUDA
// kernels and the choice of the CPU kernel variant.
#include <torch/extension.h>

#include <string>

#include "common/local_attention.h"

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
  namespace py = pybind11;
  m.def("with_cuda", &lma::with_cuda,
        "whether this build of lma_mmseg._ext has CUDA kernels");
  m.def("set_cpu_isa", &lma::set_cpu_isa,
        "choose the CPU kernel variant: 'auto', 'avx2' or 'baseline'",
        py::arg("isa"));
  m.def("cpu_isa", &lma::cpu_isa,
        "the active CPU kernel variant: 'avx2' or 'baseline'");
}
