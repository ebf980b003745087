// ops::run: validate once, check that every tensor lives on the backend's device, then call the
// backend's table entry. A null entry is "not supported here" (kUnimplemented), not a failure
// of the caller.
#include <initializer_list>
#include <string>
#include <utility>

#include "ops/mla_ops.h"
#include "ops/ops.h"

namespace moe::ops {
namespace {

using Named = std::pair<const char*, const TensorView*>;

Status check_devices(const Backend& be, const char* op, std::initializer_list<Named> views) {
    for (const auto& [name, view] : views) {
        if (view->empty() || view->device == be.device()) continue;
        return invalid_argument(std::string(op) + ": " + name + " is on " + view->device.to_string() + " but backend " +
                                be.name() + " runs on " + be.device().to_string());
    }
    return ok_status();
}

// A prepared weight can only be read by the backend that made it.
Status check_weight_owner(const Backend& be, const char* op, const char* name, const WeightView& w) {
    if (w.prepared == nullptr || &w.prepared->backend() == &be) return ok_status();
    return invalid_argument(std::string(op) + ": " + name + " was prepared by backend " + w.prepared->backend().name() +
                            ", not by this " + be.name() + " backend");
}

template <typename Args>
Status call(Backend& be, const char* op, Status (*fn)(Backend&, const Args&), const Args& a,
            std::initializer_list<Named> views) {
    MOE_RETURN_IF_ERROR(validate(a));
    MOE_RETURN_IF_ERROR(check_devices(be, op, views));
    if (fn == nullptr) return unimplemented(std::string("op ") + op + " is not supported by backend " + be.name());
    return fn(be, a);
}

}  // namespace

Status run(Backend& be, const EmbeddingArgs& a) {
    return call(be, "embedding", be.ops().embedding, a, {{"ids", &a.ids}, {"table", &a.table}, {"out", &a.out}});
}
Status run(Backend& be, const RmsNormArgs& a) {
    return call(be, "rms_norm", be.ops().rms_norm, a, {{"x", &a.x}, {"weight", &a.weight}, {"out", &a.out}});
}
Status run(Backend& be, const RopeArgs& a) {
    return call(be, "rope", be.ops().rope, a, {{"q", &a.q}, {"k", &a.k}, {"positions", &a.positions}});
}
Status run(Backend& be, const GemmArgs& a) {
    MOE_RETURN_IF_ERROR(check_weight_owner(be, "gemm", "w", a.w));
    return call(be, "gemm", be.ops().gemm, a, {{"x", &a.x}, {"w", &a.w.tensor}, {"bias", &a.bias}, {"y", &a.y}});
}
Status run(Backend& be, const SiluMulArgs& a) {
    return call(be, "silu_mul", be.ops().silu_mul, a, {{"gate", &a.gate}, {"up", &a.up}, {"out", &a.out}});
}
Status run(Backend& be, const AddArgs& a) {
    return call(be, "add", be.ops().add, a, {{"a", &a.a}, {"b", &a.b}, {"out", &a.out}});
}
Status run(Backend& be, const KvWriteArgs& a) {
    return call(be, "kv_write", be.ops().kv_write, a,
                {{"k", &a.k},
                 {"v", &a.v},
                 {"slot_mapping", &a.slot_mapping},
                 {"k_cache", &a.k_cache},
                 {"v_cache", &a.v_cache}});
}
Status run(Backend& be, const AttentionArgs& a) {
    return call(be, "attention", be.ops().attention, a,
                {{"q", &a.q},
                 {"k_cache", &a.k_cache},
                 {"v_cache", &a.v_cache},
                 {"block_tables", &a.block_tables},
                 {"query_start", &a.query_start},
                 {"kv_lens", &a.kv_lens},
                 {"out", &a.out}});
}
Status run(Backend& be, const MoeRouteArgs& a) {
    return call(be, "moe_route", be.ops().moe_route, a,
                {{"logits", &a.logits}, {"topk_ids", &a.topk_ids}, {"topk_weights", &a.topk_weights}});
}
Status run(Backend& be, const MoeSharedGateArgs& a) {
    return call(be, "moe_shared_gate", be.ops().moe_shared_gate, a,
                {{"gate_logits", &a.gate_logits}, {"shared_out", &a.shared_out}, {"y", &a.y}});
}
Status run(Backend& be, const MoePermuteArgs& a) {
    return call(be, "moe_permute", be.ops().moe_permute, a,
                {{"x", &a.x},
                 {"topk_ids", &a.topk_ids},
                 {"x_permuted", &a.x_permuted},
                 {"expert_offsets", &a.expert_offsets},
                 {"row_of", &a.row_of},
                 {"token_of", &a.token_of}});
}
Status run(Backend& be, const MoeExpertsArgs& a) {
    MOE_RETURN_IF_ERROR(validate(a));
    MOE_RETURN_IF_ERROR(check_devices(
        be, "moe_experts",
        {{"x_permuted", &a.x_permuted}, {"expert_offsets", &a.expert_offsets}, {"out_permuted", &a.out_permuted}}));
    for (size_t e = 0; e < a.w_gate.size(); ++e) {
        MOE_RETURN_IF_ERROR(check_devices(
            be, "moe_experts",
            {{"w_gate", &a.w_gate[e].tensor}, {"w_up", &a.w_up[e].tensor}, {"w_down", &a.w_down[e].tensor}}));
        MOE_RETURN_IF_ERROR(check_weight_owner(be, "moe_experts", "w_gate", a.w_gate[e]));
        MOE_RETURN_IF_ERROR(check_weight_owner(be, "moe_experts", "w_up", a.w_up[e]));
        MOE_RETURN_IF_ERROR(check_weight_owner(be, "moe_experts", "w_down", a.w_down[e]));
    }
    if (be.ops().moe_experts == nullptr)
        return unimplemented(std::string("op moe_experts is not supported by backend ") + be.name());
    return be.ops().moe_experts(be, a);
}
Status run(Backend& be, const MoeUnpermuteArgs& a) {
    return call(
        be, "moe_unpermute", be.ops().moe_unpermute, a,
        {{"out_permuted", &a.out_permuted}, {"row_of", &a.row_of}, {"topk_weights", &a.topk_weights}, {"y", &a.y}});
}

Status run(Backend& be, const RopeTableArgs& a) {
    return call(be, "rope_table", be.ops().rope_table, a,
                {{"x", &a.x}, {"positions", &a.positions}, {"inv_freq", &a.inv_freq}});
}
Status run(Backend& be, const LatentWriteArgs& a) {
    return call(be, "latent_write", be.ops().latent_write, a,
                {{"rows", &a.rows}, {"slot_mapping", &a.slot_mapping}, {"cache", &a.cache}});
}
Status run(Backend& be, const LatentGatherArgs& a) {
    return call(be, "latent_gather", be.ops().latent_gather, a,
                {{"cache", &a.cache}, {"slots", &a.slots}, {"out", &a.out}});
}
Status run(Backend& be, const MlaExpandArgs& a) {
    return call(be, "mla_expand", be.ops().mla_expand, a,
                {{"kv", &a.kv}, {"k_rope", &a.k_rope}, {"k", &a.k}, {"v", &a.v}});
}
Status run(Backend& be, const RaggedAttentionArgs& a) {
    return call(be, "ragged_attention", be.ops().ragged_attention, a,
                {{"q", &a.q},
                 {"k", &a.k},
                 {"v", &a.v},
                 {"query_start", &a.query_start},
                 {"kv_start", &a.kv_start},
                 {"out", &a.out}});
}
Status run(Backend& be, const MlaAttentionArgs& a) {
    return call(be, "mla_attention", be.ops().mla_attention, a,
                {{"q_latent", &a.q_latent},
                 {"q_rope", &a.q_rope},
                 {"cache", &a.cache},
                 {"block_tables", &a.block_tables},
                 {"query_start", &a.query_start},
                 {"kv_lens", &a.kv_lens},
                 {"out", &a.out}});
}
Status run(Backend& be, const HeadGemmArgs& a) {
    return call(be, "head_gemm", be.ops().head_gemm, a, {{"x", &a.x}, {"w", &a.w}, {"out", &a.out}});
}
Status run(Backend& be, const MoeRouteGroupedArgs& a) {
    return call(
        be, "moe_route_grouped", be.ops().moe_route_grouped, a,
        {{"logits", &a.logits}, {"bias", &a.bias}, {"topk_ids", &a.topk_ids}, {"topk_weights", &a.topk_weights}});
}

}  // namespace moe::ops
