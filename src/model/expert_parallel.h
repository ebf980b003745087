// Expert parallelism inside the model: which rank holds which routed experts (ExpertPlacement)
// and the per-MoE-layer exchange of token rows between the ranks of a group (ExpertExchange).
//
// The layout is the "DP attention + EP" one: every rank holds the attention, the norms, the
// router, the embeddings and any shared expert, runs them on its own tokens, and holds only its
// share of the routed experts. Per MoE layer (docs/ARCHITECTURE.md, "Expert parallelism"):
//
//   route -> [remap logical -> physical] -> permute (rows grouped by physical expert, so each
//   rank's rows are one contiguous slice) -> dispatch (per-expert row counts, then the rows)
//   -> local grouped experts over the rows of every source -> combine (each row back to its
//   source, in the source's order) -> the weighted unpermute, in slot order.
//
// Thread safety: one thread (the engine thread) per ExpertExchange, like the Communicator.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "moe/dtype.h"
#include "moe/status.h"

namespace moe {

// Where the routed experts of one MoE layer live. A physical expert (a slot) is one copy of a
// logical expert (the router's id) on one rank; a hot expert may have several copies on
// different ranks (EPLB). Slots are numbered rank by rank, so the slots of rank r are
// [rank_begin[r], rank_begin[r + 1]) and the permuted rows of a rank are one contiguous slice.
struct ExpertPlacement {
    int world_size = 1;
    int64_t num_experts = 0;                     // logical experts (the router's width)
    std::vector<int32_t> logical_of;             // [num_physical]: the logical expert a slot holds
    std::vector<int32_t> rank_of;                // [num_physical]: the rank that holds it
    std::vector<int64_t> rank_begin;             // [world_size + 1]
    std::vector<std::vector<int32_t>> replicas;  // [num_experts]: the slots of each logical expert

    int64_t num_physical() const { return static_cast<int64_t>(logical_of.size()); }
    // One slot per logical expert, slot e == expert e: no remap before the permute.
    bool identity() const { return identity_; }

    // Contiguous ranges: rank r holds E / N experts, the first E % N ranks one more (with E < N
    // the last ranks hold none). kInvalidArgument unless world_size >= 1 and num_experts >= 1.
    static StatusOr<ExpertPlacement> contiguous(int64_t num_experts, int world_size);
    // per_rank[r] lists the logical experts rank r holds (each at most once per rank; a rank may
    // hold none); every logical expert must be held somewhere. Errors name the rank and the expert.
    static StatusOr<ExpertPlacement> from_rank_lists(int64_t num_experts,
                                                     const std::vector<std::vector<int32_t>>& per_rank);

    // The slot that serves logical expert `e` for the token at `token_idx` on `rank`: a copy on
    // `rank` itself when there is one (no traffic), else the copies in turn by token index.
    int32_t physical_for(int32_t e, int64_t token_idx, int rank) const;

private:
    Status finish();
    bool identity_ = false;
};

// What the exchange did since the model was built (for the benchmark, GetLoad, logs).
struct ExpertParallelStats {
    int64_t moe_layer_calls = 0;  // MoE layers run (each step counts every MoE layer once)
    int64_t tokens = 0;           // local tokens summed over those layer calls
    int64_t dispatch_bytes = 0;   // activation bytes this rank sent to other ranks (dispatch)
    int64_t combine_bytes = 0;    // expert output bytes this rank sent back to other ranks
    int64_t rows_received = 0;    // rows this rank's experts computed for every source
    double exchange_seconds = 0;  // wall time in the dispatch and combine collectives
    // (dispatch_bytes + combine_bytes) / tokens: bytes per token per MoE layer.
    double bytes_per_token_layer() const {
        return tokens > 0 ? static_cast<double>(dispatch_bytes + combine_bytes) / static_cast<double>(tokens) : 0.0;
    }
};

// What the model's load takes (ModelLoadOptions::expert_parallel).
struct ExpertParallelOptions {
    // The group; not owned, must outlive the model. Null: no expert parallelism (every expert
    // here, today's path). A group of one rank also runs today's path (no exchange, no copies).
    comm::Communicator* comm = nullptr;
    // Per layer (index = layer index, entries for dense layers ignored), or one entry for every
    // layer; empty: contiguous ranges. Each placement's world size must be the group's.
    std::vector<ExpertPlacement> placement;
};

// The per-step, per-layer exchange over host memory (the CPU backend; device buffers through
// NcclComm are not built). Buffers are kept across steps (grown, never shrunk).
class ExpertExchange {
public:
    // `bf16_wire`: dispatch rows travel as bf16 (the expert kernels round their input to bf16
    // anyway, so the result is bitwise the same), else as f32. Combine is always f32.
    ExpertExchange(comm::Communicator& comm, int64_t hidden, bool bf16_wire);

    comm::Communicator& comm() { return comm_; }
    int rank() const { return comm_.rank(); }
    int size() const { return comm_.size(); }

    // Once per step, before the first layer, on every rank: the group's largest local token
    // count (an all_reduce_max), the bound on what a peer may send in this step.
    Status begin_step(int64_t num_tokens, int64_t top_k);

    // Dispatch: `x_perm` f32 [offsets[P], hidden] grouped by slot, `offsets` [P + 1] (host).
    // Sends each rank its slice and the per-slot counts, receives the rows of every source for
    // this rank's slots and regroups them slot-major. On return, local_x() holds them and
    // local_offsets() ([P + 1]: zero rows outside this rank's slots) delimits them.
    Status dispatch(const ExpertPlacement& placement, const float* x_perm, std::span<const int32_t> offsets,
                    int64_t num_local_tokens);
    float* local_x() { return x_local_.data(); }
    float* local_out() { return out_local_.data(); }
    int64_t local_rows() const { return local_rows_; }
    std::span<const int32_t> local_offsets() const { return local_offsets_; }

    // Combine: local_out() (slot-major, as dispatch left it) back to each source; this rank's
    // own rows land in `out_perm` f32 [offsets[P], hidden] where dispatch took them from.
    Status combine(const ExpertPlacement& placement, float* out_perm, std::span<const int32_t> offsets);

    const ExpertParallelStats& stats() const { return stats_; }

private:
    comm::Communicator& comm_;
    int64_t hidden_;
    bool bf16_wire_;
    int64_t max_rows_per_source_ = 0;  // begin_step's bound
    ExpertParallelStats stats_;

    // Per step-layer bookkeeping: counts[s * L + q] rows of local slot q from source s.
    std::vector<int32_t> send_slot_counts_, recv_slot_counts_;
    std::vector<int64_t> send_counts_, send_displs_, recv_counts_, recv_displs_;
    std::vector<int64_t> rows_from_;   // [N] rows from each source
    std::vector<uint16_t> send_bf16_;  // the wire form of x_perm when bf16
    std::vector<std::byte> recv_buf_;  // source-major rows as received
    std::vector<float> x_local_, out_local_, combine_send_;
    std::vector<int32_t> local_offsets_;
    int64_t local_rows_ = 0;
};

}  // namespace moe
