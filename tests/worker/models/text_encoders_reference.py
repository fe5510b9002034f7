"""Test reference: tiny random CLIPTextModel and T5EncoderModel from PyPI's
transformers, saved as text_encoder/ and text_encoder_2/, and a
CLIPTextModelWithProjection (OpenCLIP-bigG-like: gelu, pooled at the first
end-of-text id, padded with id 0) saved as clip_projection/ by transformers
and as clip_projection_bare/ with the text transformer's keys bare, with
token ids and transformers' outputs.

usage: text_encoders_reference.py OUT_DIR
"""
import shutil
import sys

import torch
from safetensors.torch import save_file
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

out_dir = sys.argv[1]
torch.manual_seed(0)
clip = CLIPTextModel(CLIPTextConfig(
    vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, hidden_act="quick_gelu", eos_token_id=2)).eval()
clip.save_pretrained(out_dir + "/text_encoder")
t5 = T5EncoderModel(T5Config(
    vocab_size=101, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4,
    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
    relative_attention_max_distance=128, tie_word_embeddings=False)).eval()
with torch.no_grad():
    for p in t5.parameters():
        p.add_(torch.randn_like(p) * 0.1)
t5.save_pretrained(out_dir + "/text_encoder_2")
clip_ids = torch.randint(0, 97, (2, 77))
clip_ids[0, 10] = 98  # the end-of-text id is the largest id: pooled there
clip_ids[1, 76] = 98
t5_ids = torch.randint(0, 101, (2, 300))  # longer than 2*max_distance: far buckets
with torch.no_grad():
    c = clip(input_ids=clip_ids, output_hidden_states=True)
    t = t5(input_ids=t5_ids).last_hidden_state
proj = CLIPTextModelWithProjection(CLIPTextConfig(
    vocab_size=99, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=2,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=40, bos_token_id=97, eos_token_id=98,
    pad_token_id=0)).eval()
with torch.no_grad():
    for p in proj.parameters():
        p.add_(torch.randn_like(p) * 0.05)
proj.save_pretrained(out_dir + "/clip_projection")
bare = out_dir + "/clip_projection_bare"
shutil.copytree(out_dir + "/clip_projection", bare)
weights = load_file(out_dir + "/clip_projection/model.safetensors")
assert "text_projection.weight" in weights and "text_model.embeddings.token_embedding.weight" in weights
save_file({k.removeprefix("text_model."): v for k, v in weights.items()}, bare + "/model.safetensors")
proj_ids = torch.randint(1, 97, (2, 77))
proj_ids[:, 0] = 97
proj_ids[0, 12:] = 98  # end-of-text repeated: pooled at the first
proj_ids[1, 30] = 98
proj_ids[1, 31:] = 0   # bigG's "!" padding
with torch.no_grad():
    po = proj(input_ids=proj_ids, output_hidden_states=True)
    pooled = proj.text_model(input_ids=proj_ids).pooler_output
save_file({"clip_ids": clip_ids, "clip_hidden": c.last_hidden_state.contiguous(),
           "clip_pooled": c.pooler_output.contiguous(), "t5_ids": t5_ids, "t5_hidden": t.contiguous(),
           "proj_ids": proj_ids, "proj_hidden": po.last_hidden_state.contiguous(),
           "proj_penultimate": po.hidden_states[-2].contiguous(), "proj_pooled": pooled.contiguous(),
           "proj_text_embeds": po.text_embeds.contiguous(), "clip_penultimate": c.hidden_states[-2].contiguous()},
          out_dir + "/io.safetensors")
