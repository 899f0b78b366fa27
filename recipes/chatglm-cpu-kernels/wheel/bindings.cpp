// numpy front for ChatGLM's int4 kernels: the C functions take raw pointers and sizes; these
// check dtypes and shapes, allocate the outputs and call them.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

namespace py = pybind11;

extern "C" {
void compress_int4_weight(void *weight, void *out, int n, int m);
void extract_int8_weight_to_float(void *weight, void *scale_list, void *out, int n, int m);
void extract_int4_weight_to_float(void *weight, void *scale_list, void *out, int n, int m);
}

constexpr int Flags = py::array::c_style | py::array::forcecast;

static void check_2d(const py::buffer_info &info, const char *what) {
    if (info.ndim != 2) throw std::invalid_argument(std::string(what) + " must be 2-D");
}

static py::array_t<uint8_t> compress(py::array_t<int8_t, Flags> weight) {
    auto info = weight.request();
    check_2d(info, "weight");
    if (info.shape[1] % 2) throw std::invalid_argument("weight must have an even number of columns");
    int n = static_cast<int>(info.shape[0]), m = static_cast<int>(info.shape[1] / 2);
    py::array_t<uint8_t> out({n, m});
    std::fill_n(out.mutable_data(), static_cast<size_t>(n) * m, 0);
    compress_int4_weight(info.ptr, out.mutable_data(), n, m);
    return out;
}

static py::array_t<float> extract(py::array_t<int8_t, Flags> weight, py::array_t<float, Flags> scale, int per_byte) {
    auto info = weight.request();
    check_2d(info, "weight");
    int n = static_cast<int>(info.shape[0]), m = static_cast<int>(info.shape[1]);
    if (scale.ndim() != 1 || scale.shape(0) != n) throw std::invalid_argument("scale must have one value per row");
    py::array_t<float> out({n, m * per_byte});
    if (per_byte == 2) extract_int4_weight_to_float(info.ptr, scale.mutable_data(), out.mutable_data(), n, m);
    else extract_int8_weight_to_float(info.ptr, scale.mutable_data(), out.mutable_data(), n, m);
    return out;
}

PYBIND11_MODULE(_kernels, module) {
    module.doc() = "ChatGLM-6B int4 CPU kernels";
    module.def("compress_int4_weight", &compress, py::arg("weight"),
               "int8 values in -8..7, shape (n, 2m) -> packed uint8 (n, m)");
    module.def("extract_int8_weight_to_float",
               [](py::array_t<int8_t, Flags> w, py::array_t<float, Flags> s) { return extract(w, s, 1); },
               py::arg("weight"), py::arg("scale"), "int8 (n, m) x scale (n,) -> float32 (n, m)");
    module.def("extract_int4_weight_to_float",
               [](py::array_t<int8_t, Flags> w, py::array_t<float, Flags> s) { return extract(w, s, 2); },
               py::arg("weight"), py::arg("scale"), "packed int4 (n, m) x scale (n,) -> float32 (n, 2m)");
}
