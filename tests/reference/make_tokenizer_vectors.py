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
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data"))
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


if __name__ == "__main__":
    main()
