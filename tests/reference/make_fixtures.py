#!/usr/bin/env python3
"""Writes the tiny transformers models and reference logits that the C++ forward-pass tests compare against.

For each supported family this builds a small random model with Hugging Face `transformers`, saves it
with `save_pretrained` (safetensors, hub tensor naming with one tensor per expert) into
`fixtures/<name>/`, and records what `transformers` computes for three prompts:

  reference.json         family, dtype, library versions, the prompts and the 16 greedy ids per prompt
  reference.safetensors  f32 `prefill_logits.<i>` [len_i, vocab]: one forward pass over prompt i alone
                         f32 `greedy_logits.<i>`  [16, vocab]: the raw logits that chose each greedy token

Default initialisation gives near-uniform routing and near-zero logits, which would let a wrong expert
choice or a wrong norm pass unnoticed, so every parameter is re-drawn with larger spreads. A prompt whose
greedy steps have a top-2 logit gap under MIN_GAP would make the C++ check flaky; such a model is redrawn
with the next seed.

    pip install -r tests/reference/requirements.txt
    python3 tests/reference/make_fixtures.py            # all fixtures
    python3 tests/reference/make_fixtures.py mixtral    # only some

The output is deterministic: running it twice gives byte-identical files.
"""
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import (
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    GenerationConfig,
    GptOssConfig,
    GptOssForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_ROOT = os.path.join(HERE, "fixtures")
PROMPT_LENGTHS = (9, 17, 30)
NEW_TOKENS = 16
MIN_GAP = 1e-3
MAX_SEED_TRIES = 20

# Shared by every family: values the C++ side must read from config.json rather than assume.
COMMON = dict(
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    max_position_embeddings=256,
    hidden_act="silu",
    attention_dropout=0.0,
    use_cache=True,
)


def special_ids(vocab):
    # Real checkpoints carry integer ids; keep them at the top of the vocabulary so prompts can avoid them.
    return dict(bos_token_id=vocab - 3, eos_token_id=vocab - 2, pad_token_id=vocab - 1)


def mixtral():
    vocab = 320
    cfg = MixtralConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=8,
        num_experts_per_tok=2, sliding_window=None, router_jitter_noise=0.0,
        tie_word_embeddings=False, **COMMON, **special_ids(vocab))
    return MixtralForCausalLM, cfg


def qwen3_moe():
    vocab = 384
    cfg = Qwen3MoeConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, moe_intermediate_size=64,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
        mlp_only_layers=[1], attention_bias=False, use_sliding_window=False, sliding_window=None,
        tie_word_embeddings=False, **COMMON, **special_ids(vocab))
    return Qwen3MoeForCausalLM, cfg


def qwen2_moe():
    vocab = 256
    cfg = Qwen2MoeConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, moe_intermediate_size=48,
        shared_expert_intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
        decoder_sparse_step=1, mlp_only_layers=[], qkv_bias=True, use_sliding_window=False,
        sliding_window=None, tie_word_embeddings=False, **COMMON, **special_ids(vocab))
    return Qwen2MoeForCausalLM, cfg


def olmoe():
    vocab = 288
    cfg = OlmoeConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, num_experts=8, num_experts_per_tok=2,
        norm_topk_prob=False, clip_qkv=None, attention_bias=False, tie_word_embeddings=False,
        **COMMON, **special_ids(vocab))
    return OlmoeForCausalLM, cfg


def llama():
    vocab = 256
    # The one tied family: its checkpoint has no lm_head.weight, as small real models often do.
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, attention_bias=False, mlp_bias=False,
        tie_word_embeddings=True, **COMMON, **special_ids(vocab))
    return LlamaForCausalLM, cfg


def qwen3():
    vocab = 256
    cfg = Qwen3Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, attention_bias=False,
        use_sliding_window=False, sliding_window=None, tie_word_embeddings=False,
        **COMMON, **special_ids(vocab))
    return Qwen3ForCausalLM, cfg


def deepseek_v3():
    vocab = 288
    # MLA with q_lora_rank, YaRN (mscale != mscale_all_dim, so both the cos/sin factor and the
    # softmax-scale correction are exercised), interleaved rope, one dense layer first, 4 groups of
    # 2 experts with 2 kept, two shared experts.
    cfg = DeepseekV3Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=24,
        kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12,
        n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
        rope_interleave=True, attention_bias=False, tie_word_embeddings=False,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.8},
        **COMMON, **special_ids(vocab))
    return DeepseekV3ForCausalLM, cfg


def deepseek_v3_noq():
    vocab = 256
    # As DeepSeek-V2-Lite: no q_lora_rank (q_proj), plain rope in rotate-half layout, two dense
    # layers first, one group, one shared expert, unnormalised top-k weights.
    cfg = DeepseekV3Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=80, moe_intermediate_size=24,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None,
        kv_lora_rank=24, qk_nope_head_dim=8, qk_rope_head_dim=16, v_head_dim=16,
        n_routed_experts=6, n_shared_experts=1, num_experts_per_tok=2, n_group=1, topk_group=1,
        routed_scaling_factor=1.5, norm_topk_prob=False, first_k_dense_replace=2,
        rope_interleave=False, attention_bias=False, tie_word_embeddings=False, rope_scaling=None,
        **COMMON, **special_ids(vocab))
    return DeepseekV3ForCausalLM, cfg


def gpt_oss():
    vocab = 320
    # Sliding layers alternate with full ones as in the published configs, with a window of 8 so
    # that every prompt (9, 17, 30 ids) and every greedy step crosses it; YaRN with truncate false
    # (the published rope_scaling); attention sinks, q/k/v/o biases, a biased router, biased
    # experts with the clamped SwiGLU (transformers hard-codes limit 7 and alpha 1.702).
    cfg = GptOssConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=6,
        num_experts_per_tok=2, sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                      "truncate": False, "original_max_position_embeddings": 64},
        rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=256, attention_dropout=0.0,
        use_cache=True, tie_word_embeddings=False, **special_ids(vocab))
    return GptOssForCausalLM, cfg


# name -> (builder, base seed, max shard size or None for a single file)
FIXTURES = {
    "mixtral": (mixtral, 1000, None),
    "qwen3_moe": (qwen3_moe, 2000, None),
    "qwen2_moe": (qwen2_moe, 3000, "200KB"),
    "olmoe": (olmoe, 4000, None),
    "llama": (llama, 5000, None),
    "qwen3": (qwen3, 6000, None),
    "deepseek_v3": (deepseek_v3, 7000, None),
    "deepseek_v3_noq": (deepseek_v3_noq, 8000, None),
    "gpt_oss": (gpt_oss, 9000, None),
}

# gpt-oss keeps its experts fused as transformers defines them (one [E, ...] tensor per layer, gate
# and up interleaved), which is also how the published checkpoints name them.
FUSED_EXPERTS_OK = {"gpt_oss"}


def is_router(name):
    # Mixtral: block_sparse_moe.gate; Qwen*-MoE/OLMoE: mlp.gate (not mlp.gate_proj);
    # Qwen2-MoE's sigmoid shared-expert gate is a router-like [1, hidden] row too.
    return name.endswith(("block_sparse_moe.gate.weight", "mlp.gate.weight", "shared_expert_gate.weight",
                          "mlp.router.weight"))


def reinit(model, gen):
    """Re-draws every parameter so routing is decisive and logits spread; names are visited in sorted order."""
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name in sorted(params):
            p = params[name]
            if name.endswith("norm.weight"):
                value = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
            elif is_router(name):
                value = 0.5 * torch.randn(p.shape, generator=gen)
            elif name.endswith(".bias"):
                value = 0.05 * torch.randn(p.shape, generator=gen)
            elif name.endswith("self_attn.sinks"):
                # gpt-oss: a sink logit per head, of the size of the scores, so it takes a share.
                value = 1.0 * torch.randn(p.shape, generator=gen)
            elif name.endswith("experts.gate_up_proj"):
                # With the biases below, about 0.7% of gate values pass the clamp limit of 7 and
                # 1.6% of up values pass +-7 (every branch of the clamped SwiGLU runs), while the
                # model stays as insensitive to bf16 rounding as the other fixtures (larger
                # spreads made transformers itself move 10% of rows by over 2e-2 in bf16).
                value = 0.2 * torch.randn(p.shape, generator=gen)
            elif name.endswith("experts.gate_up_proj_bias"):
                value = 2.5 * torch.randn(p.shape, generator=gen)
            elif name.endswith("experts.down_proj"):
                value = 0.02 * torch.randn(p.shape, generator=gen)
            elif name.endswith("experts.down_proj_bias"):
                value = 0.1 * torch.randn(p.shape, generator=gen)
            elif name == "model.embed_tokens.weight":
                # Tied embeddings also serve as lm_head; a large spread there makes every step repeat its input.
                std = 0.1 if model.config.tie_word_embeddings else 0.5
                value = std * torch.randn(p.shape, generator=gen)
            elif name == "lm_head.weight":
                value = 0.15 * torch.randn(p.shape, generator=gen)
            else:
                value = 0.08 * torch.randn(p.shape, generator=gen)
            p.copy_(value.to(p.dtype))
        # DeepSeek-V3's e_score_correction_bias is a buffer (zeros by default): give it values so
        # choosing by biased scores differs from weighting by unbiased ones. Non-negative, because
        # transformers masks the dropped groups with 0.0 (not -inf), which equals top-k within the
        # kept groups only while every biased score is positive.
        for name, b in sorted(model.named_buffers()):
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.3 * torch.rand(b.shape, generator=gen))


def make_prompts(vocab, avoid, gen):
    prompts = []
    for n in PROMPT_LENGTHS:
        ids = []
        while len(ids) < n:
            t = int(torch.randint(0, vocab, (1,), generator=gen))
            if t not in avoid:
                ids.append(t)
        prompts.append(ids)
    return prompts


def build(builder, seed):
    cls, cfg = builder()
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = cls(cfg).to(torch.float32)
    gen = torch.Generator().manual_seed(seed)
    reinit(model, gen)
    model.eval()
    return model, cfg, gen


def run_reference(model, cfg, prompts):
    """Returns (tensors, greedy ids, list of problems); a problem means this seed must be rejected."""
    tensors, greedy, problems = {}, [], []
    # No eos/pad in generation so all 16 steps run; the ids in config.json stay as real checkpoints have them.
    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                               eos_token_id=None, pad_token_id=None, bos_token_id=None)
    specials = {cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id}
    with torch.no_grad():
        for i, ids in enumerate(prompts):
            x = torch.tensor([ids], dtype=torch.long)
            prefill = model(input_ids=x, use_cache=False).logits[0].float().contiguous()
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=gen_cfg,
                                 output_logits=True, return_dict_in_generate=True)
            new_ids = out.sequences[0, len(ids):].tolist()
            steps = torch.stack([lg[0] for lg in out.logits]).float().contiguous()
            if len(new_ids) != NEW_TOKENS or steps.shape[0] != NEW_TOKENS:
                problems.append(f"prompt {i}: {len(new_ids)} new tokens, {steps.shape[0]} logit rows")
            if steps.argmax(dim=-1).tolist() != new_ids:
                problems.append(f"prompt {i}: greedy ids differ from argmax of their logits")
            top2 = steps.topk(2, dim=-1).values
            gaps = (top2[:, 0] - top2[:, 1]).tolist()
            close = [s for s, g in enumerate(gaps) if g <= MIN_GAP]
            if close:
                problems.append(f"prompt {i}: top-2 gap <= {MIN_GAP} at steps {close}")
            # Prefill's top-2 gaps matter as well when the C++ test compares argmax per position.
            pre2 = prefill.topk(2, dim=-1).values
            pre_close = [s for s, g in enumerate((pre2[:, 0] - pre2[:, 1]).tolist()) if g <= MIN_GAP]
            if pre_close:
                print(f"  note: prompt {i} prefill positions with top-2 gap <= {MIN_GAP}: {pre_close}")
            if specials & set(new_ids):
                problems.append(f"prompt {i}: greedy output contains a special id")
            step0 = (steps[0] - prefill[-1]).abs().max().item()
            if step0 > 1e-5:
                problems.append(f"prompt {i}: greedy step 0 differs from prefill's last row by {step0}")
            print(f"  prompt {i} (len {len(ids)}): logits range [{prefill.min():.2f}, {prefill.max():.2f}], "
                  f"min greedy top-2 gap {min(gaps):.4f}, step0-vs-prefill {step0:.2e}")
            tensors[f"prefill_logits.{i}"] = prefill
            tensors[f"greedy_logits.{i}"] = steps
            greedy.append(new_ids)
    return tensors, greedy, problems


def routing_summary(model, cfg, prompts):
    """Prints how decisive routing is (mean top-1 router probability) so a flat router is noticed."""
    probs = []
    hooks = []

    def hook(_module, _inp, out):
        probs.append(torch.softmax(out.float(), dim=-1))

    for name, module in model.named_modules():
        if name.endswith(("block_sparse_moe.gate", "mlp.gate")) and isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(input_ids=torch.tensor([prompts[-1]]), use_cache=False)
    for h in hooks:
        h.remove()
    if probs:
        top1 = torch.cat([p.reshape(-1, p.shape[-1]) for p in probs]).max(dim=-1).values
        print(f"  router: {len(probs)} MoE layers, mean top-1 prob {top1.mean():.3f} "
              f"(uniform would be {1.0 / probs[0].shape[-1]:.3f})")


def write_fixture(name, builder, base_seed, shard):
    for attempt in range(MAX_SEED_TRIES):
        seed = base_seed + attempt
        print(f"{name}: seed {seed}")
        model, cfg, gen = build(builder, seed)
        prompts = make_prompts(cfg.vocab_size, {cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id}, gen)
        routing_summary(model, cfg, prompts)
        clamp_summary(model, prompts)
        tensors, greedy, problems = run_reference(model, cfg, prompts)
        if not problems:
            break
        print("  WARNING, trying the next seed: " + "; ".join(problems))
    else:
        raise SystemExit(f"{name}: no seed in {MAX_SEED_TRIES} tries gave clear greedy steps")

    out_dir = os.path.join(OUT_ROOT, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    kwargs = {"safe_serialization": True}
    if shard:
        kwargs["max_shard_size"] = shard
    model.save_pretrained(out_dir, **kwargs)
    save_file(tensors, os.path.join(out_dir, "reference.safetensors"), metadata={"format": "pt"})
    ref = {
        "family": cfg.architectures[0] if cfg.architectures else type(model).__name__,
        "dtype": "float32",
        "seed": seed,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "new_tokens": NEW_TOKENS,
        "prompts": prompts,
        "greedy": greedy,
    }
    # One key per line, each list on one line: readable in a diff and trivially stable across runs.
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(ref[k])}" for k in sorted(ref))
    with open(os.path.join(out_dir, "reference.json"), "w", encoding="utf-8") as f:
        f.write("{\n" + body + "\n}\n")
    check_saved_names(name, out_dir)


def clamp_summary(model, prompts):
    """gpt-oss: how often the clamped SwiGLU clamps (gate above 7, up outside +-7), so a fixture that
    never reaches the limit is noticed."""
    stats = []
    hooks = []
    for name, module in model.named_modules():
        if name.endswith("mlp.experts") and hasattr(module, "gate_up_proj"):
            def hook(mod, inp, _out):
                x = inp[0].reshape(-1, mod.hidden_size)
                gu = torch.einsum("th,ehi->eti", x, mod.gate_up_proj) + mod.gate_up_proj_bias[:, None, :]
                stats.append(((gu[..., ::2] > mod.limit).float().mean().item(),
                              (gu[..., 1::2].abs() > mod.limit).float().mean().item()))
            hooks.append(module.register_forward_hook(hook))
    if not hooks:
        return
    with torch.no_grad():
        model(input_ids=torch.tensor([prompts[-1]]), use_cache=False)
    for h in hooks:
        h.remove()
    g = sum(s[0] for s in stats) / len(stats)
    u = sum(s[1] for s in stats) / len(stats)
    print(f"  clamped SwiGLU: gate > limit {g:.3%}, |up| > limit {u:.3%} (all experts, last prompt)")
    if g == 0 or u == 0:
        raise SystemExit("gpt_oss: the fixture never reaches the SwiGLU limit")


def check_saved_names(name, out_dir):
    """Fails if save_pretrained fused the experts: the C++ loader expects the hub's one-tensor-per-expert names."""
    from safetensors import safe_open

    names = []
    for fn in sorted(os.listdir(out_dir)):
        if fn.startswith("model") and fn.endswith(".safetensors"):
            with safe_open(os.path.join(out_dir, fn), "pt") as f:
                names.extend(f.keys())
    # ".experts." so that DeepSeek's (always one) "shared_experts." MLP is not taken for a fused expert.
    fused = [n for n in names if ".experts." in n and not n.split(".experts.")[1][:1].isdigit()]
    if fused and name not in FUSED_EXPERTS_OK:
        raise SystemExit(f"{name}: fused expert tensors saved: {fused[:4]}")
    print(f"  saved {len(names)} tensors to {os.path.relpath(out_dir, HERE)}")


def main(argv):
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    names = argv[1:] or list(FIXTURES)
    unknown = [n for n in names if n not in FIXTURES]
    if unknown:
        raise SystemExit(f"unknown fixture(s) {unknown}; known: {list(FIXTURES)}")
    for name in names:
        builder, seed, shard = FIXTURES[name]
        write_fixture(name, builder, seed, shard)


if __name__ == "__main__":
    main(sys.argv)
