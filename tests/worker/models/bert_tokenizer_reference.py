"""Test reference: transformers' BertTokenizer (the class AutoTokenizer and
HunyuanDiTPipeline's "tokenizer" component give) for tokenizer directories
the test wrote, and the tokenizers library's BertNormalizer +
BertPreTokenizer for every code point.

usage: bert_tokenizer_reference.py DIR
  DIR/strings.json: the test strings as hex-encoded UTF-8 bytes (possibly
  ill-formed: decoded with errors="replace", as a prompt would be).
  DIR/configs.json: names of tokenizer subdirectories of DIR.
Writes DIR/<name>/expected.json ({"raw", "ids", "mask", "legacy_mismatches"})
for every subdirectory, and DIR/codepoints_<combo>.txt: for the
combinations of DIR/combos.json ([name, lowercase, strip_accents,
chinese]), one line per chunk of 4096 code points (all but surrogates and
","; each as "a" + c + "a,"), the words joined by spaces.
"""
import inspect
import json
import sys

import transformers
from diffusers import HunyuanDiTPipeline
from tokenizers import normalizers, pre_tokenizers
from transformers import AutoTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

out_dir = sys.argv[1]
strings = [bytes.fromhex(h).decode("utf-8", errors="replace") for h in json.load(open(out_dir + "/strings.json"))]
component = inspect.signature(HunyuanDiTPipeline.__init__).parameters["tokenizer"].annotation
assert component is transformers.BertTokenizer, f"HunyuanDiTPipeline's tokenizer is {component}"

for name in json.load(open(out_dir + "/configs.json")):
    d = f"{out_dir}/{name}"
    tok = AutoTokenizer.from_pretrained(d)
    assert type(tok) is transformers.BertTokenizer, type(tok)
    raw = tok(strings, add_special_tokens=False)["input_ids"]
    padded = tok(strings, padding="max_length", max_length=77, truncation=True, return_attention_mask=True)
    # For the record only: how often transformers' Python (legacy) BertTokenizer disagrees.
    legacy = BertTokenizerLegacy.from_pretrained(d)
    legacy_raw = legacy(strings, add_special_tokens=False)["input_ids"]
    legacy_mismatches = [i for i in range(len(strings)) if legacy_raw[i] != raw[i]]
    with open(d + "/expected.json", "w") as f:
        json.dump({"raw": raw, "ids": padded["input_ids"], "mask": padded["attention_mask"],
                   "pad_id": tok.pad_token_id, "vocab_size": tok.vocab_size,
                   "legacy_mismatches": legacy_mismatches[:50], "legacy_mismatch_count": len(legacy_mismatches),
                   "normalizer": str(tok.backend_tokenizer.normalizer)}, f)

code_points = [cp for cp in range(0x110000) if not (0xD800 <= cp <= 0xDFFF) and cp != ord(",")]
for name, lowercase, strip_accents, chinese in json.load(open(out_dir + "/combos.json")):
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=chinese,
                                            strip_accents=strip_accents, lowercase=lowercase)
    pre = pre_tokenizers.BertPreTokenizer()
    with open(f"{out_dir}/codepoints_{name}.txt", "w", encoding="utf-8") as f:
        for start in range(0, len(code_points), 4096):
            text = "".join("a" + chr(cp) + "a," for cp in code_points[start:start + 4096])
            words = [w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text))]
            f.write(" ".join(words) + "\n")
