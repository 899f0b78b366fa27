"""Checks an installed flash-attn kernel subset (variant hdims=32,256) on the GPU: forward and
backward for the built head dims and both dtypes against PyTorch's attention in float32, and a
clear RuntimeError naming the variant for a head dim outside the subset (bench/flash_subset_order.sh).
"""

from __future__ import annotations

import torch
from flash_attn import flash_attn_func

BUILT, MISSING = (32, 256), 64


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2)


def check(head_dim: int, dtype: torch.dtype, causal: bool) -> tuple[float, float]:
    """Max abs error of the output and of dq, each against the float32 reference."""
    torch.manual_seed(head_dim)
    q, k, v = (torch.randn(2, 512, 8, head_dim, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    out = flash_attn_func(q, k, v, causal=causal)
    grad = torch.randn_like(out)
    (dq,) = torch.autograd.grad(out, q, grad)
    q32 = q.detach().float().requires_grad_()
    ref = reference(q32, k.detach(), v.detach(), causal)
    (dq_ref,) = torch.autograd.grad(ref, q32, grad.float())
    return (out.float() - ref).abs().max().item(), (dq.float() - dq_ref).abs().max().item()


def main() -> int:
    failed = 0
    for head_dim in BUILT:
        for dtype in (torch.float16, torch.bfloat16):
            for causal in (False, True):
                out_err, dq_err = check(head_dim, dtype, causal)
                bound = 2e-2 if dtype == torch.bfloat16 else 4e-3
                ok = out_err < bound and dq_err < 10 * bound
                failed += not ok
                print(f"hdim {head_dim} {str(dtype)[6:]} causal={causal}: out err {out_err:.2e}, "
                      f"dq err {dq_err:.2e} {'ok' if ok else 'FAILED'}")
    q = torch.randn(1, 128, 4, MISSING, device="cuda", dtype=torch.float16)
    try:
        flash_attn_func(q, q, q)
    except RuntimeError as exc:
        print(f"hdim {MISSING} (not built): RuntimeError: {exc}".splitlines()[0])
    else:
        failed += 1
        print(f"hdim {MISSING} (not built): no error: FAILED")
    print("all ok" if not failed else f"{failed} FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
