"""Test reference: a small CLIP BPE vocabulary (every byte symbol, with and
without </w>, plus a few merges) written as tokenizer/vocab.json and
merges.txt, and transformers' CLIPTokenizer ids for test strings; the same
vocabulary again in OUT_DIR/bigg with the special tokens of Stable
Diffusion 3's tokenizer_2 (OpenCLIP-bigG: pad "!", id 0).

usage: clip_tokenizer_reference.py OUT_DIR  (reads strings as JSON on stdin)
"""
import json
import os
import shutil
import sys

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

out_dir = sys.argv[1]
strings = json.load(sys.stdin)
symbols = list(bytes_to_unicode().values())
vocab = {}
for s in symbols:
    vocab[s] = len(vocab)
for s in symbols:
    vocab[s + "</w>"] = len(vocab)
merges = [("t", "h"), ("th", "e</w>"), ("r", "e"), ("e", "d</w>"), ("c", "i"), ("ci", "r"), ("cir", "c"),
          ("circ", "l"), ("circl", "e</w>"), ("r", "ed</w>"), ("o", "n</w>"), ("b", "l"),
          ("bl", "u"), ("blu", "e</w>"), ("s", "q"), ("sq", "u"), ("squ", "a"), ("squa", "re</w>"),
          ("Ã", "©</w>"), ("c", "a"), ("ca", "f"), ("caf", "Ã©</w>"), ("r", "e</w>")]
for a, b in merges:
    vocab[a + b] = len(vocab)
vocab["<|startoftext|>"] = len(vocab)
vocab["<|endoftext|>"] = len(vocab)
with open(out_dir + "/vocab.json", "w") as f:
    json.dump(vocab, f)
with open(out_dir + "/merges.txt", "w") as f:
    f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
bigg = out_dir + "/bigg"
os.makedirs(bigg, exist_ok=True)
shutil.copy(out_dir + "/vocab.json", bigg)
shutil.copy(out_dir + "/merges.txt", bigg)


def added(content, normalized):
    return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False,
            "special": True}


with open(bigg + "/tokenizer_config.json", "w") as f:
    json.dump({"add_prefix_space": False,
               "added_tokens_decoder": {"0": added("!", False),
                                        str(vocab["<|startoftext|>"]): added("<|startoftext|>", True),
                                        str(vocab["<|endoftext|>"]): added("<|endoftext|>", False)},
               "bos_token": "<|startoftext|>", "clean_up_tokenization_spaces": True, "do_lower_case": True,
               "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": 77, "pad_token": "!",
               "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"}, f)
with open(bigg + "/special_tokens_map.json", "w") as f:
    json.dump({"bos_token": added("<|startoftext|>", True), "eos_token": added("<|endoftext|>", False),
               "pad_token": "!", "unk_token": added("<|endoftext|>", False)}, f)
for d in (out_dir, bigg):
    tok = CLIPTokenizer.from_pretrained(d)
    assert tok.convert_tokens_to_ids("<|endoftext|>") == vocab["<|endoftext|>"], "vocab not loaded"
    result = {"raw": [tok(s, add_special_tokens=False)["input_ids"] for s in strings],
              "padded": [tok(s, padding="max_length", max_length=16, truncation=True)["input_ids"] for s in strings],
              "pad_id": tok.pad_token_id}
    with open(d + "/expected.json", "w") as f:
        json.dump(result, f)
