"""Test reference: ids of transformers' T5TokenizerFast (what FluxPipeline
uses as tokenizer_2) for a spiece.model, padded to max_length.

usage: t5_tokenizer_reference.py DIR MAX_LENGTH  (strings as JSON on stdin;
DIR holds spiece.model; writes DIR/expected.json)
"""
import json
import sys

from transformers import T5TokenizerFast

directory, max_length = sys.argv[1], int(sys.argv[2])
strings = json.load(sys.stdin)
tok = T5TokenizerFast.from_pretrained(directory, extra_ids=0)
out = [tok(s, padding="max_length", max_length=max_length, truncation=True)["input_ids"] for s in strings]
with open(directory + "/expected.json", "w") as f:
    json.dump(out, f)
