"""Test reference: a tiny random Flux pipeline directory made with PyPI's
diffusers/transformers/sentencepiece, and diffusers' FluxPipeline outputs.

usage: flux_pipeline_reference.py OUT_DIR
Writes OUT_DIR/model (the diffusers directory) and OUT_DIR/expected.safetensors.
"""
import io
import json
import os
import shutil
import sys

import numpy as np
import sentencepiece as spm
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from safetensors.torch import save_file
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel,
                          T5TokenizerFast)
from transformers.convert_slow_tokenizer import bytes_to_unicode

out = sys.argv[1]
tmp = out + "/tmp"
os.makedirs(tmp, exist_ok=True)
torch.manual_seed(0)

# CLIP tokenizer: byte symbols plus a few merges.
symbols = list(bytes_to_unicode().values())
vocab = {s: i for i, s in enumerate(symbols)}
vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
merges = [("r", "e"), ("re", "d</w>"), ("c", "i"), ("ci", "r"), ("cir", "c"), ("circ", "l"), ("circl", "e</w>")]
for a, b in merges:
    vocab[a + b] = len(vocab)
vocab["<|startoftext|>"] = len(vocab)
vocab["<|endoftext|>"] = len(vocab)
os.makedirs(tmp + "/clip", exist_ok=True)
json.dump(vocab, open(tmp + "/clip/vocab.json", "w"))
open(tmp + "/clip/merges.txt", "w").write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
clip_tok = CLIPTokenizer.from_pretrained(tmp + "/clip", model_max_length=77)

# T5 tokenizer: a real SentencePiece model trained on captions.
colours = ["red", "green", "blue", "yellow", "white", "black"]
shapes = ["circle", "square", "triangle"]
corpus = [f"a {c} {s} on a {b} background" for c in colours for s in shapes for b in colours]
os.makedirs(tmp + "/t5", exist_ok=True)
spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=tmp + "/t5/spiece", vocab_size=26,
                               model_type="unigram", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2,
                               bos_id=-1, minloglevel=2)
t5_tok = T5TokenizerFast.from_pretrained(tmp + "/t5", extra_ids=0)

clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=48,
                                    num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77))
t5 = T5EncoderModel(T5Config(vocab_size=26, d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=3,
                             feed_forward_proj="gated-gelu", tie_word_embeddings=False))
transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                     attention_head_dim=16, num_attention_heads=2, joint_attention_dim=24,
                                     pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6))
vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    layers_per_block=1, norm_num_groups=4, scaling_factor=0.3611, shift_factor=0.1159,
                    use_quant_conv=False, use_post_quant_conv=False)
with torch.no_grad():
    for module in (clip, t5, transformer, vae):
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                            max_shift=1.15, num_train_timesteps=1000, shift=3.0,
                                            use_dynamic_shifting=True)
pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5,
                    tokenizer_2=t5_tok, transformer=transformer)
pipe.save_pretrained(out + "/model")
# transformers 5 saves tokenizers as tokenizer.json only; the FLUX.1 repos
# also carry the original files, which is what ditserve reads.
for src, dst in [("clip/vocab.json", "tokenizer"), ("clip/merges.txt", "tokenizer"),
                 ("t5/spiece.model", "tokenizer_2")]:
    shutil.copy(tmp + "/" + src, out + "/model/" + dst)

# The reference is diffusers on the checkpoint as saved (a pipeline kept in
# memory differs: its tokenizers are the pre-save objects).
pipe = FluxPipeline.from_pretrained(out + "/model")
results = {}
common = dict(height=24, width=32, num_inference_steps=3, guidance_scale=3.5, max_sequence_length=16)
for name, extra in [("plain", {}), ("cfg", dict(negative_prompt="green square", true_cfg_scale=2.0))]:
    for output_type in ("latent", "np"):
        res = pipe("a red circle on a blue background", generator=torch.Generator().manual_seed(42),
                   output_type=output_type, **common, **extra).images
        if output_type == "latent":
            results[name + ".latents"] = res.float().contiguous()
        else:
            results[name + ".image"] = torch.from_numpy(np.ascontiguousarray(res[0])).float()
save_file(results, out + "/expected.safetensors")
