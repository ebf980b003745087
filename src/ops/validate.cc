// Shape, dtype and layout checks shared by every backend. Data-dependent checks (ids in range,
// slots inside the cache) need the data on the host and live with the kernels (ops/data_checks.h).
#include <cmath>
#include <initializer_list>
#include <string>

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

}  // namespace moe::ops
