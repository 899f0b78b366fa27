"""autoawq-kernels on a GPU: awq_ext's GEMM and GEMV against a dequantized torch reference.

Random 4-bit weights, zeros and fp16 scales are packed the way AutoAWQ 0.2.9 packs them
(awq/modules/linear/gemm.py: qweight [K, N/8] with the AWQ column order 0,2,4,6,1,3,5,7;
gemv.py: qweight [N, K/8] in plain order, zeros and scales per output row), the kernels run,
and the result is compared with x @ W for W = (q - z) * s computed by torch.

    python bench/awq_kernels_check.py   (prints JSON; exits 1 when a result is off)
"""

from __future__ import annotations

import json
import sys

import torch

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # awq/utils/packing_utils.py
K, N, GROUP = 512, 256, 128


def pack_columns(values: torch.Tensor, order: list[int]) -> torch.Tensor:
    """Eight 4-bit columns per int32: position p holds column order[p]."""
    values = values.to(torch.int64)
    blocks = values.view(values.shape[0], -1, 8)
    packed = sum(blocks[:, :, order[p]] << (4 * p) for p in range(8))
    return torch.where(packed >= 1 << 31, packed - (1 << 32), packed).to(torch.int32)  # two's complement


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


def check_gemm(awq_ext: object, generator: torch.Generator) -> float:
    q = torch.randint(0, 16, (K, N), generator=generator)
    z = torch.randint(0, 16, (K // GROUP, N), generator=generator)
    s = (torch.rand((K // GROUP, N), generator=generator) * 0.02 + 0.005).half()
    weight = (q - z.repeat_interleave(GROUP, 0)).half() * s.repeat_interleave(GROUP, 0)
    x = torch.randn((16, K), generator=generator).half()
    out = awq_ext.gemm_forward_cuda(x.cuda(), pack_columns(q, AWQ_ORDER).cuda(), s.cuda(),  # type: ignore[attr-defined]
                                    pack_columns(z, AWQ_ORDER).cuda(), 8)
    return relative_error(out.cpu(), x.float() @ weight.float())


def check_gemv(awq_ext: object, generator: torch.Generator) -> float:
    groups = K // GROUP
    width = (groups + 7) // 8  # calculate_zeros_width for group_size 128
    q = torch.randint(0, 16, (N, K), generator=generator)
    z = torch.randint(0, 16, (N, groups), generator=generator)
    s = (torch.rand((N, groups), generator=generator) * 0.02 + 0.005).half()
    scales = torch.zeros((N, width * 8), dtype=torch.float16)
    scales[:, :groups] = s
    zeros = torch.zeros((N, width * 8), dtype=torch.int64)
    zeros[:, :groups] = z
    weight = (q - z.repeat_interleave(GROUP, 1)).half() * s.repeat_interleave(GROUP, 1)
    x = torch.randn((1, K), generator=generator).half()
    out = awq_ext.gemv_forward_cuda(x.cuda(), pack_columns(q, list(range(8))).cuda(), scales.cuda(),  # type: ignore[attr-defined]
                                    pack_columns(zeros, list(range(8))).cuda(), GROUP)
    return relative_error(out.cpu(), x.float() @ weight.float().T)


def main() -> int:
    import awq_ext

    generator = torch.Generator().manual_seed(0)
    errors = {"gemm_relative_error": check_gemm(awq_ext, generator),
              "gemv_relative_error": check_gemv(awq_ext, generator),
              "device": torch.cuda.get_device_name(), "torch": torch.__version__}
    print(json.dumps(errors))
    return 0 if max(errors["gemm_relative_error"], errors["gemv_relative_error"]) < 2e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
