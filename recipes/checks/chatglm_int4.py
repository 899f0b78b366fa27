"""ChatGLM int4 CPU kernels checked against numpy: each library given as an argument is loaded
with ctypes (or the module named after --module is imported) and its three functions are called
on random arrays, odd sizes included.

    python chatglm_int4.py LIBRARY.so...          (exit 1 with the first difference)
    python chatglm_int4.py --module chatglm_cpu_kernels
"""

from __future__ import annotations

import ctypes
import importlib
import sys

import numpy as np

SHAPES = [(1, 1), (3, 5), (7, 33), (64, 127)]


def check(library: str) -> None:
    lib = ctypes.cdll.LoadLibrary(library)
    pointer, size = ctypes.c_void_p, ctypes.c_int
    lib.compress_int4_weight.argtypes = [pointer, pointer, size, size]
    lib.extract_int4_weight_to_float.argtypes = [pointer, pointer, pointer, size, size]
    lib.extract_int8_weight_to_float.argtypes = [pointer, pointer, pointer, size, size]
    rng = np.random.default_rng(0)
    for n, m in SHAPES:
        nibbles = rng.integers(-8, 8, size=(n, 2 * m), dtype=np.int8)
        packed = np.zeros((n, m), dtype=np.uint8)
        lib.compress_int4_weight(nibbles.ctypes.data, packed.ctypes.data, n, m)
        expected = ((nibbles[:, 0::2].astype(np.uint8) << 4) | (nibbles[:, 1::2].astype(np.uint8) & 0x0F))
        compare(library, "compress_int4_weight", n, m, packed, expected.astype(np.uint8))

        scale = rng.standard_normal(n).astype(np.float32)
        out = np.empty((n, 2 * m), dtype=np.float32)
        lib.extract_int4_weight_to_float(packed.ctypes.data, scale.ctypes.data, out.ctypes.data, n, m)
        compare(library, "extract_int4_weight_to_float", n, m, out, nibbles.astype(np.float32) * scale[:, None])

        weights = rng.integers(-128, 128, size=(n, m), dtype=np.int8)
        out8 = np.empty((n, m), dtype=np.float32)
        lib.extract_int8_weight_to_float(weights.ctypes.data, scale.ctypes.data, out8.ctypes.data, n, m)
        compare(library, "extract_int8_weight_to_float", n, m, out8, weights.astype(np.float32) * scale[:, None])


def check_module(name: str) -> None:
    module = importlib.import_module(name)
    rng = np.random.default_rng(1)
    for n, m in SHAPES:
        nibbles = rng.integers(-8, 8, size=(n, 2 * m), dtype=np.int8)
        packed = module.compress_int4_weight(nibbles)
        expected = (nibbles[:, 0::2].astype(np.uint8) << 4) | (nibbles[:, 1::2].astype(np.uint8) & 0x0F)
        compare(name, "compress_int4_weight", n, m, packed, expected.astype(np.uint8))
        scale = rng.standard_normal(n).astype(np.float32)
        compare(name, "extract_int4_weight_to_float", n, m, module.extract_int4_weight_to_float(packed, scale),
                nibbles.astype(np.float32) * scale[:, None])
        weights = rng.integers(-128, 128, size=(n, m), dtype=np.int8)
        compare(name, "extract_int8_weight_to_float", n, m, module.extract_int8_weight_to_float(weights, scale),
                weights.astype(np.float32) * scale[:, None])


def compare(library: str, function: str, n: int, m: int, got: np.ndarray, want: np.ndarray) -> None:
    if not np.array_equal(got, want):
        where = np.argwhere(got != want)[0]
        raise SystemExit(f"{library}: {function} differs from numpy at {tuple(where)} for n={n}, m={m}: "
                         f"{got[tuple(where)]} != {want[tuple(where)]}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--module"]:
        check_module(sys.argv[2])
        print(f"{sys.argv[2]} agrees with numpy")
    else:
        for path in sys.argv[1:]:
            check(path)
        print(f"{len(sys.argv) - 1} libraries agree with numpy")
