#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (small, hand-made valid inputs; the fuzzer
mutates from there). Rerun after changing a seed: python3 fuzz/make_corpus.py. The request
builder's seeds are protobuf text encoded with protoc (protobuf-compiler)."""
import json
import os
import shutil
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
SEP = b"\n#--\n"  # fuzz_util.h split_parts


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, pad=True):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)
    # ---- safetensors
    put("fuzz_safetensors", "two_tensors", safetensors([("a", "F32", [2, 2], f32), ("b", "BF16", [3], b"\x80\x3f" * 3)],
                                                       {"format": "pt"}))
    put("fuzz_safetensors", "every_dtype", safetensors([("f16", "F16", [2], b"\x00\x3c" * 2), ("i32", "I32", [1], b"\x07\0\0\0"),
                                                        ("i64", "I64", [1], b"\x01" + b"\0" * 7), ("u8", "U8", [3], b"xyz"),
                                                        ("empty", "F32", [0, 4], b"")]))
    put("fuzz_safetensors", "misaligned", safetensors([("w", "F32", [4], f32)], pad=False))
    put("fuzz_safetensors", "empty_header", safetensors([]))
    # ---- index (the target provides shards holding x.a, x.b and y.a, y.b)
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    put("fuzz_weights_index", "two_shards", json.dumps({"metadata": {"total_size": 28},
                                                        "weight_map": {"x.a": s1, "x.b": s1, "y.a": s2, "y.b": s2}}))
    put("fuzz_weights_index", "one_shard", json.dumps({"weight_map": {"x.a": s1}}))
    put("fuzz_weights_index", "traversal", json.dumps({"weight_map": {"x.a": "../" + s1}}))
    # ---- config.json [+ generation_config.json]
    fixtures = os.path.join(ROOT, "tests", "reference", "fixtures")
    for name in sorted(os.listdir(fixtures)):
        cfg = os.path.join(fixtures, name, "config.json")
        if not os.path.exists(cfg):
            continue
        with open(cfg, "rb") as f:
            text = f.read()
        put("fuzz_config", name, text)
        gen = os.path.join(fixtures, name, "generation_config.json")
        if os.path.exists(gen):
            with open(gen, "rb") as f:
                put("fuzz_config", name + "_with_generation_config", text + SEP + f.read())
    put("fuzz_config", "deepseek_mla", json.dumps({
        "architectures": ["DeepseekV3ForCausalLM"], "vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 4, "n_routed_experts": 8, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32, "intermediate_size": 128, "kv_lora_rank": 16, "q_lora_rank": 24,
        "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "first_k_dense_replace": 1,
        "eos_token_id": [1, 2], "rope_scaling": {"type": "yarn", "factor": 4.0}}))
    # ---- tokenizer.json
    byte_level = {"version": "1.0",
                  "added_tokens": [{"id": 5, "content": "<eos>", "special": True}],
                  "normalizer": None,
                  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
                  "decoder": {"type": "ByteLevel"},
                  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3, "\u0120ab": 4},
                            "merges": ["a b", "\u0120 ab"]}}
    put("fuzz_tokenizer_json", "byte_level", json.dumps(byte_level))
    meta = {"version": "1.0",
            "added_tokens": [{"id": 0, "content": "<unk>", "special": True}, {"id": 1, "content": "<s>", "special": True},
                             {"id": 2, "content": "</s>", "special": True}],
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                               {"type": "Replace", "pattern": {"String": " "},
                                                                "content": "\u2581"}]},
            "pre_tokenizer": None,
            "post_processor": {"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                          {"Sequence": {"id": "A", "type_id": 0}}],
                               "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
            "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                         {"type": "ByteFallback"}, {"type": "Fuse"},
                                                         {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
            "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": True, "fuse_unk": True,
                      "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x41>": 3, "\u2581": 4, "h": 5, "i": 6, "hi": 7,
                                "\u2581hi": 8},
                      "merges": ["h i", "\u2581 hi"]}}
    put("fuzz_tokenizer_json", "metaspace_llama", json.dumps(meta))
    split = dict(byte_level)
    split["normalizer"] = {"type": "NFKC"}
    split["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": False},
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}
    put("fuzz_tokenizer_json", "split_digits_nfkc", json.dumps(split))
    # ---- vocab.json SEP merges.txt SEP tokenizer_config.json
    vocab = json.dumps({"a": 0, "b": 1, "ab": 2, "\u0120": 3, "\u0120ab": 4, "<|endoftext|>": 5}).encode()
    merges = "#version: 0.2\na b\n\u0120 ab\n".encode()
    config = json.dumps({"bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"},
                         "added_tokens_decoder": {"5": {"content": "<|endoftext|>", "special": True}}}).encode()
    put("fuzz_tokenizer_files", "gpt2_like", vocab + SEP + merges + SEP + config)
    put("fuzz_tokenizer_files", "no_config", vocab + SEP + merges)
    # ---- tiktoken.model SEP tokenizer_config.json (Kimi K2's format)
    import base64
    ranks = [bytes([b]) for b in range(256)] + [b"ab", b" a", b" ab", b"\xe4\xbd", b"\xe4\xbd\xa0"]
    model = "".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(ranks)).encode()
    kimi = json.dumps({"auto_map": {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", None]},
                       "bos_token": "[BOS]", "eos_token": "[EOS]",
                       "added_tokens_decoder": {"261": {"content": "[BOS]", "special": True},
                                                "262": {"content": "[EOS]", "special": True}}}).encode()
    put("fuzz_tiktoken", "kimi_like", model + SEP + kimi)
    put("fuzz_tiktoken", "duplicate_rank", b"YQ== 0\nYg== 0\n" + SEP + kimi)
    # ---- GenerateRequest (protobuf text -> wire bytes)
    requests = {
        "token_ids": 'request_id: "r1" token_ids { ids: [1, 2, 3] } stopping { max_tokens: 4 }',
        "text_sampling": 'text: "ab ab" sampling { temperature: 0.7 top_p: 0.9 top_k: 5 min_p: 0.05 '
                         'repetition_penalty: 1.1 presence_penalty: 0.5 frequency_penalty: -0.5 seed: 42 } '
                         'stopping { max_tokens: 8 min_tokens: 1 stop: ["b", "ab"] stop_token_ids: [5] ignore_eos: true } '
                         'output { logprobs: 2 skip_special_tokens: true stream_interval: 2 } cache_salt: "s"',
        "greedy": 'token_ids { ids: [0] } sampling { temperature: 0 }',
        "chat": 'chat { messages: "[{\\"role\\": \\"user\\", \\"content\\": \\"ab\\"}]" '
                'tools: "[{\\"name\\": \\"f\\"}]" add_generation_prompt: true '
                'template_kwargs: "{\\"enable_thinking\\": false}" } stopping { max_tokens: 2 }',
    }
    proto_dir = os.path.join(ROOT, "proto")
    for name, text in requests.items():
        wire = subprocess.run(["protoc", "--proto_path=" + proto_dir, "--encode=moe.v1.GenerateRequest",
                               "moe/v1/inference.proto"], input=text.encode(), capture_output=True, check=True).stdout
        put("fuzz_request_builder", name, wire)
    # ---- chat templates: each served family's real template + a conversation with tool calls
    tmpl_dir = os.path.join(ROOT, "tests", "data", "chat-templates")
    conversation = json.dumps([
        {"role": "system", "content": "s"}, {"role": "user", "content": "u"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function",
                                                             "function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "tool", "content": "r"}, {"role": "assistant", "content": "<think>t</think>a"}])
    for fam in sorted(os.listdir(tmpl_dir)):
        d = os.path.join(tmpl_dir, fam)
        if not os.path.isdir(d):
            continue
        src = None
        cfg_path = os.path.join(d, "tokenizer_config.json")
        if os.path.exists(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                src = json.load(f).get("chat_template")
        if src is None:
            with open(os.path.join(d, "chat_template.jinja"), encoding="utf-8") as f:
                src = f.read()
        put("fuzz_chat_template", fam, src.encode() + SEP + conversation.encode())
    total = sum(len(fs) for _, _, fs in os.walk(OUT))
    print(f"make_corpus: {total} seeds in {OUT}")


if __name__ == "__main__":
    sys.exit(main())
