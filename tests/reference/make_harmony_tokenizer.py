#!/usr/bin/env python3
"""Writes a small o200k_harmony-shaped tokenizer and the vectors tests/tokenizer checks moeserve against.

gpt-oss's tokenizer.json (o200k_harmony, 27.9 MB) is not in the shared data (an LFS pointer only), so
this builds one with the SAME structure as the published file and a small vocabulary trained here:

  pre_tokenizer  Sequence[Split(o200k's regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)]
  decoder        ByteLevel
  model          BPE, ignore_merges=true, no unk, no byte fallback (every byte is in the alphabet)
  added_tokens   the 21 special tokens of gpt-oss-20b's tokenizer_config.json (<|startoftext|> ...
                 <|endofprompt|>), in their published order, after the trained vocabulary (ids
                 V .. V+20 instead of 199998 .. 200018: the vocabulary is small)
  post_processor none: gpt-oss's template writes its special tokens itself

The split regex is o200k_base's (tiktoken's `o200k_base` pat_str, which o200k_harmony shares),
written as the published tokenizer.json writes it. Hugging Face `tokenizers` trains the BPE
(BpeTrainer, vocab 4000, the byte-level alphabet) on the published chat templates and the llama.cpp
test strings of tests/data, then encodes every string of tests/data/tokenizer-vectors/gpt-2.inp and of
`harmony_extra.inp` (contractions in upper and mixed case, digits in runs of 1-3, CJK, emoji,
newline runs, harmony special tokens inside text):

  harmony/tokenizer.json           the tokenizer
  harmony.<inp>.out                ids without special handling of the post-processor (there is none)
  harmony.<inp>.decoded.json       HF's decode of those ids (skip_special_tokens=False)

    pip install tokenizers
    python3 tests/reference/make_harmony_tokenizer.py

The output is deterministic (BpeTrainer breaks ties by content).
"""
import glob
import json
import os
import sys

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT_DIR = os.path.join(HERE, "tokenizer")
SEP = "\n__ggml_vocab_test__\n"

# o200k_base's pat_str (tiktoken), as the published o200k_harmony tokenizer.json writes it.
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])

# gpt-oss-20b tokenizer_config.json added_tokens_decoder, in id order (all special).
SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|reserved_200000|>", "<|reserved_200001|>", "<|return|>",
            "<|constrain|>", "<|reserved_200004|>", "<|channel|>", "<|start|>", "<|end|>", "<|message|>",
            "<|reserved_200009|>", "<|reserved_200010|>", "<|reserved_200011|>", "<|call|>",
            "<|reserved_200013|>", "<|reserved_200014|>", "<|reserved_200015|>", "<|reserved_200016|>",
            "<|reserved_200017|>", "<|endofprompt|>"]

EXTRA = [
    "I'M here, YOU'RE there and THEY'LL come; we'd've", "Don't DON'T don'T", "HelloWorld helloWORLD ABCdef",
    "1 12 123 1234 12345 1234567", "3.14159 and 2,718,281", "x=1;y=22;z=333", "  leading and trailing  ",
    "tabs\tand\t\ttabs", "line\nbreak\n\n\nruns\r\nwindows\r\n", "a  b   c    d", "path/to/file.txt\n/etc/",
    "!!!??? ... ---", "über naïve façade Ωmega", "日本語のテキストと漢字", "中文文本，标点。", "한국어 텍스트",
    "emoji 🙂🚀 and 👩‍👩‍👧", "Ångström ﬁ ligature", "<|start|>user<|message|>Hi<|end|>",
    "<|start|>assistant<|channel|>final<|message|>Hello!<|return|>", "text<|endoftext|>more", "<|call|>",
    "<|constrain|>json", "not <|a special|> token", "\u00a0nbsp\u2009thin", "MixedCASEWords AndMore",
]


def training_corpus():
    # Fixed files only (published data with provenance, never edited), so the vocabulary does not
    # change when the project's own docs do.
    data = os.path.join(ROOT, "tests", "data")
    paths = sorted(glob.glob(os.path.join(data, "chat-templates", "*", "*")))
    paths += sorted(glob.glob(os.path.join(data, "tokenizer-vectors", "*.inp")))
    texts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())
    texts.extend(EXTRA)
    return texts


def build():
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(O200K_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=4000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    tok.add_special_tokens(SPECIALS)
    return tok


def read_inp(path):
    with open(path, "r", encoding="utf-8", newline="") as f:
        parts = f.read().split(SEP)
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def main():
    os.makedirs(os.path.join(OUT_DIR, "harmony"), exist_ok=True)
    tok = build()
    tok_path = os.path.join(OUT_DIR, "harmony", "tokenizer.json")
    tok.save(tok_path, pretty=True)
    tok = Tokenizer.from_file(tok_path)  # what the C++ side reads
    extra_inp = os.path.join(OUT_DIR, "harmony_extra.inp")
    with open(extra_inp, "w", encoding="utf-8", newline="") as f:
        f.write("".join(t + SEP for t in EXTRA))
    for path in (os.path.join(ROOT, "tests", "data", "tokenizer-vectors", "gpt-2.inp"), extra_inp):
        name = os.path.basename(path)[: -len(".inp")]
        texts = read_inp(path)
        ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
        with open(os.path.join(OUT_DIR, f"harmony.{name}.out"), "w", encoding="utf-8", newline="\n") as f:
            for row in ids:
                f.write("".join(f" {i}" for i in row) + "\n")
        decoded = [tok.decode(row, skip_special_tokens=False) for row in ids]
        with open(os.path.join(OUT_DIR, f"harmony.{name}.decoded.json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(decoded, f, ensure_ascii=False, indent=0)
            f.write("\n")
        print(f"harmony.{name}: {len(texts)} strings, {sum(map(len, ids))} ids", file=sys.stderr)
    print(f"{tok_path}: vocab {tok.get_vocab_size()} (specials from {tok.token_to_id(SPECIALS[0])})", file=sys.stderr)


if __name__ == "__main__":
    main()
