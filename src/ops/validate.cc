// Shape, dtype and layout checks shared by every backend. Data-dependent checks (ids in range,
// slots inside the cache) need the data on the host and live with the kernels (ops/data_checks.h).
#include <cmath>
#include <initializer_list>
#include <string>
#include <string_view>

#include "ops/mla_ops.h"
#include "ops/ops.h"

namespace moe::ops {
namespace {

// Dims above this are certainly a bug (or a hostile file); it also keeps every index in the
// kernels inside int32 range per dimension.
constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxNumel = int64_t{1} << 46;

enum class Layout {
    kContiguous,
    kRowStride,  // 2-D, unit stride inside a row, row stride >= row length
};

std::string dims_of(const TensorView& t) {
    std::string s = "[";
    for (int d = 0; d < t.ndim; ++d) s += (d ? ", " : "") + std::to_string(t.dim(d));
    return s + "]";
}

std::string dtype_list(std::initializer_list<DType> dtypes) {
    std::string s;
    for (DType d : dtypes) s += (s.empty() ? "" : "|") + std::string(dtype_name(d));
    return s;
}

Status fail(const char* op, const std::string& msg) {
    return invalid_argument(std::string(op) + ": " + msg);
}

// Rank, dtype, sane dims and layout of one view.
Status check_shape(const char* op, const char* name, const TensorView& t, int ndim, std::initializer_list<DType> dtypes,
                   Layout layout = Layout::kContiguous) {
    if (t.ndim != ndim)
        return fail(op, std::string(name) + " must have " + std::to_string(ndim) + " dims, got " +
                            std::to_string(t.ndim) + " " + dims_of(t));
    bool dtype_ok = false;
    for (DType d : dtypes) dtype_ok = dtype_ok || t.dtype == d;
    if (!dtype_ok)
        return fail(op, std::string(name) + " must be " + dtype_list(dtypes) + ", got " + dtype_name(t.dtype));
    int64_t numel = 1;
    for (int d = 0; d < ndim; ++d) {
        if (t.dim(d) < 0 || t.dim(d) > kMaxDim)
            return fail(op, std::string(name) + " dim " + std::to_string(d) + " is " + std::to_string(t.dim(d)) +
                                ", outside [0, " + std::to_string(kMaxDim) + "]");
        numel *= t.dim(d);
        if (numel > kMaxNumel) return fail(op, std::string(name) + " " + dims_of(t) + " has more than 2^46 elements");
    }
    if (layout == Layout::kRowStride && ndim == 2) {
        if (t.dim(0) > 1 && t.stride(0) < t.dim(1))
            return fail(op, std::string(name) + " row stride " + std::to_string(t.stride(0)) +
                                " is smaller than its row length " + std::to_string(t.dim(1)));
        if (t.dim(1) > 1 && t.stride(1) != 1)
            return fail(op,
                        std::string(name) + " must have unit stride inside a row, got " + std::to_string(t.stride(1)));
        return ok_status();
    }
    if (!t.is_contiguous()) return fail(op, std::string(name) + " " + dims_of(t) + " must be contiguous");
    return ok_status();
}

// Presence, then check_shape.
Status check_view(const char* op, const char* name, const TensorView& t, int ndim, std::initializer_list<DType> dtypes,
                  Layout layout = Layout::kContiguous) {
    if (t.data == nullptr) return fail(op, std::string(name) + " has no data (null pointer)");
    return check_shape(op, name, t, ndim, dtypes, layout);
}

// check_view for a weight: a prepared one must match its handle's logical tensor (dtype, shape)
// and may have no data of its own (the backend keeps its own form).
Status check_weight(const char* op, const char* name, const WeightView& w, int ndim,
                    std::initializer_list<DType> dtypes) {
    if (w.prepared == nullptr) return check_view(op, name, w.tensor, ndim, dtypes);
    const TensorView& l = w.prepared->logical();
    bool same = l.dtype == w.tensor.dtype && l.ndim == w.tensor.ndim;
    for (int d = 0; same && d < l.ndim; ++d) same = l.dim(d) == w.tensor.dim(d);
    if (!same)
        return fail(op, std::string(name) + " " + dims_of(w.tensor) + " " + dtype_name(w.tensor.dtype) +
                            " does not match its prepared weight " + dims_of(l) + " " + dtype_name(l.dtype));
    return check_shape(op, name, l, ndim, dtypes);
}

// "rms_norm: weight dim 0 is 63, expected 64 (the row length of x)"
Status check_dim(const char* op, const char* name, const TensorView& t, int d, int64_t expected, const char* what) {
    if (t.dim(d) == expected) return ok_status();
    return fail(op, std::string(name) + " dim " + std::to_string(d) + " is " + std::to_string(t.dim(d)) +
                        ", expected " + std::to_string(expected) + " (" + what + ")");
}

Status check_positive(const char* op, const char* name, int64_t value) {
    if (value > 0) return ok_status();
    return fail(op, std::string(name) + " must be > 0, got " + std::to_string(value));
}

constexpr std::initializer_list<DType> kF32 = {DType::kF32};
constexpr std::initializer_list<DType> kI32 = {DType::kI32};
constexpr std::initializer_list<DType> kF32OrBf16 = {DType::kF32, DType::kBF16};

}  // namespace

Status validate(const EmbeddingArgs& a) {
    constexpr const char* op = "embedding";
    MOE_RETURN_IF_ERROR(check_view(op, "ids", a.ids, 1, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "table", a.table, 2, kF32OrBf16));
    MOE_RETURN_IF_ERROR(check_view(op, "out", a.out, 2, kF32));
    MOE_RETURN_IF_ERROR(check_positive(op, "table vocabulary size (dim 0)", a.table.dim(0)));
    MOE_RETURN_IF_ERROR(check_positive(op, "table hidden size (dim 1)", a.table.dim(1)));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 0, a.ids.dim(0), "the number of ids"));
    return check_dim(op, "out", a.out, 1, a.table.dim(1), "the hidden size of table");
}

Status validate(const RmsNormArgs& a) {
    constexpr const char* op = "rms_norm";
    MOE_RETURN_IF_ERROR(check_view(op, "x", a.x, 2, kF32, Layout::kRowStride));
    MOE_RETURN_IF_ERROR(check_view(op, "weight", a.weight, 1, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "out", a.out, 2, kF32, Layout::kRowStride));
    MOE_RETURN_IF_ERROR(check_positive(op, "x row length (dim 1)", a.x.dim(1)));
    if (a.weight.dim(0) != a.x.dim(1))
        return fail(op, "weight has " + std::to_string(a.weight.dim(0)) + " elements, x rows have " +
                            std::to_string(a.x.dim(1)));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 0, a.x.dim(0), "the rows of x"));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 1, a.x.dim(1), "the row length of x"));
    if (!std::isfinite(a.eps) || a.eps < 0.0f)
        return fail(op, "eps must be finite and >= 0, got " + std::to_string(a.eps));
    return ok_status();
}

Status validate(const RopeArgs& a) {
    constexpr const char* op = "rope";
    MOE_RETURN_IF_ERROR(check_view(op, "q", a.q, 3, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "k", a.k, 3, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "positions", a.positions, 1, kI32));
    MOE_RETURN_IF_ERROR(check_dim(op, "k", a.k, 0, a.q.dim(0), "the tokens of q"));
    MOE_RETURN_IF_ERROR(check_dim(op, "k", a.k, 2, a.q.dim(2), "the head_dim of q"));
    MOE_RETURN_IF_ERROR(check_dim(op, "positions", a.positions, 0, a.q.dim(0), "the tokens of q"));
    MOE_RETURN_IF_ERROR(check_positive(op, "q heads (dim 1)", a.q.dim(1)));
    MOE_RETURN_IF_ERROR(check_positive(op, "k heads (dim 1)", a.k.dim(1)));
    if (a.rotary_dim <= 0 || a.rotary_dim % 2 != 0 || a.rotary_dim > a.q.dim(2))
        return fail(op, "rotary_dim must be even and in [2, head_dim " + std::to_string(a.q.dim(2)) + "], got " +
                            std::to_string(a.rotary_dim));
    if (!std::isfinite(a.theta) || a.theta <= 0.0f)
        return fail(op, "theta must be finite and > 0, got " + std::to_string(a.theta));
    if (!a.inv_freq.empty()) {
        MOE_RETURN_IF_ERROR(check_view(op, "inv_freq", a.inv_freq, 1, kF32));
        MOE_RETURN_IF_ERROR(check_dim(op, "inv_freq", a.inv_freq, 0, a.rotary_dim / 2, "rotary_dim / 2"));
        if (!std::isfinite(a.attention_factor))
            return fail(op, "attention_factor must be finite, got " + std::to_string(a.attention_factor));
    }
    return ok_status();
}

Status validate(const GemmArgs& a) {
    constexpr const char* op = "gemm";
    MOE_RETURN_IF_ERROR(check_view(op, "x", a.x, 2, kF32, Layout::kRowStride));
    MOE_RETURN_IF_ERROR(check_weight(op, "w", a.w, 2, kF32OrBf16));
    MOE_RETURN_IF_ERROR(check_view(op, "y", a.y, 2, kF32, Layout::kRowStride));
    MOE_RETURN_IF_ERROR(check_positive(op, "w rows N (dim 0)", a.w.dim(0)));
    MOE_RETURN_IF_ERROR(check_positive(op, "w columns K (dim 1)", a.w.dim(1)));
    MOE_RETURN_IF_ERROR(check_dim(op, "x", a.x, 1, a.w.dim(1), "K, the columns of w"));
    MOE_RETURN_IF_ERROR(check_dim(op, "y", a.y, 0, a.x.dim(0), "M, the rows of x"));
    MOE_RETURN_IF_ERROR(check_dim(op, "y", a.y, 1, a.w.dim(0), "N, the rows of w"));
    if (!a.bias.empty()) {
        MOE_RETURN_IF_ERROR(check_view(op, "bias", a.bias, 1, kF32));
        MOE_RETURN_IF_ERROR(check_dim(op, "bias", a.bias, 0, a.w.dim(0), "N, the rows of w"));
    }
    return ok_status();
}

Status validate(const SiluMulArgs& a) {
    constexpr const char* op = "silu_mul";
    MOE_RETURN_IF_ERROR(check_view(op, "gate", a.gate, 2, kF32, Layout::kRowStride));
    MOE_RETURN_IF_ERROR(check_view(op, "up", a.up, 2, kF32, Layout::kRowStride));
    MOE_RETURN_IF_ERROR(check_view(op, "out", a.out, 2, kF32));
    for (int d = 0; d < 2; ++d) {
        MOE_RETURN_IF_ERROR(check_dim(op, "up", a.up, d, a.gate.dim(d), "the shape of gate"));
        MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, d, a.gate.dim(d), "the shape of gate"));
    }
    return ok_status();
}

Status validate(const AddArgs& a) {
    constexpr const char* op = "add";
    MOE_RETURN_IF_ERROR(check_view(op, "a", a.a, 2, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "b", a.b, 2, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "out", a.out, 2, kF32));
    for (int d = 0; d < 2; ++d) {
        MOE_RETURN_IF_ERROR(check_dim(op, "b", a.b, d, a.a.dim(d), "the shape of a"));
        MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, d, a.a.dim(d), "the shape of a"));
    }
    return ok_status();
}

Status validate(const KvWriteArgs& a) {
    constexpr const char* op = "kv_write";
    MOE_RETURN_IF_ERROR(check_view(op, "k", a.k, 3, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "v", a.v, 3, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "slot_mapping", a.slot_mapping, 1, {DType::kI64}));
    MOE_RETURN_IF_ERROR(check_view(op, "k_cache", a.k_cache, 4, kF32OrBf16));
    MOE_RETURN_IF_ERROR(check_view(op, "v_cache", a.v_cache, 4, kF32OrBf16));
    if (a.v_cache.dtype != a.k_cache.dtype)
        return fail(op, std::string("v_cache is ") + dtype_name(a.v_cache.dtype) + " but k_cache is " +
                            dtype_name(a.k_cache.dtype));
    for (int d = 0; d < 4; ++d)
        MOE_RETURN_IF_ERROR(check_dim(op, "v_cache", a.v_cache, d, a.k_cache.dim(d), "the shape of k_cache"));
    MOE_RETURN_IF_ERROR(check_positive(op, "k_cache blocks (dim 0)", a.k_cache.dim(0)));
    MOE_RETURN_IF_ERROR(check_positive(op, "k_cache block_size (dim 1)", a.k_cache.dim(1)));
    for (int d = 0; d < 3; ++d) MOE_RETURN_IF_ERROR(check_dim(op, "v", a.v, d, a.k.dim(d), "the shape of k"));
    MOE_RETURN_IF_ERROR(check_dim(op, "k", a.k, 1, a.k_cache.dim(2), "num_kv_heads of k_cache"));
    MOE_RETURN_IF_ERROR(check_dim(op, "k", a.k, 2, a.k_cache.dim(3), "head_dim of k_cache"));
    return check_dim(op, "slot_mapping", a.slot_mapping, 0, a.k.dim(0), "the tokens of k");
}

Status validate(const AttentionArgs& a) {
    constexpr const char* op = "attention";
    MOE_RETURN_IF_ERROR(check_view(op, "q", a.q, 3, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "k_cache", a.k_cache, 4, kF32OrBf16));
    MOE_RETURN_IF_ERROR(check_view(op, "v_cache", a.v_cache, 4, kF32OrBf16));
    MOE_RETURN_IF_ERROR(check_view(op, "block_tables", a.block_tables, 2, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "query_start", a.query_start, 1, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "kv_lens", a.kv_lens, 1, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "out", a.out, 3, kF32));
    if (a.v_cache.dtype != a.k_cache.dtype)
        return fail(op, std::string("v_cache is ") + dtype_name(a.v_cache.dtype) + " but k_cache is " +
                            dtype_name(a.k_cache.dtype));
    for (int d = 0; d < 4; ++d)
        MOE_RETURN_IF_ERROR(check_dim(op, "v_cache", a.v_cache, d, a.k_cache.dim(d), "the shape of k_cache"));
    MOE_RETURN_IF_ERROR(check_positive(op, "k_cache blocks (dim 0)", a.k_cache.dim(0)));
    MOE_RETURN_IF_ERROR(check_positive(op, "k_cache block_size (dim 1)", a.k_cache.dim(1)));
    MOE_RETURN_IF_ERROR(check_positive(op, "k_cache num_kv_heads (dim 2)", a.k_cache.dim(2)));
    MOE_RETURN_IF_ERROR(check_positive(op, "q heads (dim 1)", a.q.dim(1)));
    MOE_RETURN_IF_ERROR(check_positive(op, "q head_dim (dim 2)", a.q.dim(2)));
    MOE_RETURN_IF_ERROR(check_dim(op, "k_cache", a.k_cache, 3, a.q.dim(2), "the head_dim of q"));
    if (a.q.dim(1) % a.k_cache.dim(2) != 0)
        return fail(op, "q heads " + std::to_string(a.q.dim(1)) + " are not a multiple of the " +
                            std::to_string(a.k_cache.dim(2)) + " KV heads of k_cache");
    const int64_t num_seqs = a.kv_lens.dim(0);
    MOE_RETURN_IF_ERROR(check_dim(op, "query_start", a.query_start, 0, num_seqs + 1, "one more than kv_lens"));
    MOE_RETURN_IF_ERROR(check_dim(op, "block_tables", a.block_tables, 0, num_seqs, "the sequences of kv_lens"));
    if (num_seqs > 0)
        MOE_RETURN_IF_ERROR(check_positive(op, "block_tables max_blocks_per_seq (dim 1)", a.block_tables.dim(1)));
    for (int d = 0; d < 3; ++d) MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, d, a.q.dim(d), "the shape of q"));
    if (!std::isfinite(a.scale)) return fail(op, "scale must be finite, got " + std::to_string(a.scale));
    if (a.sliding_window < 0) return fail(op, "sliding_window must be >= 0, got " + std::to_string(a.sliding_window));
    if (!a.sinks.empty()) {
        MOE_RETURN_IF_ERROR(check_view(op, "sinks", a.sinks, 1, kF32));
        MOE_RETURN_IF_ERROR(check_dim(op, "sinks", a.sinks, 0, a.q.dim(1), "the heads of q"));
    }
    return ok_status();
}

Status validate(const MoeRouteArgs& a) {
    constexpr const char* op = "moe_route";
    MOE_RETURN_IF_ERROR(check_view(op, "logits", a.logits, 2, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "topk_ids", a.topk_ids, 2, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "topk_weights", a.topk_weights, 2, kF32));
    MOE_RETURN_IF_ERROR(check_positive(op, "logits experts (dim 1)", a.logits.dim(1)));
    if (a.top_k < 1 || a.top_k > a.logits.dim(1))
        return fail(op, "top_k must be in [1, " + std::to_string(a.logits.dim(1)) + " experts], got " +
                            std::to_string(a.top_k));
    MOE_RETURN_IF_ERROR(check_dim(op, "topk_ids", a.topk_ids, 0, a.logits.dim(0), "the tokens of logits"));
    MOE_RETURN_IF_ERROR(check_dim(op, "topk_ids", a.topk_ids, 1, a.top_k, "top_k"));
    MOE_RETURN_IF_ERROR(check_dim(op, "topk_weights", a.topk_weights, 0, a.logits.dim(0), "the tokens of logits"));
    return check_dim(op, "topk_weights", a.topk_weights, 1, a.top_k, "top_k");
}

Status validate(const MoeSharedGateArgs& a) {
    constexpr const char* op = "moe_shared_gate";
    MOE_RETURN_IF_ERROR(check_view(op, "gate_logits", a.gate_logits, 2, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "shared_out", a.shared_out, 2, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "y", a.y, 2, kF32));
    MOE_RETURN_IF_ERROR(check_dim(op, "gate_logits", a.gate_logits, 1, 1, "one gate per token"));
    MOE_RETURN_IF_ERROR(
        check_dim(op, "shared_out", a.shared_out, 0, a.gate_logits.dim(0), "the tokens of gate_logits"));
    MOE_RETURN_IF_ERROR(check_dim(op, "y", a.y, 0, a.gate_logits.dim(0), "the tokens of gate_logits"));
    return check_dim(op, "y", a.y, 1, a.shared_out.dim(1), "the hidden size of shared_out");
}

Status validate(const MoePermuteArgs& a) {
    constexpr const char* op = "moe_permute";
    MOE_RETURN_IF_ERROR(check_view(op, "x", a.x, 2, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "topk_ids", a.topk_ids, 2, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "x_permuted", a.x_permuted, 2, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "expert_offsets", a.expert_offsets, 1, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "row_of", a.row_of, 1, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "token_of", a.token_of, 1, kI32));
    MOE_RETURN_IF_ERROR(check_positive(op, "num_experts", a.num_experts));
    MOE_RETURN_IF_ERROR(check_positive(op, "topk_ids top_k (dim 1)", a.topk_ids.dim(1)));
    MOE_RETURN_IF_ERROR(check_dim(op, "topk_ids", a.topk_ids, 0, a.x.dim(0), "the tokens of x"));
    const int64_t pairs = a.x.dim(0) * a.topk_ids.dim(1);
    if (pairs > kMaxDim)
        return fail(op, "tokens * top_k = " + std::to_string(pairs) + " exceeds " + std::to_string(kMaxDim));
    MOE_RETURN_IF_ERROR(check_dim(op, "x_permuted", a.x_permuted, 0, pairs, "tokens * top_k"));
    MOE_RETURN_IF_ERROR(check_dim(op, "x_permuted", a.x_permuted, 1, a.x.dim(1), "the hidden size of x"));
    MOE_RETURN_IF_ERROR(
        check_dim(op, "expert_offsets", a.expert_offsets, 0, int64_t{a.num_experts} + 1, "num_experts + 1"));
    MOE_RETURN_IF_ERROR(check_dim(op, "row_of", a.row_of, 0, pairs, "tokens * top_k"));
    return check_dim(op, "token_of", a.token_of, 0, pairs, "tokens * top_k");
}

Status validate(const MoeExpertsArgs& a) {
    constexpr const char* op = "moe_experts";
    MOE_RETURN_IF_ERROR(check_view(op, "x_permuted", a.x_permuted, 2, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "expert_offsets", a.expert_offsets, 1, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "out_permuted", a.out_permuted, 2, kF32));
    for (int d = 0; d < 2; ++d)
        MOE_RETURN_IF_ERROR(
            check_dim(op, "out_permuted", a.out_permuted, d, a.x_permuted.dim(d), "the shape of x_permuted"));
    const int64_t num_experts = a.expert_offsets.dim(0) - 1;
    MOE_RETURN_IF_ERROR(check_positive(op, "experts (expert_offsets dim 0 minus 1)", num_experts));
    const int64_t hidden = a.x_permuted.dim(1);
    MOE_RETURN_IF_ERROR(check_positive(op, "x_permuted hidden size (dim 1)", hidden));
    for (auto [name, span] : {std::pair{"w_gate", a.w_gate}, std::pair{"w_up", a.w_up}, std::pair{"w_down", a.w_down}})
        if (static_cast<int64_t>(span.size()) != num_experts)
            return fail(op, std::string(name) + " has " + std::to_string(span.size()) + " views, expected " +
                                std::to_string(num_experts) + " (one per expert of expert_offsets)");
    // An empty view (null data) means "this expert's weights are not here" (expert parallelism);
    // the kernel fails if such an expert gets rows. All present views must agree on I.
    int64_t inter = -1;
    for (int64_t e = 0; e < num_experts; ++e) {
        const size_t i = static_cast<size_t>(e);
        const WeightView* views[3] = {&a.w_gate[i], &a.w_up[i], &a.w_down[i]};
        const char* names[3] = {"w_gate", "w_up", "w_down"};
        for (int k = 0; k < 3; ++k) {
            if (views[k]->empty()) continue;
            const std::string name = std::string(names[k]) + "[" + std::to_string(e) + "]";
            MOE_RETURN_IF_ERROR(check_weight(op, name.c_str(), *views[k], 2, kF32OrBf16));
            const int h_dim = k == 2 ? 0 : 1;
            MOE_RETURN_IF_ERROR(
                check_dim(op, name.c_str(), views[k]->tensor, h_dim, hidden, "the hidden size of x_permuted"));
            const int64_t this_inter = views[k]->dim(1 - h_dim);
            if (inter < 0) {
                inter = this_inter;
                // NOTE: the name is built only on failure: validation runs every step.
                if (inter <= 0) MOE_RETURN_IF_ERROR(check_positive(op, (name + " intermediate size").c_str(), inter));
            } else {
                MOE_RETURN_IF_ERROR(check_dim(op, name.c_str(), views[k]->tensor, 1 - h_dim, inter,
                                              "the intermediate size of the other experts"));
            }
        }
    }
    for (auto [name, span] :
         {std::pair{"b_gate", a.b_gate}, std::pair{"b_up", a.b_up}, std::pair{"b_down", a.b_down}}) {
        if (span.empty()) continue;
        if (static_cast<int64_t>(span.size()) != num_experts)
            return fail(op, std::string(name) + " has " + std::to_string(span.size()) + " views, expected 0 or " +
                                std::to_string(num_experts));
        const bool down = std::string_view(name) == "b_down";
        for (int64_t e = 0; e < num_experts; ++e) {
            const TensorView& b = span[static_cast<size_t>(e)];
            if (b.empty()) continue;
            const std::string bn = std::string(name) + "[" + std::to_string(e) + "]";
            MOE_RETURN_IF_ERROR(check_view(op, bn.c_str(), b, 1, kF32));
            if (down) {
                MOE_RETURN_IF_ERROR(check_dim(op, bn.c_str(), b, 0, hidden, "the hidden size of x_permuted"));
            } else if (inter > 0) {
                MOE_RETURN_IF_ERROR(check_dim(op, bn.c_str(), b, 0, inter, "the experts' intermediate size"));
            }
        }
    }
    if (a.activation == ExpertActivation::kClampedSwiGLU &&
        !(std::isfinite(a.swiglu_alpha) && std::isfinite(a.swiglu_limit) && a.swiglu_limit > 0.0f))
        return fail(op, "clamped SwiGLU needs a finite alpha and a finite limit > 0, got alpha " +
                            std::to_string(a.swiglu_alpha) + " limit " + std::to_string(a.swiglu_limit));
    return ok_status();
}

Status validate(const MoeUnpermuteArgs& a) {
    constexpr const char* op = "moe_unpermute";
    MOE_RETURN_IF_ERROR(check_view(op, "out_permuted", a.out_permuted, 2, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "row_of", a.row_of, 1, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "topk_weights", a.topk_weights, 2, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "y", a.y, 2, kF32));
    MOE_RETURN_IF_ERROR(check_positive(op, "topk_weights top_k (dim 1)", a.topk_weights.dim(1)));
    const int64_t pairs = a.y.dim(0) * a.topk_weights.dim(1);
    MOE_RETURN_IF_ERROR(check_dim(op, "topk_weights", a.topk_weights, 0, a.y.dim(0), "the tokens of y"));
    MOE_RETURN_IF_ERROR(check_dim(op, "out_permuted", a.out_permuted, 0, pairs, "tokens * top_k"));
    MOE_RETURN_IF_ERROR(check_dim(op, "out_permuted", a.out_permuted, 1, a.y.dim(1), "the hidden size of y"));
    return check_dim(op, "row_of", a.row_of, 0, pairs, "tokens * top_k");
}

// ---- MLA and DeepSeek-V3 routing (ops/mla_ops.h) ----------------------------------------------

namespace {

// A 3-D f32 view with unit stride inside its last dim and non-overlapping rows (heads inside a
// token, tokens): what a head-sliced view of a [T, H, D'] buffer looks like.
Status check_heads_view(const char* op, const char* name, const TensorView& t) {
    if (t.data == nullptr) return fail(op, std::string(name) + " has no data (null pointer)");
    if (t.ndim != 3) return fail(op, std::string(name) + " must have 3 dims, got " + std::to_string(t.ndim));
    if (t.dtype != DType::kF32) return fail(op, std::string(name) + " must be f32, got " + dtype_name(t.dtype));
    for (int d = 0; d < 3; ++d)
        if (t.dim(d) < 0 || t.dim(d) > kMaxDim) return fail(op, std::string(name) + " has a dim outside range");
    if (t.dim(2) > 1 && t.stride(2) != 1) return fail(op, std::string(name) + " must have unit stride inside a head");
    if (t.dim(1) > 1 && t.stride(1) < t.dim(2))
        return fail(op, std::string(name) + " head stride " + std::to_string(t.stride(1)) + " < head length " +
                            std::to_string(t.dim(2)));
    if (t.dim(0) > 1 && t.stride(0) < t.dim(1) * t.stride(1))
        return fail(op, std::string(name) + " token stride " + std::to_string(t.stride(0)) + " overlaps its heads");
    return ok_status();
}

Status check_paged_meta(const char* op, const TensorView& q, const TensorView& block_tables,
                        const TensorView& query_start, const TensorView& kv_lens) {
    MOE_RETURN_IF_ERROR(check_view(op, "block_tables", block_tables, 2, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "query_start", query_start, 1, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "kv_lens", kv_lens, 1, kI32));
    MOE_RETURN_IF_ERROR(check_positive(op, "number of sequences (block_tables dim 0)", block_tables.dim(0)));
    MOE_RETURN_IF_ERROR(check_positive(op, "block_tables dim 1", block_tables.dim(1)));
    MOE_RETURN_IF_ERROR(check_dim(op, "query_start", query_start, 0, block_tables.dim(0) + 1, "sequences + 1"));
    MOE_RETURN_IF_ERROR(check_dim(op, "kv_lens", kv_lens, 0, block_tables.dim(0), "the sequences"));
    (void)q;
    return ok_status();
}

}  // namespace

Status validate(const RopeTableArgs& a) {
    constexpr const char* op = "rope_table";
    MOE_RETURN_IF_ERROR(check_view(op, "x", a.x, 2, kF32, Layout::kRowStride));
    MOE_RETURN_IF_ERROR(check_view(op, "positions", a.positions, 1, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "inv_freq", a.inv_freq, 1, kF32));
    MOE_RETURN_IF_ERROR(check_positive(op, "inv_freq length", a.inv_freq.dim(0)));
    MOE_RETURN_IF_ERROR(check_dim(op, "x", a.x, 1, 2 * a.inv_freq.dim(0), "twice the frequencies"));
    MOE_RETURN_IF_ERROR(check_positive(op, "positions length", a.positions.dim(0)));
    if (a.x.dim(0) % a.positions.dim(0) != 0)
        return fail(op, "x rows (" + std::to_string(a.x.dim(0)) + ") are not a multiple of the positions (" +
                            std::to_string(a.positions.dim(0)) + ")");
    if (!std::isfinite(a.attention_factor))
        return fail(op, "attention_factor must be finite, got " + std::to_string(a.attention_factor));
    return ok_status();
}

Status validate(const LatentWriteArgs& a) {
    constexpr const char* op = "latent_write";
    MOE_RETURN_IF_ERROR(check_view(op, "rows", a.rows, 2, kF32, Layout::kRowStride));
    MOE_RETURN_IF_ERROR(check_view(op, "slot_mapping", a.slot_mapping, 1, {DType::kI64}));
    MOE_RETURN_IF_ERROR(check_view(op, "cache", a.cache, 3, kF32OrBf16));
    MOE_RETURN_IF_ERROR(check_positive(op, "cache block_size (dim 1)", a.cache.dim(1)));
    MOE_RETURN_IF_ERROR(check_dim(op, "slot_mapping", a.slot_mapping, 0, a.rows.dim(0), "the rows"));
    return check_dim(op, "cache", a.cache, 2, a.rows.dim(1), "the row length");
}

Status validate(const LatentGatherArgs& a) {
    constexpr const char* op = "latent_gather";
    MOE_RETURN_IF_ERROR(check_view(op, "cache", a.cache, 3, kF32OrBf16));
    MOE_RETURN_IF_ERROR(check_view(op, "slots", a.slots, 1, {DType::kI64}));
    MOE_RETURN_IF_ERROR(check_view(op, "out", a.out, 2, kF32));
    MOE_RETURN_IF_ERROR(check_positive(op, "cache block_size (dim 1)", a.cache.dim(1)));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 0, a.slots.dim(0), "the slots"));
    return check_dim(op, "out", a.out, 1, a.cache.dim(2), "the cache row length");
}

Status validate(const MlaExpandArgs& a) {
    constexpr const char* op = "mla_expand";
    MOE_RETURN_IF_ERROR(check_view(op, "kv", a.kv, 3, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "k_rope", a.k_rope, 2, kF32, Layout::kRowStride));
    MOE_RETURN_IF_ERROR(check_view(op, "k", a.k, 3, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "v", a.v, 3, kF32));
    const int64_t nope = a.k.dim(2) - a.k_rope.dim(1);
    if (nope < 0) return fail(op, "k head dim is smaller than k_rope's row length");
    MOE_RETURN_IF_ERROR(check_dim(op, "k_rope", a.k_rope, 0, a.kv.dim(0), "the rows of kv"));
    MOE_RETURN_IF_ERROR(check_dim(op, "k", a.k, 0, a.kv.dim(0), "the rows of kv"));
    MOE_RETURN_IF_ERROR(check_dim(op, "v", a.v, 0, a.kv.dim(0), "the rows of kv"));
    MOE_RETURN_IF_ERROR(check_dim(op, "k", a.k, 1, a.kv.dim(1), "the heads of kv"));
    MOE_RETURN_IF_ERROR(check_dim(op, "v", a.v, 1, a.kv.dim(1), "the heads of kv"));
    return check_dim(op, "kv", a.kv, 2, nope + a.v.dim(2), "nope + v head dim");
}

Status validate(const RaggedAttentionArgs& a) {
    constexpr const char* op = "ragged_attention";
    MOE_RETURN_IF_ERROR(check_view(op, "q", a.q, 3, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "k", a.k, 3, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "v", a.v, 3, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "query_start", a.query_start, 1, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "kv_start", a.kv_start, 1, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "out", a.out, 3, kF32));
    MOE_RETURN_IF_ERROR(check_positive(op, "query_start length", a.query_start.dim(0)));
    MOE_RETURN_IF_ERROR(check_dim(op, "kv_start", a.kv_start, 0, a.query_start.dim(0), "the length of query_start"));
    MOE_RETURN_IF_ERROR(check_dim(op, "k", a.k, 1, a.q.dim(1), "the heads of q"));
    MOE_RETURN_IF_ERROR(check_dim(op, "k", a.k, 2, a.q.dim(2), "the head dim of q"));
    MOE_RETURN_IF_ERROR(check_dim(op, "v", a.v, 0, a.k.dim(0), "the rows of k"));
    MOE_RETURN_IF_ERROR(check_dim(op, "v", a.v, 1, a.q.dim(1), "the heads of q"));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 0, a.q.dim(0), "the rows of q"));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 1, a.q.dim(1), "the heads of q"));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 2, a.v.dim(2), "the head dim of v"));
    if (!std::isfinite(a.scale)) return fail(op, "scale must be finite");
    return ok_status();
}

Status validate(const MlaAttentionArgs& a) {
    constexpr const char* op = "mla_attention";
    MOE_RETURN_IF_ERROR(check_view(op, "q_latent", a.q_latent, 3, kF32));
    MOE_RETURN_IF_ERROR(check_heads_view(op, "q_rope", a.q_rope));
    MOE_RETURN_IF_ERROR(check_view(op, "cache", a.cache, 3, kF32OrBf16));
    MOE_RETURN_IF_ERROR(check_view(op, "out", a.out, 3, kF32));
    MOE_RETURN_IF_ERROR(check_paged_meta(op, a.q_latent, a.block_tables, a.query_start, a.kv_lens));
    MOE_RETURN_IF_ERROR(check_positive(op, "cache block_size (dim 1)", a.cache.dim(1)));
    MOE_RETURN_IF_ERROR(check_dim(op, "q_rope", a.q_rope, 0, a.q_latent.dim(0), "the rows of q_latent"));
    MOE_RETURN_IF_ERROR(check_dim(op, "q_rope", a.q_rope, 1, a.q_latent.dim(1), "the heads of q_latent"));
    MOE_RETURN_IF_ERROR(
        check_dim(op, "cache", a.cache, 2, a.q_latent.dim(2) + a.q_rope.dim(2), "latent + rope head dims"));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 0, a.q_latent.dim(0), "the rows of q_latent"));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 1, a.q_latent.dim(1), "the heads of q_latent"));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 2, a.q_latent.dim(2), "the latent dim"));
    if (!std::isfinite(a.scale)) return fail(op, "scale must be finite");
    return ok_status();
}

Status validate(const HeadGemmArgs& a) {
    constexpr const char* op = "head_gemm";
    MOE_RETURN_IF_ERROR(check_heads_view(op, "x", a.x));
    MOE_RETURN_IF_ERROR(check_view(op, "w", a.w, 2, kF32OrBf16));
    MOE_RETURN_IF_ERROR(check_view(op, "out", a.out, 3, kF32));
    MOE_RETURN_IF_ERROR(check_positive(op, "head_rows", a.head_rows));
    // Bounded before any product or sum below can overflow.
    if (a.head_rows > kMaxDim || a.row_offset > kMaxDim)
        return fail(op, "head_rows " + std::to_string(a.head_rows) + " and row_offset " + std::to_string(a.row_offset) +
                            " must be <= " + std::to_string(kMaxDim));
    MOE_RETURN_IF_ERROR(check_dim(op, "w", a.w, 0, a.x.dim(1) * a.head_rows, "heads x head_rows"));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 0, a.x.dim(0), "the rows of x"));
    MOE_RETURN_IF_ERROR(check_dim(op, "out", a.out, 1, a.x.dim(1), "the heads of x"));
    const int64_t rows_used = a.transpose_w ? a.out.dim(2) : a.x.dim(2);
    if (a.row_offset < 0 || a.row_offset + rows_used > a.head_rows)
        return fail(op, "row_offset " + std::to_string(a.row_offset) + " + " + std::to_string(rows_used) +
                            " rows is outside the head's " + std::to_string(a.head_rows) + " rows");
    if (a.transpose_w) return check_dim(op, "w", a.w, 1, a.x.dim(2), "the head dim of x");
    return check_dim(op, "w", a.w, 1, a.out.dim(2), "the head dim of out");
}

Status validate(const MoeRouteGroupedArgs& a) {
    constexpr const char* op = "moe_route_grouped";
    MOE_RETURN_IF_ERROR(check_view(op, "logits", a.logits, 2, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "bias", a.bias, 1, kF32));
    MOE_RETURN_IF_ERROR(check_view(op, "topk_ids", a.topk_ids, 2, kI32));
    MOE_RETURN_IF_ERROR(check_view(op, "topk_weights", a.topk_weights, 2, kF32));
    const int64_t E = a.logits.dim(1);
    MOE_RETURN_IF_ERROR(check_positive(op, "number of experts (logits dim 1)", E));
    MOE_RETURN_IF_ERROR(check_dim(op, "bias", a.bias, 0, E, "the experts"));
    if (a.num_groups < 1 || E % a.num_groups != 0)
        return fail(
            op, "num_groups " + std::to_string(a.num_groups) + " must divide the " + std::to_string(E) + " experts");
    if (a.topk_groups < 1 || a.topk_groups > a.num_groups)
        return fail(op, "topk_groups " + std::to_string(a.topk_groups) + " must be in [1, num_groups " +
                            std::to_string(a.num_groups) + "]");
    if (a.top_k < 1 || a.top_k > a.topk_groups * (E / a.num_groups))
        return fail(op, "top_k " + std::to_string(a.top_k) + " must be in [1, " +
                            std::to_string(a.topk_groups * (E / a.num_groups)) + "] (the experts of the kept groups)");
    MOE_RETURN_IF_ERROR(check_dim(op, "topk_ids", a.topk_ids, 0, a.logits.dim(0), "the tokens"));
    MOE_RETURN_IF_ERROR(check_dim(op, "topk_ids", a.topk_ids, 1, a.top_k, "top_k"));
    MOE_RETURN_IF_ERROR(check_dim(op, "topk_weights", a.topk_weights, 0, a.logits.dim(0), "the tokens"));
    MOE_RETURN_IF_ERROR(check_dim(op, "topk_weights", a.topk_weights, 1, a.top_k, "top_k"));
    if (!std::isfinite(a.scaling_factor)) return fail(op, "scaling_factor must be finite");
    return ok_status();
}

}  // namespace moe::ops
