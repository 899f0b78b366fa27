"""A real client of an installed bitsandbytes build: transformers' BitsAndBytesConfig loads of a small
randomly initialised Llama saved locally in bf16, 4-bit nf4 (bf16 compute, double quant) and 8-bit
(LLM.int8), each on the GPU; the logits are compared with the bf16 model's (cosine, argmax agreement:
the quantization's own error) and with the bf16 model given the quantized model's own weights,
dequantized (the kernels' error alone), and generate() must run. Prints one line per load and a JSON
summary; exits 1 when a load is not quantized or its logits stray (cosine against bf16 below 0.90 for
nf4, 0.99 for int8; against the dequantized weights below 0.995). On the CPU backend (bitsandbytes
0.50.1 from PyPI, torch 2.14.1) the cosines were 0.938 (nf4) and 0.9989 (int8) against bf16, 0.99981
and 0.99935 against the dequantized weights (int8 also quantizes the activations); on the H200 with
builder's sm_90 build (bench/RESULTS.md, 2026-12-06) 0.94464 / 0.99896 and 0.999972 / 0.999424.

    python bench/bnb_client_check.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import bitsandbytes as bnb
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

BOUNDS = {"nf4": 0.90, "int8": 0.99}
DEQUANTIZED_BOUND = 0.995


def load(path: str, device: str, quantization: BitsAndBytesConfig | None) -> torch.nn.Module:
    kwargs = {"device_map": device, "quantization_config": quantization}
    try:  # transformers 5 calls it dtype, 4 torch_dtype
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, **kwargs).eval()
    except TypeError:
        return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.bfloat16, **kwargs).eval()


def dequantized(module: torch.nn.Module) -> torch.Tensor:
    """A bitsandbytes layer's weight as the bf16 matrix it stands for."""
    if isinstance(module, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).to(torch.bfloat16)
    weight = module.weight  # Int8Params: int8 rows and their absmax scales (SCB)
    return (weight.data.float() * weight.SCB.float()[:, None] / 127).to(torch.bfloat16)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    config = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=8,
                         num_key_value_heads=4, vocab_size=4000, max_position_embeddings=512)
    torch.manual_seed(0)
    results: dict[str, object] = {"bitsandbytes": bnb.__version__, "bitsandbytes_file": bnb.__file__,
                                  "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as path:
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
        ids = torch.randint(0, config.vocab_size, (2, 128), device=args.device)
        reference = load(path, args.device, None)
        with torch.no_grad():
            ref = reference(ids).logits.float()
        results["bf16_footprint_mb"] = round(reference.get_memory_footprint() / 2**20, 1)
        configs = {
            "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True),
            "int8": BitsAndBytesConfig(load_in_8bit=True),
        }
        failed = False
        for name, quantization in configs.items():
            start = time.monotonic()
            model = load(path, args.device, quantization)
            layer = bnb.nn.Linear4bit if name == "nf4" else bnb.nn.Linear8bitLt
            linears = {n: m for n, m in model.named_modules() if isinstance(m, layer)}
            plain = dict(reference.named_modules())
            kept = {n: plain[n].weight.data.clone() for n in linears}
            with torch.no_grad():
                for n, m in linears.items():
                    plain[n].weight.data.copy_(dequantized(m))
                same_weights = reference(ids).logits.float()
                for n, w in kept.items():
                    plain[n].weight.data.copy_(w)
                out = model(ids).logits.float()
                generated = model.generate(ids[:, :16], attention_mask=torch.ones_like(ids[:, :16]),
                                           max_new_tokens=16, do_sample=False)
            cos = cosine(out, ref)
            cos_same = cosine(out, same_weights)
            agree = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
            rel = ((out - ref).norm() / ref.norm()).item()
            quantized = len(linears)
            row = {"quantized_linears": quantized, "cosine": round(cos, 5), "cosine_dequantized": round(cos_same, 6),
                   "argmax_agreement": round(agree, 4), "relative_error": round(rel, 4),
                   "footprint_mb": round(model.get_memory_footprint() / 2**20, 1),
                   "generated": list(generated.shape), "seconds": round(time.monotonic() - start, 1)}
            ok = quantized == 7 * config.num_hidden_layers and cos >= BOUNDS[name] and cos_same >= DEQUANTIZED_BOUND
            failed |= not ok
            row["ok"] = ok
            results[name] = row
            print(f"{name}: {quantized} {layer.__name__} layers, cosine(logits, bf16) = {cos:.5f}, "
                  f"cosine(logits, bf16 with its dequantized weights) = {cos_same:.6f}, "
                  f"argmax agreement {agree:.4f}, relative error {rel:.4f}, footprint {row['footprint_mb']} MB "
                  f"(bf16 {results['bf16_footprint_mb']} MB), generate {tuple(generated.shape)}: "
                  f"{'ok' if ok else 'FAILED'}")
            del model
    print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
