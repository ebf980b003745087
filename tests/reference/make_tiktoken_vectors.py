#!/usr/bin/env python3
"""Writes the tiktoken vectors that tests/tokenizer/tiktoken_test.cc checks moeserve against.

Kimi K2's tokenizer is a tiktoken rank file (tiktoken.model, not published in this repository's
data: only its LFS pointer is) read by tokenization_kimi.py, which builds
`tiktoken.Encoding(pat_str=<Kimi's pattern>, mergeable_ranks=..., special_tokens=...)` and encodes
with allowed_special="all". This script does the same with the `tiktoken` package (PyPI), on a
rank file we can publish: GPT-2's vocabulary (tests/data/tokenizers/gpt2/vocab.json) turned back
into raw bytes, which is exactly tiktoken's r50k_base. Kimi's tokenizer_config.json
(tests/data/configs/kimi-k2) gives the special tokens, moved from Kimi's base of 163584 to this
file's base of 50256.

Outputs (tests/reference/tokenizer/tiktoken/):
  tokenizer_config.json   Kimi's, with added_tokens_decoder ids rebased
  cases.json              {"rank_file_sha256", "num_base", "cases": [{"text", "ids", "decoded"}]}
The C++ test writes the rank file from vocab.json itself and checks its sha256 against this one.

    pip install tiktoken
    python3 tests/reference/make_tiktoken_vectors.py
"""
import base64
import hashlib
import json
import os
import tempfile

import tiktoken
from tiktoken.load import load_tiktoken_bpe

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "data"))
OUT = os.path.join(HERE, "tokenizer", "tiktoken")
KIMI_BASE = 163584
SEP = "\n__ggml_vocab_test__\n"

# tokenization_kimi.py's pat_str (moonshotai/Kimi-K2-Instruct), with tiktoken's class intersection.
KIMI_PAT = "|".join([
    r"""[\p{Han}]+""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

EXTRA = [
    "你好，世界！这是一个测试。",
    "Kimi说：HelloWorld和ÜberStraße混在一起",
    "日本語のテキストとカタカナ、ひらがな",
    "한국어 텍스트도 있습니다",
    "I'm sure they'll say WE'VE DONE IT, didn't they? O'Neil's",
    "CamelCaseWordsAndALLCAPS and mIxEd",
    "1234567890 3.14159 1,000,000 ２０２６年",
    "e\u0301 combining marks: a\u0308o\u0308u\u0308 \u0915\u093f",
    "emoji 👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "tabs\tand\r\nwindows\r\n\r\nlines   \n\n\n  trailing   ",
    "<|im_user|>user<|im_middle|>hi there<|im_end|><|im_assistant|>assistant<|im_middle|>",
    "[BOS]text[EOS] and [EOT] and <|reserved_token_50400|>",
    "code: def f(x):\n    return x ** 2  # square\n",
    "    ",
    "",
]


def gpt2_byte_decoder():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def main():
    with open(os.path.join(DATA, "tokenizers", "gpt2", "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    dec = gpt2_byte_decoder()
    ranks = {}
    for tok, i in vocab.items():
        if tok == "<|endoftext|>":
            continue
        ranks[bytes(dec[c] for c in tok)] = i
    assert sorted(ranks.values()) == list(range(len(ranks))), "ranks must be 0..n-1"
    num_base = len(ranks)
    lines = "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda kv: kv[1]))
    rank_bytes = lines.encode()

    with open(os.path.join(DATA, "configs", "kimi-k2", "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["added_tokens_decoder"] = {str(int(k) - KIMI_BASE + num_base): v for k, v in cfg["added_tokens_decoder"].items()}

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tiktoken.model")
        with open(path, "wb") as f:
            f.write(rank_bytes)
        mergeable = load_tiktoken_bpe(path)  # tiktoken's own reader of the format
    assert mergeable == ranks

    # As tokenization_kimi.py: 256 + 2 special ids after the last rank.
    names = {int(k): v["content"] for k, v in cfg["added_tokens_decoder"].items()}
    special = {names.get(i, f"<|reserved_token_{i}|>"): i for i in range(num_base, num_base + 258)}
    enc = tiktoken.Encoding(name="kimi-test", pat_str=KIMI_PAT, mergeable_ranks=mergeable, special_tokens=special)

    with open(os.path.join(DATA, "tokenizer-vectors", "gpt-2.inp"), encoding="utf-8", newline="") as f:
        texts = f.read().split(SEP)[:-1]
    texts += EXTRA
    cases = []
    for t in texts:
        ids = enc.encode(t, allowed_special="all")
        cases.append({"text": t, "ids": ids, "decoded": enc.decode(ids)})

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": f"tiktoken {tiktoken.__version__}", "rank_file_sha256": hashlib.sha256(rank_bytes).hexdigest(),
                   "num_base": num_base, "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{len(cases)} cases, {num_base} ranks, sha256 {hashlib.sha256(rank_bytes).hexdigest()}")


if __name__ == "__main__":
    main()
