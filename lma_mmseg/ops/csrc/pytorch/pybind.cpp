// Python bindings of lma_mmseg._ext: one entry per op.
#include <torch/extension.h>

#include <vector>

namespace lma {

// True when this build carries the CUDA kernels (built with WITH_CUDA).
bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

// Dispatchers (pytorch/local_attention.cpp).
std::vector<at::Tensor> local_attention_forward(const at::Tensor& q,
                                                const at::Tensor& k,
                                                const at::Tensor& v,
                                                int64_t window,
                                                int64_t dilation, double scale,
                                                bool mask_padding);
std::vector<at::Tensor> local_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    int64_t window, int64_t dilation, double scale, bool mask_padding);
at::Tensor local_correlation_forward(const at::Tensor& q, const at::Tensor& k,
                                     int64_t window, int64_t dilation);
std::vector<at::Tensor> local_correlation_backward(const at::Tensor& grad_corr,
                                                   const at::Tensor& q,
                                                   const at::Tensor& k,
                                                   int64_t window,
                                                   int64_t dilation);
at::Tensor local_aggregation_forward(const at::Tensor& attn,
                                     const at::Tensor& v, int64_t window,
                                     int64_t dilation);
std::vector<at::Tensor> local_aggregation_backward(const at::Tensor& grad_out,
                                                   const at::Tensor& attn,
                                                   const at::Tensor& v,
                                                   int64_t window,
                                                   int64_t dilation);

}  // namespace lma

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.def("with_cuda", &lma::with_cuda,
        "whether this build of lma_mmseg._ext has CUDA kernels");
  m.def("local_attention_forward", &lma::local_attention_forward,
        "fused local attention forward -> [out, lse]", py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("window"), py::arg("dilation"),
        py::arg("scale"), py::arg("mask_padding"));
  m.def("local_attention_backward", &lma::local_attention_backward,
        "fused local attention backward -> [grad_q, grad_k, grad_v]",
        py::arg("grad_out"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("out"), py::arg("lse"), py::arg("window"),
        py::arg("dilation"), py::arg("scale"), py::arg("mask_padding"));
  m.def("local_correlation_forward", &lma::local_correlation_forward,
        "local correlation forward -> corr (B, T, S, H, W)", py::arg("q"),
        py::arg("k"), py::arg("window"), py::arg("dilation"));
  m.def("local_correlation_backward", &lma::local_correlation_backward,
        "local correlation backward -> [grad_q, grad_k]",
        py::arg("grad_corr"), py::arg("q"), py::arg("k"), py::arg("window"),
        py::arg("dilation"));
  m.def("local_aggregation_forward", &lma::local_aggregation_forward,
        "local aggregation forward -> out (B, Cv, H, W)", py::arg("attn"),
        py::arg("v"), py::arg("window"), py::arg("dilation"));
  m.def("local_aggregation_backward", &lma::local_aggregation_backward,
        "local aggregation backward -> [grad_attn, grad_v]",
        py::arg("grad_out"), py::arg("attn"), py::arg("v"), py::arg("window"),
        py::arg("dilation"));
}
