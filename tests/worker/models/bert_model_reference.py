"""Test reference: transformers' BertModel on text encoders the test wrote.

usage: bert_model_reference.py DIR
  DIR/text_encoder: written by WriteBertTextEncoder; must load with no
  missing, unexpected or mismatched weights.
Writes DIR/perturbed (the same model with every parameter, biases and
LayerNorm included, moved by N(0, 0.05), saved by save_pretrained),
DIR/prefixed (perturbed's weights under "bert." plus a head key, as a
BertFor... checkpoint), and DIR/io.safetensors: ids [2, T], two padding
masks, and last_hidden_state of both models with and without the masks,
and of one row whose mask is all zeros.
"""
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import BertModel

out_dir = sys.argv[1]
model, info = BertModel.from_pretrained(out_dir + "/text_encoder", output_loading_info=True)
model = model.eval()
for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
    assert not info[kind], f"{kind}: {info[kind]}"
assert model.config._attn_implementation == "sdpa", model.config._attn_implementation

torch.manual_seed(3)
perturbed = BertModel.from_pretrained(out_dir + "/text_encoder").eval()
with torch.no_grad():
    for p in perturbed.parameters():
        p.add_(torch.randn_like(p) * 0.05)
perturbed.save_pretrained(out_dir + "/perturbed")
shutil.copytree(out_dir + "/perturbed", out_dir + "/prefixed")
weights = load_file(out_dir + "/perturbed/model.safetensors")
assert "embeddings.word_embeddings.weight" in weights and "pooler.dense.weight" in weights, sorted(weights)[:5]
prefixed = {"bert." + k: v for k, v in weights.items()}
prefixed["cls.predictions.bias"] = torch.zeros(model.config.vocab_size)
save_file(prefixed, out_dir + "/prefixed/model.safetensors", metadata={"format": "pt"})

T = 24
ids = torch.randint(0, model.config.vocab_size, (2, T))
ids[:, 0] = 101 % model.config.vocab_size
mask = torch.zeros(2, T, dtype=torch.long)
mask[0, :9] = 1   # 9 real tokens, 15 padding
mask[1, :20] = 1  # 20 real tokens, 4 padding
zero_mask = torch.zeros(1, T, dtype=torch.long)
out = {"ids": ids, "mask": mask}
with torch.no_grad():
    for name, m in (("written", model), ("perturbed", perturbed)):
        out[name + "_masked"] = m(input_ids=ids, attention_mask=mask)[0].contiguous()
        out[name + "_unmasked"] = m(input_ids=ids)[0].contiguous()
    out["perturbed_zero_mask"] = perturbed(input_ids=ids[:1], attention_mask=zero_mask)[0].contiguous()
save_file(out, out_dir + "/io.safetensors")
