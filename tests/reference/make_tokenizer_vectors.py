#!/usr/bin/env python3
"""Writes the Mixtral tokenizer vectors that tests/tokenizer checks moeserve against.

Hugging Face `tokenizers` (PyPI) encodes every string of the shared llama.cpp `.inp` file plus
our own `mixtral_extra.inp` (byte fallback, CJK, emoji, special-token text) with the Mixtral
tokenizer.json. The `.decoded.json` files hold HF's decode of those ids. Id files follow the llama.cpp `.out` format: one line per string, each id
preceded by a space. Two variants: without and with the post-processor's special tokens.

    pip install tokenizers
    python3 tests/reference/make_tokenizer_vectors.py
"""
import json
import os
import sys

from tokenizers import Tokenizer

SEP = "\n__ggml_vocab_test__\n"
HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "data"))  # tests/data
OUT_DIR = os.path.join(HERE, "tokenizer")
INPUTS = [
    # gpt-2.inp, qwen2.inp and mpt.inp are the same llama.cpp test strings (same sha256).
    os.path.join(SHARED, "tokenizer-vectors", "gpt-2.inp"),
    os.path.join(OUT_DIR, "mixtral_extra.inp"),
]


def read_inp(path):
    with open(path, "r", encoding="utf-8", newline="") as f:
        data = f.read()
    parts = data.split(SEP)
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def main():
    tok = Tokenizer.from_file(os.path.join(SHARED, "tokenizers", "mixtral-8x7b-instruct", "tokenizer.json"))
    for path in INPUTS:
        name = os.path.basename(path)[: -len(".inp")]
        texts = read_inp(path)
        for special, suffix in ((False, ""), (True, ".special")):
            out = os.path.join(OUT_DIR, f"mixtral.{name}{suffix}.out")
            with open(out, "w", encoding="utf-8", newline="\n") as f:
                for text in texts:
                    ids = tok.encode(text, add_special_tokens=special).ids
                    f.write("".join(f" {i}" for i in ids) + "\n")
            print(f"{out}: {len(texts)} strings", file=sys.stderr)
        # What HF's decode gives back for the ids (not always the input: special tokens and a
        # literal U+2581 do not round-trip).
        decoded = [tok.decode(tok.encode(t, add_special_tokens=False).ids, skip_special_tokens=False) for t in texts]
        with open(os.path.join(OUT_DIR, f"mixtral.{name}.decoded.json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(decoded, f, ensure_ascii=False, indent=0)
            f.write("\n")


# Small hand-made tokenizer.json files that exercise one pipeline stage each (Metaspace with
# prepend_scheme "first", byte fallback, fused unk, added-token lstrip/rstrip/single_word,
# Digits, Split behaviours). HF's ids and decodes for them go to pipeline_cases.json.
TINY_VOCAB = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0xC3>": 3, "<0xA9>": 4, "\u2581": 5, "a": 6, "b": 7, "c": 8,
              "\u2581a": 9, "ab": 10, "\u2581ab": 11, "1": 12, "2": 13, "12": 14, "<mask>": 15, "x": 16}


def write_pipeline_cases():
    def base(pre, dec, added, merges=None, **model):
        m = {"type":"BPE","vocab":TINY_VOCAB,"merges":merges if merges is not None else [["a","b"],["\u2581","a"],["\u2581","ab"],["1","2"]],"unk_token":"<unk>","fuse_unk":True,"byte_fallback":True}
        m.update(model)
        return {"version":"1.0","added_tokens":added,"normalizer":None,"pre_tokenizer":pre,"post_processor":None,"decoder":dec,"model":m}
    cases = {}
    meta = base({"type":"Metaspace","replacement":"\u2581","prepend_scheme":"first","split":True},
                {"type":"Metaspace","replacement":"\u2581","prepend_scheme":"first","split":True},
                [{"id":15,"content":"<mask>","special":True,"lstrip":True,"rstrip":False,"single_word":False,"normalized":False},
                 {"id":16,"content":"x","special":False,"lstrip":False,"rstrip":False,"single_word":True,"normalized":False}])
    cases["metaspace"] = (meta, ["ab ab", "ab  c", "é a", "zzq ab", "a <mask>ab", "<mask> ab", "x ab xab ax x", "12 112", "", " "])
    dig = base({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\s+"},"behavior":"Removed","invert":False},{"type":"Digits","individual_digits":True}]},
               {"type":"Fuse"}, [{"id":15,"content":"<mask>","special":True,"lstrip":False,"rstrip":True,"single_word":False,"normalized":False}], unk_token=None, byte_fallback=False)
    cases["digits"] = (dig, ["ab 12c", "1212 ab", "<mask>   ab", "qab"])
    spl = base({"type":"Split","pattern":{"String":"b"},"behavior":"MergedWithPrevious","invert":False}, None, [], merges=["a b", "1 2"])
    cases["split_prev"] = (spl, ["abab", "bbab", "cab"])
    spl2 = base({"type":"Split","pattern":{"String":"b"},"behavior":"MergedWithNext","invert":False}, None, [])
    cases["split_next"] = (spl2, ["abab", "bbab", "cab"])
    spl3 = base({"type":"Split","pattern":{"String":"b"},"behavior":"Contiguous","invert":False}, None, [])
    cases["split_contig"] = (spl3, ["abbab", "bbab", "cab"])
    out = {}
    for name, (j, texts) in cases.items():
        t = Tokenizer.from_str(json.dumps(j))
        res = []
        for s in texts:
            ids = t.encode(s, add_special_tokens=False).ids
            res.append({"text": s, "ids": ids, "decoded": t.decode(ids, skip_special_tokens=False)})
        out[name] = {"tokenizer": j, "cases": res}
    path = os.path.join(OUT_DIR, "pipeline_cases.json")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{path}: {sum(len(v['cases']) for v in out.values())} cases", file=sys.stderr)


if __name__ == "__main__":
    main()
    write_pipeline_cases()
