#include "model/moe_transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/logging.h"
#include "model/gpt_oss_experts.h"
#include "model/mla_attention.h"
#include "model/weight_loader.h"
#include "ops/mla_ops.h"
#include "ops/ops.h"

namespace moe {

// ---- weights ---------------------------------------------------------------------------------

struct MoeTransformer::Layer {
    TensorView input_norm, post_norm;  // f32 [H]
    WeightView wq, wk, wv, wo;         // matrices
    TensorView bq, bk, bv;             // f32 or empty
    TensorView q_norm, k_norm;         // f32 or empty
    bool is_moe = false;
    TensorView router;  // [E, H], f32
    std::vector<WeightView> w_gate, w_up, w_down;
    WeightView shared_gate, shared_up, shared_down;  // Qwen2-MoE
    TensorView shared_expert_gate;                   // f32 [1, H]
    WeightView mlp_gate, mlp_up, mlp_down;           // dense layers
    int64_t index = 0;
    // Expert parallelism: where this layer's experts live; w_gate/w_up/w_down are indexed by
    // physical slot and empty for the slots of other ranks. Null without expert parallelism.
    const ExpertPlacement* placement = nullptr;
    MlaWeights mla;          // MLA attention (instead of wq..wo)
    TensorView router_bias;  // DeepSeek-V3 e_score_correction_bias, f32 [E]
    // gpt-oss: o_proj bias, sinks, the router's logit bias and the experts' biases (per slot).
    TensorView bo, sinks;          // f32 [H], [nh]
    TensorView router_logit_bias;  // f32 [E]
    std::vector<TensorView> b_gate, b_up, b_down;
};

namespace {

struct Names {
    std::string moe_prefix;  // "block_sparse_moe" (Mixtral) or "mlp"
    std::string gate, up, down;
};

Names expert_names(ModelFamily family) {
    if (family == ModelFamily::kMixtral) return {"block_sparse_moe", "w1", "w3", "w2"};
    return {"mlp", "gate_proj", "up_proj", "down_proj"};
}

}  // namespace

MoeTransformer::~MoeTransformer() = default;

int64_t MoeTransformer::owned_weight_bytes() const {
    int64_t n = 0;
    for (const auto& b : owned_) n += static_cast<int64_t>(b.size());
    for (const auto& w : prepared_) n += static_cast<int64_t>(w->bytes());
    return n;
}

StatusOr<std::unique_ptr<MoeTransformer>> MoeTransformer::create(const ModelConfig& config,
                                                                 std::shared_ptr<const WeightSource> weights,
                                                                 Backend& backend, const ModelLoadOptions& options) {
    if (!config.supported)
        return unimplemented(config.architecture + " cannot be served by this build: " + config.unsupported_reason);
    std::unique_ptr<MoeTransformer> m(new MoeTransformer());
    m->config_ = config;
    m->source_ = std::move(weights);
    m->backend_ = &backend;
    MOE_RETURN_IF_ERROR(m->setup_expert_parallel(options.expert_parallel));
    MOE_RETURN_IF_ERROR(m->load_weights(options).with_context(m->source_->describe()));
    if (m->ep_comm_ != nullptr && m->ep_comm_->size() > 1) {
        // NOTE: bf16 on the wire only where the expert kernels round their input to bf16 anyway:
        // the rows they compute with are then bitwise the ones they would have had locally.
        const bool bf16_wire =
            m->matrix_dtype_ == DType::kBF16 && backend.moe_experts_round_input_to_bf16(DType::kBF16);
        m->ep_ = std::make_unique<ExpertExchange>(*m->ep_comm_, config.hidden_size, bf16_wire);
        log::model().info("expert parallelism: rank {} of {} ({}), {} on the wire", m->ep_comm_->rank(),
                          m->ep_comm_->size(), m->ep_comm_->kind(), bf16_wire ? "bf16" : "f32");
    }
    if (config.is_mla()) {
        MOE_ASSIGN_OR_RETURN(m->mla_, MlaAttention::create(config, backend, options.mla_path));
    } else if (config.yarn.enabled) {
        const MlaRope rope = rope_frequencies(config, config.head_dim, config.head_dim);
        const size_t bytes = rope.inv_freq.size() * 4;
        MOE_ASSIGN_OR_RETURN(m->rope_inv_freq_, DeviceBuffer::allocate(backend, bytes));
        MOE_RETURN_IF_ERROR(
            backend.copy(m->rope_inv_freq_.data(), backend.device(), rope.inv_freq.data(), Device{}, bytes));
        m->rope_attention_factor_ = rope.attention_factor;
    }
    if (config.gpt_oss.enabled) {
        m->expert_activation_ = ExpertActivation::kClampedSwiGLU;
        m->swiglu_alpha_ = static_cast<float>(config.gpt_oss.swiglu_alpha);
        m->swiglu_limit_ = static_cast<float>(config.gpt_oss.swiglu_limit);
    }
    // Every tensor the forward reads is in backend memory now: let the source (a file mapping)
    // go, so that nothing done to the file later reaches the server (#18 D).
    m->source_.reset();
    return m;
}

// The group and each MoE layer's placement, checked against the config before any weight is read.
Status MoeTransformer::setup_expert_parallel(const ExpertParallelOptions& ep) {
    const ModelConfig& c = config_;
    ep_comm_ = ep.comm;
    ep_placement_.assign(static_cast<size_t>(c.num_layers), ExpertPlacement{});
    if (ep_comm_ == nullptr) return ok_status();
    if (backend_->device().kind != DeviceKind::kCpu)
        return unimplemented(
            "expert parallelism runs on the CPU backend only in this build (the exchange of device "
            "buffers through NCCL is not built)");
    const int N = ep_comm_->size();
    const size_t given = ep.placement.size();
    if (given != 0 && given != 1 && given != static_cast<size_t>(c.num_layers))
        return invalid_argument("expert placement: " + std::to_string(given) + " layers given, the model has " +
                                std::to_string(c.num_layers) + " (give one for all layers or one per layer)");
    expert_load_.assign(static_cast<size_t>(c.num_layers), {});
    for (int64_t l = 0; l < c.num_layers; ++l) {
        if (!c.layer_is_moe[static_cast<size_t>(l)]) continue;
        expert_load_[static_cast<size_t>(l)].assign(static_cast<size_t>(c.num_experts), 0);
        ExpertPlacement& pl = ep_placement_[static_cast<size_t>(l)];
        if (given == 0) {
            MOE_ASSIGN_OR_RETURN(pl, ExpertPlacement::contiguous(c.num_experts, N));
        } else {
            pl = ep.placement[given == 1 ? 0 : static_cast<size_t>(l)];
        }
        if (pl.world_size != N || pl.num_experts != c.num_experts)
            return invalid_argument("expert placement of layer " + std::to_string(l) + ": " +
                                    std::to_string(pl.num_experts) + " experts over " + std::to_string(pl.world_size) +
                                    " ranks, but the model has " + std::to_string(c.num_experts) +
                                    " experts and the group " + std::to_string(N) + " ranks");
    }
    return ok_status();
}

Status MoeTransformer::load_weights(const ModelLoadOptions& options) {
    const ModelConfig& c = config_;
    // The matrices' dtype: as the embedding is stored unless overridden.
    MOE_ASSIGN_OR_RETURN(WeightRef embed_ref, source_->get("model.embed_tokens.weight"));
    switch (options.weight_dtype) {
        case WeightDType::kF32:
            matrix_dtype_ = DType::kF32;
            break;
        case WeightDType::kBF16:
            matrix_dtype_ = DType::kBF16;
            break;
        case WeightDType::kAuto:
            matrix_dtype_ = embed_ref.dtype == DType::kBF16 ? DType::kBF16 : DType::kF32;
            break;
    }
    const DType mat = matrix_dtype_;
    const DType f32 = DType::kF32;
    WeightLoader wl(*source_, *backend_, owned_, prepared_);
    const int64_t H = c.hidden_size, nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim;

    if (c.tie_word_embeddings && !source_->has("lm_head.weight")) {
        // One tensor, two uses: the backend prepares it as lm_head; the embedding reads the same
        // prepared copy when the backend kept its rows plain, else a copy of its own.
        MOE_ASSIGN_OR_RETURN(lm_head_, wl.matrix("model.embed_tokens.weight", {c.vocab_size, H}, mat));
        if (lm_head_.tensor.data != nullptr) {
            embed_ = lm_head_.tensor;
        } else {
            MOE_ASSIGN_OR_RETURN(embed_, wl.get("model.embed_tokens.weight", {c.vocab_size, H}, mat));
        }
    } else {
        MOE_ASSIGN_OR_RETURN(embed_, wl.get("model.embed_tokens.weight", {c.vocab_size, H}, mat));
        MOE_ASSIGN_OR_RETURN(lm_head_, wl.matrix("lm_head.weight", {c.vocab_size, H}, mat));
    }
    MOE_ASSIGN_OR_RETURN(final_norm_, wl.get("model.norm.weight", {H}, f32));
    const Names en = expert_names(c.family);
    layers_.resize(static_cast<size_t>(c.num_layers));
    for (int64_t l = 0; l < c.num_layers; ++l) {
        Layer& L = layers_[static_cast<size_t>(l)];
        L.index = l;
        const std::string p = "model.layers." + std::to_string(l) + ".";
        MOE_ASSIGN_OR_RETURN(L.input_norm, wl.get(p + "input_layernorm.weight", {H}, f32));
        MOE_ASSIGN_OR_RETURN(L.post_norm, wl.get(p + "post_attention_layernorm.weight", {H}, f32));
        if (c.is_mla()) {
            MOE_ASSIGN_OR_RETURN(L.mla, MlaAttention::load_weights(wl, c, p, mat));
        } else {
            MOE_ASSIGN_OR_RETURN(L.wq, wl.matrix(p + "self_attn.q_proj.weight", {nh * hd, H}, mat));
            MOE_ASSIGN_OR_RETURN(L.wk, wl.matrix(p + "self_attn.k_proj.weight", {nkv * hd, H}, mat));
            MOE_ASSIGN_OR_RETURN(L.wv, wl.matrix(p + "self_attn.v_proj.weight", {nkv * hd, H}, mat));
            MOE_ASSIGN_OR_RETURN(L.wo, wl.matrix(p + "self_attn.o_proj.weight", {H, nh * hd}, mat));
        }
        if (c.attention_bias) {
            MOE_ASSIGN_OR_RETURN(L.bq, wl.get(p + "self_attn.q_proj.bias", {nh * hd}, f32));
            MOE_ASSIGN_OR_RETURN(L.bk, wl.get(p + "self_attn.k_proj.bias", {nkv * hd}, f32));
            MOE_ASSIGN_OR_RETURN(L.bv, wl.get(p + "self_attn.v_proj.bias", {nkv * hd}, f32));
        }
        if (c.gpt_oss.enabled) {
            MOE_ASSIGN_OR_RETURN(L.bo, wl.get(p + "self_attn.o_proj.bias", {H}, f32));
            MOE_ASSIGN_OR_RETURN(L.sinks, wl.get(p + "self_attn.sinks", {nh}, f32));
        }
        if (c.qk_norm == QkNorm::kPerHead) {
            MOE_ASSIGN_OR_RETURN(L.q_norm, wl.get(p + "self_attn.q_norm.weight", {hd}, f32));
            MOE_ASSIGN_OR_RETURN(L.k_norm, wl.get(p + "self_attn.k_norm.weight", {hd}, f32));
        } else if (c.qk_norm == QkNorm::kFull) {
            MOE_ASSIGN_OR_RETURN(L.q_norm, wl.get(p + "self_attn.q_norm.weight", {nh * hd}, f32));
            MOE_ASSIGN_OR_RETURN(L.k_norm, wl.get(p + "self_attn.k_norm.weight", {nkv * hd}, f32));
        }
        L.is_moe = c.layer_is_moe[static_cast<size_t>(l)];
        if (L.is_moe) {
            const std::string mp = p + en.moe_prefix + ".";
            const int64_t E = c.num_experts, I = c.moe_intermediate_size;
            // NOTE: the router stays f32 whatever the matrices are: it is small (E x H), and top-k is
            // discontinuous, so bf16 rounding of its logits flips near-tied experts and moves the
            // output far more than rounding anywhere else does.
            const std::string router = c.gpt_oss.enabled ? "router" : "gate";
            MOE_ASSIGN_OR_RETURN(L.router, wl.get(mp + router + ".weight", {E, H}, f32));
            if (c.gpt_oss.enabled) {
                MOE_ASSIGN_OR_RETURN(L.router_logit_bias, wl.get(mp + "router.bias", {E}, f32));
            }
            if (c.group_routing.enabled) {
                MOE_ASSIGN_OR_RETURN(L.router_bias, wl.get(mp + "gate.e_score_correction_bias", {E}, f32));
            }
            // Under expert parallelism: one entry per physical slot, and only this rank's slots
            // are read from the source at all (another rank's experts never touch this rank's
            // memory: not copied, not paged in).
            const ExpertPlacement& pl = ep_placement_[static_cast<size_t>(l)];
            const bool ep = ep_comm_ != nullptr;
            if (ep) L.placement = &pl;
            const int64_t P = ep ? pl.num_physical() : E;
            L.w_gate.resize(static_cast<size_t>(P));
            L.w_up.resize(static_cast<size_t>(P));
            L.w_down.resize(static_cast<size_t>(P));
            if (c.gpt_oss.enabled) {
                std::vector<int64_t> slot_expert(static_cast<size_t>(P), -1);
                for (int64_t s = 0; s < P; ++s)
                    if (!ep || pl.rank_of[static_cast<size_t>(s)] == ep_comm_->rank())
                        slot_expert[static_cast<size_t>(s)] = ep ? pl.logical_of[static_cast<size_t>(s)] : s;
                GptOssExperts ge;
                MOE_RETURN_IF_ERROR(load_gpt_oss_experts(wl, c, mp + "experts.", slot_expert, mat, &ge));
                L.w_gate = std::move(ge.gate);
                L.w_up = std::move(ge.up);
                L.w_down = std::move(ge.down);
                L.b_gate = std::move(ge.b_gate);
                L.b_up = std::move(ge.b_up);
                L.b_down = std::move(ge.b_down);
            }
            for (int64_t s = 0; !c.gpt_oss.enabled && s < P; ++s) {
                if (ep && pl.rank_of[static_cast<size_t>(s)] != ep_comm_->rank()) continue;
                const int64_t e = ep ? pl.logical_of[static_cast<size_t>(s)] : s;
                const std::string ep_name = mp + "experts." + std::to_string(e) + ".";
                const size_t i = static_cast<size_t>(s);
                MOE_ASSIGN_OR_RETURN(L.w_gate[i], wl.matrix(ep_name + en.gate + ".weight", {I, H}, mat));
                MOE_ASSIGN_OR_RETURN(L.w_up[i], wl.matrix(ep_name + en.up + ".weight", {I, H}, mat));
                MOE_ASSIGN_OR_RETURN(L.w_down[i], wl.matrix(ep_name + en.down + ".weight", {H, I}, mat));
            }
            if (c.shared_expert_intermediate_size > 0) {
                // Qwen2-MoE: "shared_expert" behind a sigmoid gate; DeepSeek-V3: "shared_experts"
                // (n_shared_experts of them as one MLP), always on.
                const bool gated = c.family == ModelFamily::kQwen2Moe;
                const std::string sp = mp + (gated ? "shared_expert." : "shared_experts.");
                const int64_t SI = c.shared_expert_intermediate_size;
                MOE_ASSIGN_OR_RETURN(L.shared_gate, wl.matrix(sp + "gate_proj.weight", {SI, H}, mat));
                MOE_ASSIGN_OR_RETURN(L.shared_up, wl.matrix(sp + "up_proj.weight", {SI, H}, mat));
                MOE_ASSIGN_OR_RETURN(L.shared_down, wl.matrix(sp + "down_proj.weight", {H, SI}, mat));
                if (gated) {
                    MOE_ASSIGN_OR_RETURN(L.shared_expert_gate, wl.get(mp + "shared_expert_gate.weight", {1, H}, f32));
                }
            }
        } else {
            const int64_t I = c.intermediate_size;
            MOE_ASSIGN_OR_RETURN(L.mlp_gate, wl.matrix(p + "mlp.gate_proj.weight", {I, H}, mat));
            MOE_ASSIGN_OR_RETURN(L.mlp_up, wl.matrix(p + "mlp.up_proj.weight", {I, H}, mat));
            MOE_ASSIGN_OR_RETURN(L.mlp_down, wl.matrix(p + "mlp.down_proj.weight", {H, I}, mat));
        }
    }
    return ok_status();
}

// ---- workspace -------------------------------------------------------------------------------

// Activation buffers for one step, grown (never shrunk) to the largest batch seen.
struct MoeTransformer::Workspace {
    Backend* be = nullptr;
    int64_t capacity_tokens = 0;
    int64_t capacity_seqs = 0;
    int64_t capacity_blocks = 0;
    // [T, ...] activations
    DeviceBuffer h, x, q, k, v, attn, y, mlp_gate, mlp_up, router_logits, topk_ids, topk_w, x_perm, out_perm, row_of,
        token_of, offsets, shared_logit, ids, positions, slots, final_rows, logits;
    // per sequence
    DeviceBuffer query_start, kv_lens, block_tables;
    // Host-side step metadata, kept across steps so a steady decode step allocates nothing.
    std::vector<int32_t> host_ids, host_positions, host_query_start, host_kv_lens, host_tables;
    std::vector<int64_t> host_slots, host_logit_rows;

    Status reserve(DeviceBuffer& b, size_t bytes) {
        if (b.size() >= bytes && b.data() != nullptr) return ok_status();
        MOE_ASSIGN_OR_RETURN(b, DeviceBuffer::allocate(*be, std::max<size_t>(bytes, 64)));
        return ok_status();
    }
};

// ---- forward ---------------------------------------------------------------------------------

namespace {

TensorView view(const DeviceBuffer& b, DType dtype, std::initializer_list<int64_t> shape, Device dev) {
    return TensorView::make(b.data(), dtype, shape, dev);
}

}  // namespace

// MLA models: the step's positions, slots and tables, which every MLA layer of the step reads.
Status MoeTransformer::begin_mla_step(const StepShape& shape, const KvCache& cache) {
    if (!mla_ || shape.num_tokens == 0) return ok_status();
    const Workspace& w = *ws_;
    const Device d = backend_->device();
    const int64_t S = shape.num_seqs;
    MOE_RETURN_IF_ERROR(mla_->begin_step({.positions = view(w.positions, DType::kI32, {shape.num_tokens}, d),
                                          .slots = view(w.slots, DType::kI64, {shape.num_tokens}, d),
                                          .block_tables = view(w.block_tables, DType::kI32, {S, shape.max_blocks}, d),
                                          .query_start = view(w.query_start, DType::kI32, {S + 1}, d),
                                          .kv_lens = view(w.kv_lens, DType::kI32, {S}, d),
                                          .host_query_start = w.host_query_start,
                                          .host_kv_lens = w.host_kv_lens,
                                          .host_tables = w.host_tables,
                                          .max_blocks = shape.max_blocks,
                                          .block_size = cache.block_size()}));
    return ok_status();
}

StatusOr<ForwardOutput> MoeTransformer::forward(const BatchView& batch, KvCache& cache) {
    if (ep_) return forward_expert_parallel(batch, cache);
    MOE_ASSIGN_OR_RETURN(const StepShape shape, check_batch(batch, cache));
    if (shape.num_seqs == 0) return ForwardOutput{.logits = {}, .row_start = {0}, .vocab_size = config_.vocab_size};
    if (!ws_) {
        ws_ = std::make_unique<Workspace>();
        ws_->be = backend_;
    }
    ForwardOutput out;
    prepare_step_metadata(batch, cache.block_size(), shape, out);
    MOE_RETURN_IF_ERROR(reserve_workspace(shape));
    MOE_RETURN_IF_ERROR(upload_step_metadata(shape));
    MOE_RETURN_IF_ERROR(begin_mla_step(shape, cache));

    Backend& be = *backend_;
    const Device dev = be.device();
    const int64_t T = shape.num_tokens, H = config_.hidden_size;
    MOE_RETURN_IF_ERROR(ops::run(be, EmbeddingArgs{.ids = view(ws_->ids, DType::kI32, {T}, dev),
                                                   .table = embed_,
                                                   .out = view(ws_->h, DType::kF32, {T, H}, dev)}));
    for (int64_t l = 0; l < config_.num_layers; ++l)
        MOE_RETURN_IF_ERROR(layer_forward(l, cache, T).with_context("layer " + std::to_string(l)));
    MOE_RETURN_IF_ERROR(final_logits(shape, out));
    return out;
}

// ---- forward steps ---------------------------------------------------------------------------

// Host-side validation: nothing is written (cache, workspace) before all of it passes.
StatusOr<MoeTransformer::StepShape> MoeTransformer::check_batch(const BatchView& batch, const KvCache& cache) const {
    const ModelConfig& c = config_;
    const int64_t S = static_cast<int64_t>(batch.sequences.size());
    if (cache.num_layers() != c.num_layers) return invalid_argument("forward: kv cache has wrong layer count");
    const KvLayout want = kv_layout(c);
    if (cache.layout().num_pools != want.num_pools || cache.layout().num_heads != want.num_heads ||
        cache.layout().head_dim != want.head_dim)
        return invalid_argument("forward: kv cache holds " + cache.layout().describe() + ", the model needs " +
                                want.describe());
    const int64_t bs = cache.block_size();
    StepShape shape{.num_seqs = S, .num_tokens = 0, .num_logit_rows = 0, .max_blocks = 1};
    if (S == 0) return shape;  // an empty step (an idle rank of an expert-parallel group)
    for (int64_t s = 0; s < S; ++s) {
        const SequenceInput& in = batch.sequences[static_cast<size_t>(s)];
        const int64_t n = static_cast<int64_t>(in.token_ids.size());
        if (n == 0) return invalid_argument("forward: sequence " + std::to_string(s) + " has no new tokens");
        if (in.num_cached < 0) return invalid_argument("forward: sequence " + std::to_string(s) + " num_cached < 0");
        const int64_t kv_len = in.num_cached + n;
        if (c.max_position_embeddings > 0 && kv_len > c.max_position_embeddings)
            return invalid_argument("forward: sequence " + std::to_string(s) + " reaches position " +
                                    std::to_string(kv_len) + " > max_position_embeddings " +
                                    std::to_string(c.max_position_embeddings));
        const int64_t need_blocks = (kv_len + bs - 1) / bs;
        if (static_cast<int64_t>(in.block_table.size()) < need_blocks)
            return invalid_argument("forward: sequence " + std::to_string(s) + " needs " + std::to_string(need_blocks) +
                                    " blocks for " + std::to_string(kv_len) + " tokens, block table has " +
                                    std::to_string(in.block_table.size()));
        for (int64_t i = 0; i < need_blocks; ++i) {
            const int32_t b = in.block_table[static_cast<size_t>(i)];
            if (b < 0 || b >= cache.num_blocks())
                return invalid_argument("forward: sequence " + std::to_string(s) + " block table entry " +
                                        std::to_string(i) + " = " + std::to_string(b) + " outside [0, " +
                                        std::to_string(cache.num_blocks()) + ")");
        }
        for (int32_t id : in.token_ids)
            if (id < 0 || id >= c.vocab_size)
                return invalid_argument("forward: sequence " + std::to_string(s) + " token id " + std::to_string(id) +
                                        " outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
        shape.num_tokens += n;
        shape.num_logit_rows += in.all_logits ? n : 1;
        shape.max_blocks = std::max(shape.max_blocks, need_blocks);
    }
    return shape;
}

// Token ids, positions, KV slots, query starts, KV lengths, block tables and the rows that get
// logits, on the host (kept across steps so a steady decode step allocates nothing); out's
// row_start.
void MoeTransformer::prepare_step_metadata(const BatchView& batch, int64_t bs, const StepShape& shape,
                                           ForwardOutput& out) {
    Workspace& w = *ws_;
    const int64_t S = shape.num_seqs, T = shape.num_tokens;
    w.host_ids.resize(static_cast<size_t>(T));
    w.host_positions.resize(static_cast<size_t>(T));
    w.host_slots.resize(static_cast<size_t>(T));
    w.host_query_start.resize(static_cast<size_t>(S + 1));
    w.host_kv_lens.resize(static_cast<size_t>(S));
    w.host_tables.assign(static_cast<size_t>(S * shape.max_blocks), 0);
    w.host_logit_rows.clear();  // token index of each logits row
    out.row_start.reserve(static_cast<size_t>(S + 1));
    out.vocab_size = config_.vocab_size;
    out.row_start.push_back(0);
    int64_t t = 0;
    for (int64_t s = 0; s < S; ++s) {
        const SequenceInput& in = batch.sequences[static_cast<size_t>(s)];
        const int64_t n = static_cast<int64_t>(in.token_ids.size());
        w.host_query_start[static_cast<size_t>(s)] = static_cast<int32_t>(t);
        w.host_kv_lens[static_cast<size_t>(s)] = static_cast<int32_t>(in.num_cached + n);
        const int64_t need_blocks = (in.num_cached + n + bs - 1) / bs;
        for (int64_t i = 0; i < need_blocks; ++i)
            w.host_tables[static_cast<size_t>(s * shape.max_blocks + i)] = in.block_table[static_cast<size_t>(i)];
        for (int64_t j = 0; j < n; ++j, ++t) {
            const int64_t pos = in.num_cached + j;
            w.host_ids[static_cast<size_t>(t)] = in.token_ids[static_cast<size_t>(j)];
            w.host_positions[static_cast<size_t>(t)] = static_cast<int32_t>(pos);
            w.host_slots[static_cast<size_t>(t)] =
                int64_t{in.block_table[static_cast<size_t>(pos / bs)]} * bs + pos % bs;
            if (in.all_logits || j == n - 1) w.host_logit_rows.push_back(t);
        }
        out.row_start.push_back(static_cast<int64_t>(w.host_logit_rows.size()));
    }
    w.host_query_start[static_cast<size_t>(S)] = static_cast<int32_t>(T);
}

// Activation buffers for this step's shape (grown, never shrunk).
Status MoeTransformer::reserve_workspace(const StepShape& shape) {
    const ModelConfig& c = config_;
    Workspace& w = *ws_;
    const int64_t T = shape.num_tokens, S = shape.num_seqs, R = shape.num_logit_rows;
    const int64_t H = c.hidden_size, nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim;
    const int64_t K = std::max<int64_t>(1, c.num_experts_per_tok);
    int64_t E = std::max<int64_t>(1, c.num_experts);
    for (const ExpertPlacement& pl : ep_placement_) E = std::max(E, pl.num_physical());  // slots
    const int64_t I =
        std::max({c.intermediate_size, c.moe_intermediate_size, c.shared_expert_intermediate_size, int64_t{1}});
    const auto f = [](int64_t n) { return static_cast<size_t>(n) * 4; };
    MOE_RETURN_IF_ERROR(w.reserve(w.h, f(T * H)));
    MOE_RETURN_IF_ERROR(w.reserve(w.x, f(T * H)));
    MOE_RETURN_IF_ERROR(w.reserve(w.y, f(T * H)));
    MOE_RETURN_IF_ERROR(w.reserve(w.q, f(T * nh * hd)));
    MOE_RETURN_IF_ERROR(w.reserve(w.attn, f(T * nh * hd)));
    MOE_RETURN_IF_ERROR(w.reserve(w.k, f(T * nkv * hd)));
    MOE_RETURN_IF_ERROR(w.reserve(w.v, f(T * nkv * hd)));
    MOE_RETURN_IF_ERROR(w.reserve(w.mlp_gate, f(T * K * I)));
    MOE_RETURN_IF_ERROR(w.reserve(w.mlp_up, f(T * I)));
    MOE_RETURN_IF_ERROR(w.reserve(w.router_logits, f(T * E)));
    MOE_RETURN_IF_ERROR(w.reserve(w.topk_ids, f(T * K)));
    MOE_RETURN_IF_ERROR(w.reserve(w.topk_w, f(T * K)));
    MOE_RETURN_IF_ERROR(w.reserve(w.x_perm, f(T * K * H)));
    MOE_RETURN_IF_ERROR(w.reserve(w.out_perm, f(T * K * H)));
    MOE_RETURN_IF_ERROR(w.reserve(w.row_of, f(T * K)));
    MOE_RETURN_IF_ERROR(w.reserve(w.token_of, f(T * K)));
    MOE_RETURN_IF_ERROR(w.reserve(w.offsets, f(E + 1)));
    MOE_RETURN_IF_ERROR(w.reserve(w.shared_logit, f(T)));
    MOE_RETURN_IF_ERROR(w.reserve(w.ids, f(T)));
    MOE_RETURN_IF_ERROR(w.reserve(w.positions, f(T)));
    MOE_RETURN_IF_ERROR(w.reserve(w.slots, static_cast<size_t>(T) * 8));
    MOE_RETURN_IF_ERROR(w.reserve(w.query_start, f(S + 1)));
    MOE_RETURN_IF_ERROR(w.reserve(w.kv_lens, f(S)));
    MOE_RETURN_IF_ERROR(w.reserve(w.block_tables, f(S * shape.max_blocks)));
    MOE_RETURN_IF_ERROR(w.reserve(w.final_rows, f(R * H)));
    return w.reserve(w.logits, f(R * c.vocab_size));
}

// The host metadata to the device; meta_ for the layers.
Status MoeTransformer::upload_step_metadata(const StepShape& shape) {
    Backend& be = *backend_;
    Workspace& w = *ws_;
    const Device dev = be.device(), host{};
    const int64_t T = shape.num_tokens, S = shape.num_seqs;
    const auto f = [](int64_t n) { return static_cast<size_t>(n) * 4; };
    MOE_RETURN_IF_ERROR(be.copy(w.ids.data(), dev, w.host_ids.data(), host, f(T)));
    MOE_RETURN_IF_ERROR(be.copy(w.positions.data(), dev, w.host_positions.data(), host, f(T)));
    MOE_RETURN_IF_ERROR(be.copy(w.slots.data(), dev, w.host_slots.data(), host, static_cast<size_t>(T) * 8));
    MOE_RETURN_IF_ERROR(be.copy(w.query_start.data(), dev, w.host_query_start.data(), host, f(S + 1)));
    MOE_RETURN_IF_ERROR(be.copy(w.kv_lens.data(), dev, w.host_kv_lens.data(), host, f(S)));
    MOE_RETURN_IF_ERROR(be.copy(w.block_tables.data(), dev, w.host_tables.data(), host, f(S * shape.max_blocks)));
    meta_.num_seqs = S;
    meta_.max_blocks = shape.max_blocks;
    return ok_status();
}

// The rows that get logits: gathered, final norm, lm_head, to the host.
Status MoeTransformer::final_logits(const StepShape& shape, ForwardOutput& out) {
    const ModelConfig& c = config_;
    Backend& be = *backend_;
    Workspace& w = *ws_;
    const Device dev = be.device(), host{};
    const int64_t R = shape.num_logit_rows, H = c.hidden_size;
    const size_t row_bytes = static_cast<size_t>(H) * 4;
    for (int64_t r = 0; r < R; ++r) {
        const size_t src_row = static_cast<size_t>(w.host_logit_rows[static_cast<size_t>(r)]);
        MOE_RETURN_IF_ERROR(be.copy(static_cast<char*>(w.final_rows.data()) + static_cast<size_t>(r) * row_bytes, dev,
                                    static_cast<const char*>(w.h.data()) + src_row * row_bytes, dev, row_bytes));
    }
    const TensorView rows = view(w.final_rows, DType::kF32, {R, H}, dev);
    MOE_RETURN_IF_ERROR(
        ops::run(be, RmsNormArgs{.x = rows, .weight = final_norm_, .out = rows, .eps = c.rms_norm_eps}));
    const TensorView logits = view(w.logits, DType::kF32, {R, c.vocab_size}, dev);
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = rows, .w = lm_head_, .bias = {}, .y = logits}));
    out.logits.resize(static_cast<size_t>(R * c.vocab_size));
    MOE_RETURN_IF_ERROR(
        be.copy(out.logits.data(), host, w.logits.data(), dev, static_cast<size_t>(R * c.vocab_size) * 4));
    return be.synchronize();
}

Status MoeTransformer::layer_forward(int64_t layer_idx, KvCache& cache, int64_t T) {
    const Layer& L = layers_[static_cast<size_t>(layer_idx)];
    if (T == 0) return L.is_moe && ep_ ? moe_experts_parallel(L, 0) : ok_status();  // an idle rank's step
    MOE_RETURN_IF_ERROR(attention_block(L, layer_idx, cache, T));
    const Device dev = backend_->device();
    const int64_t H = config_.hidden_size;
    const TensorView h = view(ws_->h, DType::kF32, {T, H}, dev);
    const TensorView x = view(ws_->x, DType::kF32, {T, H}, dev);
    MOE_RETURN_IF_ERROR(
        ops::run(*backend_, RmsNormArgs{.x = h, .weight = L.post_norm, .out = x, .eps = config_.rms_norm_eps}));
    if (!L.is_moe) return dense_mlp(L, T);
    return moe_block(L, T);
}

// h += o_proj(attention(rope(norm(h) * {q, k, v}))), the new keys and values written to the cache.
MoeTransformer::Residual MoeTransformer::residual(int64_t T) const {
    const int64_t H = config_.hidden_size;
    const Device dev = backend_->device();
    return {view(ws_->h, DType::kF32, {T, H}, dev), view(ws_->x, DType::kF32, {T, H}, dev),
            view(ws_->y, DType::kF32, {T, H}, dev)};
}

Status MoeTransformer::attention_block(const Layer& L, int64_t layer_idx, KvCache& cache, int64_t T) {
    const ModelConfig& c = config_;
    Backend& be = *backend_;
    Workspace& w = *ws_;
    const Device dev = be.device();
    const int64_t nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim;
    const int64_t S = meta_.num_seqs;
    const float eps = c.rms_norm_eps;
    const auto [h, x, y] = residual(T);
    MOE_RETURN_IF_ERROR(ops::run(be, RmsNormArgs{.x = h, .weight = L.input_norm, .out = x, .eps = eps}));
    if (mla_) return mla_->forward(L.mla, x, h, cache.latent(layer_idx));
    const TensorView q2 = view(w.q, DType::kF32, {T, nh * hd}, dev);
    const TensorView k2 = view(w.k, DType::kF32, {T, nkv * hd}, dev);
    const TensorView v2 = view(w.v, DType::kF32, {T, nkv * hd}, dev);
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = L.wq, .bias = L.bq, .y = q2}));
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = L.wk, .bias = L.bk, .y = k2}));
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = L.wv, .bias = L.bv, .y = v2}));
    if (c.qk_norm == QkNorm::kPerHead) {
        const TensorView qh = view(w.q, DType::kF32, {T * nh, hd}, dev);
        const TensorView kh = view(w.k, DType::kF32, {T * nkv, hd}, dev);
        MOE_RETURN_IF_ERROR(ops::run(be, RmsNormArgs{.x = qh, .weight = L.q_norm, .out = qh, .eps = eps}));
        MOE_RETURN_IF_ERROR(ops::run(be, RmsNormArgs{.x = kh, .weight = L.k_norm, .out = kh, .eps = eps}));
    } else if (c.qk_norm == QkNorm::kFull) {
        MOE_RETURN_IF_ERROR(ops::run(be, RmsNormArgs{.x = q2, .weight = L.q_norm, .out = q2, .eps = eps}));
        MOE_RETURN_IF_ERROR(ops::run(be, RmsNormArgs{.x = k2, .weight = L.k_norm, .out = k2, .eps = eps}));
    }
    const TensorView q3 = view(w.q, DType::kF32, {T, nh, hd}, dev);
    const TensorView k3 = view(w.k, DType::kF32, {T, nkv, hd}, dev);
    const TensorView v3 = view(w.v, DType::kF32, {T, nkv, hd}, dev);
    // YaRN (gpt-oss): the frequency table transformers computes, made at load.
    MOE_RETURN_IF_ERROR(ops::run(
        be,
        RopeArgs{.q = q3,
                 .k = k3,
                 .positions = view(w.positions, DType::kI32, {T}, dev),
                 .theta = c.rope_theta,
                 .rotary_dim = static_cast<int>(c.rotary_dim),
                 .inv_freq = c.yarn.enabled ? view(rope_inv_freq_, DType::kF32, {c.rotary_dim / 2}, dev) : TensorView{},
                 .attention_factor = rope_attention_factor_}));
    MOE_RETURN_IF_ERROR(ops::run(be, KvWriteArgs{.k = k3,
                                                 .v = v3,
                                                 .slot_mapping = view(w.slots, DType::kI64, {T}, dev),
                                                 .k_cache = cache.k(layer_idx),
                                                 .v_cache = cache.v(layer_idx)}));
    const TensorView attn3 = view(w.attn, DType::kF32, {T, nh, hd}, dev);
    MOE_RETURN_IF_ERROR(
        ops::run(be, AttentionArgs{.q = q3,
                                   .k_cache = cache.k(layer_idx),
                                   .v_cache = cache.v(layer_idx),
                                   .block_tables = view(w.block_tables, DType::kI32, {S, meta_.max_blocks}, dev),
                                   .query_start = view(w.query_start, DType::kI32, {S + 1}, dev),
                                   .kv_lens = view(w.kv_lens, DType::kI32, {S}, dev),
                                   .out = attn3,
                                   .scale = 1.0f / std::sqrt(static_cast<float>(hd)),
                                   .sliding_window = static_cast<int>(c.window_of(layer_idx)),
                                   .sinks = L.sinks}));
    MOE_RETURN_IF_ERROR(ops::run(
        be,
        GemmArgs{
            .x = view(w.attn, DType::kF32, {T, nh * hd}, dev), .w = L.wo, .bias = L.bo, .y = h, .accumulate = true}));
    return ok_status();
}

// h += down(silu(x * gate) * (x * up)), x the post-attention norm of h.
Status MoeTransformer::dense_mlp(const Layer& L, int64_t T) {
    const ModelConfig& c = config_;
    Backend& be = *backend_;
    Workspace& w = *ws_;
    const Device dev = be.device();
    const auto [h, x, y] = residual(T);
    const int64_t I = c.intermediate_size;
    const TensorView g = view(w.mlp_gate, DType::kF32, {T, I}, dev);
    const TensorView u = view(w.mlp_up, DType::kF32, {T, I}, dev);
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = L.mlp_gate, .bias = {}, .y = g}));
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = L.mlp_up, .bias = {}, .y = u}));
    MOE_RETURN_IF_ERROR(ops::run(be, SiluMulArgs{.gate = g, .up = u, .out = g}));
    return ops::run(be, GemmArgs{.x = g, .w = L.mlp_down, .bias = {}, .y = h, .accumulate = true});
}

// The routed experts: router, top-k, permute, grouped expert MLPs, weighted combine into h (into
// y, then the shared expert, for Qwen2-MoE).
Status MoeTransformer::moe_block(const Layer& L, int64_t T) {
    const ModelConfig& c = config_;
    Backend& be = *backend_;
    Workspace& w = *ws_;
    const Device dev = be.device();
    const int64_t H = c.hidden_size;
    const auto [h, x, y] = residual(T);
    const int64_t E = c.num_experts, K = c.num_experts_per_tok;
    const TensorView logits = view(w.router_logits, DType::kF32, {T, E}, dev);
    const TensorView ids = view(w.topk_ids, DType::kI32, {T, K}, dev);
    const TensorView weights = view(w.topk_w, DType::kF32, {T, K}, dev);
    const TensorView x_perm = view(w.x_perm, DType::kF32, {T * K, H}, dev);
    const TensorView out_perm = view(w.out_perm, DType::kF32, {T * K, H}, dev);
    const TensorView offsets = view(w.offsets, DType::kI32, {E + 1}, dev);
    const TensorView row_of = view(w.row_of, DType::kI32, {T * K}, dev);
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = L.router, .bias = L.router_logit_bias, .y = logits}));
    if (c.group_routing.enabled) {
        const GroupRouting& g = c.group_routing;
        MOE_RETURN_IF_ERROR(
            ops::run(be, MoeRouteGroupedArgs{.logits = logits,
                                             .bias = L.router_bias,
                                             .topk_ids = ids,
                                             .topk_weights = weights,
                                             .top_k = static_cast<int>(K),
                                             .num_groups = static_cast<int>(g.num_groups),
                                             .topk_groups = static_cast<int>(g.topk_groups),
                                             .renormalize = c.norm_topk_prob,
                                             .scaling_factor = static_cast<float>(g.routed_scaling_factor)}));
    } else {
        MOE_RETURN_IF_ERROR(ops::run(be, MoeRouteArgs{.logits = logits,
                                                      .topk_ids = ids,
                                                      .topk_weights = weights,
                                                      .top_k = static_cast<int>(K),
                                                      .renormalize = c.norm_topk_prob}));
    }
    if (ep_) {
        MOE_RETURN_IF_ERROR(moe_experts_parallel(L, T));
    } else {
        MOE_RETURN_IF_ERROR(ops::run(be, MoePermuteArgs{.x = x,
                                                        .topk_ids = ids,
                                                        .num_experts = static_cast<int>(E),
                                                        .x_permuted = x_perm,
                                                        .expert_offsets = offsets,
                                                        .row_of = row_of,
                                                        .token_of = view(w.token_of, DType::kI32, {T * K}, dev)}));
        // A group of one: the loads come from this step's offsets, known once the permute ran.
        if (ep_comm_ != nullptr) count_expert_load(L, static_cast<const int32_t*>(w.offsets.data()));
        MOE_RETURN_IF_ERROR(ops::run(be, MoeExpertsArgs{.x_permuted = x_perm,
                                                        .expert_offsets = offsets,
                                                        .w_gate = L.w_gate,
                                                        .w_up = L.w_up,
                                                        .w_down = L.w_down,
                                                        .out_permuted = out_perm,
                                                        .b_gate = L.b_gate,
                                                        .b_up = L.b_up,
                                                        .b_down = L.b_down,
                                                        .activation = expert_activation_,
                                                        .swiglu_alpha = swiglu_alpha_,
                                                        .swiglu_limit = swiglu_limit_}));
    }
    if (c.shared_expert_intermediate_size == 0 || L.shared_expert_gate.empty()) {
        // The weighted expert rows go straight into the residual stream: one pass over h instead
        // of filling y and adding it (a 16-sequence decode step saved ~20 us a layer).
        MOE_RETURN_IF_ERROR(ops::run(
            be, MoeUnpermuteArgs{
                    .out_permuted = out_perm, .row_of = row_of, .topk_weights = weights, .y = h, .accumulate = true}));
        // DeepSeek-V3's shared experts: ungated, added to h like a dense MLP.
        if (c.shared_expert_intermediate_size == 0) return ok_status();
        return shared_expert(L, T);
    }
    MOE_RETURN_IF_ERROR(ops::run(
        be, MoeUnpermuteArgs{
                .out_permuted = out_perm, .row_of = row_of, .topk_weights = weights, .y = y, .accumulate = false}));
    return shared_expert(L, T);
}

// Qwen2-MoE's shared expert, gated: y += sigmoid(x * gate) * shared(x); h += y.
// DeepSeek-V3's shared experts (no gate): h += shared(x).
Status MoeTransformer::shared_expert(const Layer& L, int64_t T) {
    const ModelConfig& c = config_;
    Backend& be = *backend_;
    Workspace& w = *ws_;
    const Device dev = be.device();
    const int64_t H = c.hidden_size;
    const auto [h, x, y] = residual(T);
    const int64_t SI = c.shared_expert_intermediate_size;
    const TensorView g = view(w.mlp_gate, DType::kF32, {T, SI}, dev);
    const TensorView u = view(w.mlp_up, DType::kF32, {T, SI}, dev);
    const TensorView shared = view(w.x_perm, DType::kF32, {T, H}, dev);  // x_perm is free again
    const TensorView gate_logit = view(w.shared_logit, DType::kF32, {T, 1}, dev);
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = L.shared_gate, .bias = {}, .y = g}));
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = L.shared_up, .bias = {}, .y = u}));
    MOE_RETURN_IF_ERROR(ops::run(be, SiluMulArgs{.gate = g, .up = u, .out = g}));
    if (L.shared_expert_gate.empty())  // DeepSeek-V3: always on
        return ops::run(be, GemmArgs{.x = g, .w = L.shared_down, .bias = {}, .y = h, .accumulate = true});
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = g, .w = L.shared_down, .bias = {}, .y = shared}));
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = L.shared_expert_gate, .bias = {}, .y = gate_logit}));
    MOE_RETURN_IF_ERROR(ops::run(be, MoeSharedGateArgs{.gate_logits = gate_logit, .shared_out = shared, .y = y}));
    return ops::run(be, AddArgs{.a = h, .b = y, .out = h});
}

// ---- expert parallelism ----------------------------------------------------------------------

// The step of one rank of an expert-parallel group (docs/ARCHITECTURE.md, "Expert
// parallelism"). The same calls in the same order on every rank: begin_step, then per MoE layer
// dispatch (two all_to_all_v) and combine (one), whatever this rank's own batch holds.
StatusOr<ForwardOutput> MoeTransformer::forward_expert_parallel(const BatchView& batch, KvCache& cache) {
    if (!ep_status_.ok()) return ep_status_;
    // NOTE: a batch this rank refuses still takes part with zero rows: the other ranks wait for
    // its collectives. Its error comes back once the step is over.
    StatusOr<StepShape> checked = check_batch(batch, cache);
    const BatchView none;
    const BatchView& run = checked.ok() ? batch : none;
    const StepShape shape = checked.ok() ? *checked : StepShape{};
    if (!ws_) {
        ws_ = std::make_unique<Workspace>();
        ws_->be = backend_;
    }
    ForwardOutput out;
    prepare_step_metadata(run, cache.block_size(), shape, out);
    const int64_t T = shape.num_tokens;
    Status st = reserve_workspace(shape);
    if (st.ok()) st = upload_step_metadata(shape);
    if (!st.ok()) {
        // Nothing exchanged yet, but the group waits for this rank: end it rather than let it
        // time out.
        ep_status_ = unavailable("expert-parallel rank " + std::to_string(ep_comm_->rank()) +
                                 " aborted the group: " + st.to_string());
        log::model().error("{}", ep_status_.to_string());
        ep_comm_->abort(ep_status_.message());
        return ep_status_;
    }
    st = ep_->begin_step(T, std::max<int64_t>(1, config_.num_experts_per_tok));
    if (st.ok()) st = begin_mla_step(shape, cache);
    if (st.ok() && T > 0) {
        st = ops::run(*backend_,
                      EmbeddingArgs{.ids = view(ws_->ids, DType::kI32, {T}, backend_->device()),
                                    .table = embed_,
                                    .out = view(ws_->h, DType::kF32, {T, config_.hidden_size}, backend_->device())});
    }
    for (int64_t l = 0; st.ok() && l < config_.num_layers; ++l)
        st = layer_forward(l, cache, T).with_context("layer " + std::to_string(l));
    if (st.ok() && T > 0) st = final_logits(shape, out);
    if (!st.ok()) {
        if (st.code() == StatusCode::kUnavailable) {
            // A collective failed (a lost peer, the timeout): the group is gone for good.
            ep_status_ = unavailable("expert-parallel group failed: " + st.message());
        } else {
            // This rank failed mid-step while the others wait in a collective: end the group
            // with the reason instead of letting them time out.
            ep_status_ = unavailable("expert-parallel rank " + std::to_string(ep_comm_->rank()) +
                                     " aborted the group: " + st.to_string());
            log::model().error("{}", ep_status_.to_string());
            ep_comm_->abort(ep_status_.message());
        }
        return ep_status_;
    }
    if (!checked.ok()) return checked.status();
    return out;
}

// top-k ids -> out_perm through the group: remap to physical slots, permute, dispatch, the
// local experts over every source's rows, combine. T may be 0 (an idle rank still serves the
// rows of the others).
Status MoeTransformer::moe_experts_parallel(const Layer& L, int64_t T) {
    const ModelConfig& c = config_;
    Backend& be = *backend_;
    Workspace& w = *ws_;
    const Device dev = be.device();
    const int64_t H = c.hidden_size, K = c.num_experts_per_tok;
    const ExpertPlacement& pl = *L.placement;
    const int64_t P = pl.num_physical();
    std::span<const int32_t> offsets;
    if (T > 0) {
        if (!pl.identity()) {
            // Logical -> physical before the permute, so the permuted rows come out grouped by
            // slot, each rank's slots contiguous (NOTE: CPU memory; see setup_expert_parallel).
            int32_t* ids = static_cast<int32_t*>(w.topk_ids.data());
            for (int64_t t = 0; t < T; ++t)
                for (int64_t j = 0; j < K; ++j) ids[t * K + j] = pl.physical_for(ids[t * K + j], t, ep_comm_->rank());
        }
        MOE_RETURN_IF_ERROR(ops::run(be, MoePermuteArgs{.x = residual(T).x,
                                                        .topk_ids = view(w.topk_ids, DType::kI32, {T, K}, dev),
                                                        .num_experts = static_cast<int>(P),
                                                        .x_permuted = view(w.x_perm, DType::kF32, {T * K, H}, dev),
                                                        .expert_offsets = view(w.offsets, DType::kI32, {P + 1}, dev),
                                                        .row_of = view(w.row_of, DType::kI32, {T * K}, dev),
                                                        .token_of = view(w.token_of, DType::kI32, {T * K}, dev)}));
        offsets = std::span<const int32_t>(static_cast<const int32_t*>(w.offsets.data()), static_cast<size_t>(P + 1));
        count_expert_load(L, offsets.data());
    } else {
        ep_zero_offsets_.assign(static_cast<size_t>(P + 1), 0);
        offsets = ep_zero_offsets_;
    }
    float* x_perm = static_cast<float*>(w.x_perm.data());
    MOE_RETURN_IF_ERROR(ep_->dispatch(pl, x_perm, offsets, T));
    const int64_t R = ep_->local_rows();
    if (R > 0) {
        MOE_RETURN_IF_ERROR(ops::run(
            be, MoeExpertsArgs{.x_permuted = TensorView::make(ep_->local_x(), DType::kF32, {R, H}, dev),
                               .expert_offsets = TensorView::make(const_cast<int32_t*>(ep_->local_offsets().data()),
                                                                  DType::kI32, {P + 1}, dev),
                               .w_gate = L.w_gate,
                               .w_up = L.w_up,
                               .w_down = L.w_down,
                               .out_permuted = TensorView::make(ep_->local_out(), DType::kF32, {R, H}, dev),
                               .b_gate = L.b_gate,
                               .b_up = L.b_up,
                               .b_down = L.b_down,
                               .activation = expert_activation_,
                               .swiglu_alpha = swiglu_alpha_,
                               .swiglu_limit = swiglu_limit_}));
    }
    return ep_->combine(pl, static_cast<float*>(w.out_perm.data()), offsets);
}

// Rows per logical expert from the permute's offsets (host memory: expert parallelism runs on
// the CPU backend only).
void MoeTransformer::count_expert_load(const Layer& L, const int32_t* offsets) {
    std::vector<int64_t>& load = expert_load_[static_cast<size_t>(L.index)];
    if (L.placement == nullptr) {
        for (size_t e = 0; e < load.size(); ++e) load[e] += offsets[e + 1] - offsets[e];
        return;
    }
    for (int64_t s = 0; s < L.placement->num_physical(); ++s)
        load[static_cast<size_t>(L.placement->logical_of[static_cast<size_t>(s)])] += offsets[s + 1] - offsets[s];
}

ExpertParallelStats MoeTransformer::expert_parallel_stats() const {
    return ep_ ? ep_->stats() : ExpertParallelStats{};
}

std::vector<int32_t> MoeTransformer::local_experts(int64_t layer_idx) const {
    std::vector<int32_t> out;
    if (layer_idx < 0 || layer_idx >= config_.num_layers || !config_.layer_is_moe[static_cast<size_t>(layer_idx)])
        return out;
    const Layer& L = layers_[static_cast<size_t>(layer_idx)];
    for (size_t s = 0; s < L.w_gate.size(); ++s)
        if (!L.w_gate[s].empty()) out.push_back(L.placement ? L.placement->logical_of[s] : static_cast<int32_t>(s));
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace moe
