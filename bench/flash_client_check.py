"""A real client of an installed flash-attn inference subset (hdims=128, fp16, no backward):
transformers' `attn_implementation="flash_attention_2"` on a small random Llama (head_dim 128,
fp16) against the same model on SDPA: the logits must agree and generate() must run
(bench/flash_post2_proof.sh)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

config = LlamaConfig(hidden_size=512, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=1000, max_position_embeddings=512)
assert config.hidden_size // config.num_attention_heads == 128
torch.manual_seed(0)
sdpa = LlamaForCausalLM(config).to("cuda", torch.float16).eval()
try:  # transformers 5 calls it dtype, 4 torch_dtype
    flash = LlamaForCausalLM._from_config(config, attn_implementation="flash_attention_2", dtype=torch.float16)
except TypeError:
    flash = LlamaForCausalLM._from_config(config, attn_implementation="flash_attention_2", torch_dtype=torch.float16)
flash.load_state_dict(sdpa.state_dict())
flash = flash.to("cuda").eval()
ids = torch.randint(0, config.vocab_size, (2, 200), device="cuda")
with torch.no_grad():
    a, b = sdpa(ids).logits.float(), flash(ids).logits.float()
    err = (a - b).abs().max().item()
    out = flash.generate(ids[:, :16], max_new_tokens=16, do_sample=False)
print(f"max |logits(flash_attention_2) - logits(sdpa)| = {err:.3e}; generated {tuple(out.shape)}")
assert err < 5e-2, err
