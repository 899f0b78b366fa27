"""ChatGLM-6B int4 CPU quantization kernels for numpy arrays, built by builder."""

from chatglm_cpu_kernels._kernels import (
    compress_int4_weight,
    extract_int4_weight_to_float,
    extract_int8_weight_to_float,
)

__all__ = ["compress_int4_weight", "extract_int4_weight_to_float", "extract_int8_weight_to_float"]
