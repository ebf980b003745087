#include "model/expert_parallel.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>

namespace moe {

// ---- placement -------------------------------------------------------------------------------

StatusOr<ExpertPlacement> ExpertPlacement::contiguous(int64_t num_experts, int world_size) {
    if (world_size < 1) return invalid_argument("expert placement: world size " + std::to_string(world_size) + " < 1");
    // NOTE: with fewer experts than ranks the last ranks hold none (they still run attention on
    // their own requests and take part in every exchange with zero rows).
    std::vector<std::vector<int32_t>> per_rank(static_cast<size_t>(world_size));
    const int64_t base = num_experts / world_size, extra = num_experts % world_size;
    int32_t e = 0;
    for (int r = 0; r < world_size; ++r)
        for (int64_t i = 0; i < base + (r < extra ? 1 : 0); ++i) per_rank[static_cast<size_t>(r)].push_back(e++);
    return from_rank_lists(num_experts, per_rank);
}

StatusOr<ExpertPlacement> ExpertPlacement::from_rank_lists(int64_t num_experts,
                                                           const std::vector<std::vector<int32_t>>& per_rank) {
    if (per_rank.empty()) return invalid_argument("expert placement: no ranks");
    if (num_experts < 1 || num_experts > (int64_t{1} << 20))
        return invalid_argument("expert placement: " + std::to_string(num_experts) + " experts outside [1, 2^20]");
    ExpertPlacement p;
    p.world_size = static_cast<int>(per_rank.size());
    p.num_experts = num_experts;
    p.rank_begin.push_back(0);
    for (size_t r = 0; r < per_rank.size(); ++r) {
        std::vector<bool> seen(static_cast<size_t>(num_experts), false);
        for (int32_t e : per_rank[r]) {
            if (e < 0 || e >= num_experts)
                return invalid_argument("expert placement: rank " + std::to_string(r) + " lists expert " +
                                        std::to_string(e) + " outside [0, " + std::to_string(num_experts) + ")");
            if (seen[static_cast<size_t>(e)])
                return invalid_argument("expert placement: rank " + std::to_string(r) + " lists expert " +
                                        std::to_string(e) + " twice");
            seen[static_cast<size_t>(e)] = true;
            p.logical_of.push_back(e);
            p.rank_of.push_back(static_cast<int32_t>(r));
        }
        p.rank_begin.push_back(static_cast<int64_t>(p.logical_of.size()));
    }
    MOE_RETURN_IF_ERROR(p.finish());
    return p;
}

Status ExpertPlacement::finish() {
    replicas.assign(static_cast<size_t>(num_experts), {});
    for (size_t s = 0; s < logical_of.size(); ++s)
        replicas[static_cast<size_t>(logical_of[s])].push_back(static_cast<int32_t>(s));
    for (int64_t e = 0; e < num_experts; ++e)
        if (replicas[static_cast<size_t>(e)].empty())
            return invalid_argument("expert placement: expert " + std::to_string(e) + " is held by no rank");
    identity_ = num_physical() == num_experts;
    for (size_t s = 0; identity_ && s < logical_of.size(); ++s) identity_ = logical_of[s] == static_cast<int32_t>(s);
    return ok_status();
}

int32_t ExpertPlacement::physical_for(int32_t e, int64_t token_idx, int rank) const {
    const std::vector<int32_t>& copies = replicas[static_cast<size_t>(e)];
    if (copies.size() == 1) return copies[0];
    for (int32_t s : copies)
        if (rank_of[static_cast<size_t>(s)] == rank) return s;
    return copies[static_cast<size_t>(token_idx % static_cast<int64_t>(copies.size()))];
}

// ---- exchange --------------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

ExpertExchange::ExpertExchange(comm::Communicator& comm, int64_t hidden, bool bf16_wire)
    : comm_(comm), hidden_(hidden), bf16_wire_(bf16_wire) {
    const size_t n = static_cast<size_t>(comm.size());
    send_counts_.resize(n);
    send_displs_.resize(n);
    recv_counts_.resize(n);
    recv_displs_.resize(n);
    rows_from_.resize(n);
}

Status ExpertExchange::begin_step(int64_t num_tokens, int64_t top_k) {
    int64_t max_tokens = num_tokens;
    MOE_RETURN_IF_ERROR(comm_.all_reduce_max(std::span<int64_t>(&max_tokens, 1)));
    // NOTE: a peer's rows for this rank are pairs (token, slot) of that peer's tokens, so no
    // honest peer sends more than max_tokens * top_k rows; a count beyond it is refused before
    // anything is allocated for it.
    max_rows_per_source_ = max_tokens * top_k;
    return ok_status();
}

Status ExpertExchange::dispatch(const ExpertPlacement& pl, const float* x_perm, std::span<const int32_t> off,
                                int64_t num_local_tokens) {
    const int N = comm_.size(), me = comm_.rank();
    const int64_t P = pl.num_physical(), H = hidden_;
    if (pl.world_size != N || static_cast<int64_t>(off.size()) != P + 1)
        return internal_error("expert exchange: placement for " + std::to_string(pl.world_size) + " ranks and " +
                              std::to_string(off.size()) + " offsets in a group of " + std::to_string(N));
    const int64_t my_begin = pl.rank_begin[static_cast<size_t>(me)];
    const int64_t L = pl.rank_begin[static_cast<size_t>(me) + 1] - my_begin;  // this rank's slots

    // ---- per-slot counts: rank d gets one int32 per slot it holds (a size both sides know)
    send_slot_counts_.resize(static_cast<size_t>(P));
    for (int64_t p = 0; p < P; ++p) send_slot_counts_[static_cast<size_t>(p)] = off[p + 1] - off[p];
    recv_slot_counts_.assign(static_cast<size_t>(N * L), 0);
    for (int d = 0; d < N; ++d) {
        const int64_t b = pl.rank_begin[static_cast<size_t>(d)], e = pl.rank_begin[static_cast<size_t>(d) + 1];
        send_displs_[static_cast<size_t>(d)] = b * 4;
        send_counts_[static_cast<size_t>(d)] = (e - b) * 4;
        recv_displs_[static_cast<size_t>(d)] = static_cast<int64_t>(d) * L * 4;
        recv_counts_[static_cast<size_t>(d)] = L * 4;
    }
    auto t0 = Clock::now();
    MOE_RETURN_IF_ERROR(comm_
                            .all_to_all_v(std::as_bytes(std::span(send_slot_counts_)), send_counts_, send_displs_,
                                          std::as_writable_bytes(std::span(recv_slot_counts_)), recv_counts_,
                                          recv_displs_)
                            .with_context("expert dispatch (counts)"));
    stats_.exchange_seconds += seconds_since(t0);

    // ---- what arrives: checked against the step's bound before any buffer grows for it
    int64_t total = 0;
    for (int s = 0; s < N; ++s) {
        int64_t rows = 0;
        for (int64_t q = 0; q < L; ++q) {
            const int32_t c = recv_slot_counts_[static_cast<size_t>(s * L + q)];
            if (c < 0)
                return data_loss("expert dispatch: rank " + std::to_string(s) + " announced " + std::to_string(c) +
                                 " rows for expert slot " + std::to_string(my_begin + q));
            rows += c;
        }
        if (rows > max_rows_per_source_)
            return data_loss("expert dispatch: rank " + std::to_string(s) + " announced " + std::to_string(rows) +
                             " rows, more than the step's limit of " + std::to_string(max_rows_per_source_) +
                             " (its tokens x top_k)");
        rows_from_[static_cast<size_t>(s)] = rows;
        total += rows;
    }
    local_rows_ = total;

    // ---- the rows: rank d's slice of x_perm is [off[b_d], off[e_d])
    const size_t row_bytes = static_cast<size_t>(H) * (bf16_wire_ ? 2 : 4);
    const std::byte* send = reinterpret_cast<const std::byte*>(x_perm);
    const int64_t my_rows = off[P];
    if (bf16_wire_) {
        send_bf16_.resize(static_cast<size_t>(my_rows * H));
        convert_from_f32(x_perm, send_bf16_.data(), DType::kBF16, static_cast<size_t>(my_rows * H));
        send = reinterpret_cast<const std::byte*>(send_bf16_.data());
    }
    int64_t sent_to_peers = 0, displ = 0;
    for (int d = 0; d < N; ++d) {
        const int64_t b = off[pl.rank_begin[static_cast<size_t>(d)]],
                      e = off[pl.rank_begin[static_cast<size_t>(d) + 1]];
        send_displs_[static_cast<size_t>(d)] = b * static_cast<int64_t>(row_bytes);
        send_counts_[static_cast<size_t>(d)] = (e - b) * static_cast<int64_t>(row_bytes);
        if (d != me) sent_to_peers += send_counts_[static_cast<size_t>(d)];
        recv_displs_[static_cast<size_t>(d)] = displ;
        recv_counts_[static_cast<size_t>(d)] = rows_from_[static_cast<size_t>(d)] * static_cast<int64_t>(row_bytes);
        displ += recv_counts_[static_cast<size_t>(d)];
    }
    recv_buf_.resize(static_cast<size_t>(std::max<int64_t>(displ, 1)));
    t0 = Clock::now();
    MOE_RETURN_IF_ERROR(comm_
                            .all_to_all_v(std::span(send, static_cast<size_t>(my_rows) * row_bytes), send_counts_,
                                          send_displs_, std::span(recv_buf_), recv_counts_, recv_displs_)
                            .with_context("expert dispatch (rows)"));
    stats_.exchange_seconds += seconds_since(t0);
    stats_.dispatch_bytes += sent_to_peers;
    stats_.tokens += num_local_tokens;
    stats_.moe_layer_calls += 1;
    stats_.rows_received += total;

    // ---- regroup slot-major (each local expert's rows from every source together, so its
    // weights are read once), f32 for the kernels
    //
    //   recv_buf_: [src 0: slot a rows, slot b rows][src 1: slot a rows, slot b rows]...
    //   x_local_:  [slot a: src 0 rows, src 1 rows][slot b: src 0 rows, src 1 rows]...
    x_local_.resize(static_cast<size_t>(std::max<int64_t>(total, 1) * H));
    out_local_.resize(x_local_.size());
    local_offsets_.assign(static_cast<size_t>(P + 1), 0);
    std::vector<int64_t> src_pos(static_cast<size_t>(N));  // next row of source s in recv_buf_
    for (int s = 0; s < N; ++s)
        src_pos[static_cast<size_t>(s)] = recv_displs_[static_cast<size_t>(s)] / static_cast<int64_t>(row_bytes);
    int64_t row = 0;
    for (int64_t q = 0; q < L; ++q) {
        local_offsets_[static_cast<size_t>(my_begin + q)] = static_cast<int32_t>(row);
        for (int s = 0; s < N; ++s) {
            const int64_t c = recv_slot_counts_[static_cast<size_t>(s * L + q)];
            const std::byte* src = recv_buf_.data() + static_cast<size_t>(src_pos[static_cast<size_t>(s)]) * row_bytes;
            float* dst = x_local_.data() + row * H;
            if (bf16_wire_)
                convert_to_f32(src, DType::kBF16, dst, static_cast<size_t>(c * H));
            else
                std::memcpy(dst, src, static_cast<size_t>(c) * row_bytes);
            src_pos[static_cast<size_t>(s)] += c;
            row += c;
        }
    }
    for (int64_t p = my_begin + L; p <= P; ++p) local_offsets_[static_cast<size_t>(p)] = static_cast<int32_t>(row);
    return ok_status();
}

Status ExpertExchange::combine(const ExpertPlacement& pl, float* out_perm, std::span<const int32_t> off) {
    const int N = comm_.size(), me = comm_.rank();
    const int64_t P = pl.num_physical(), H = hidden_;
    const int64_t my_begin = pl.rank_begin[static_cast<size_t>(me)];
    const int64_t L = pl.rank_begin[static_cast<size_t>(me) + 1] - my_begin;
    const size_t row_bytes = static_cast<size_t>(H) * 4;
    // Slot-major expert outputs back to source-major, the inverse of dispatch's regrouping.
    combine_send_.resize(static_cast<size_t>(std::max<int64_t>(local_rows_, 1) * H));
    std::vector<int64_t> src_pos(static_cast<size_t>(N));
    int64_t displ = 0;
    for (int s = 0; s < N; ++s) {
        src_pos[static_cast<size_t>(s)] = displ;
        send_displs_[static_cast<size_t>(s)] = displ * static_cast<int64_t>(row_bytes);
        send_counts_[static_cast<size_t>(s)] = rows_from_[static_cast<size_t>(s)] * static_cast<int64_t>(row_bytes);
        displ += rows_from_[static_cast<size_t>(s)];
    }
    int64_t row = 0;
    for (int64_t q = 0; q < L; ++q) {
        for (int s = 0; s < N; ++s) {
            const int64_t c = recv_slot_counts_[static_cast<size_t>(s * L + q)];
            std::memcpy(combine_send_.data() + src_pos[static_cast<size_t>(s)] * H, out_local_.data() + row * H,
                        static_cast<size_t>(c) * row_bytes);
            src_pos[static_cast<size_t>(s)] += c;
            row += c;
        }
    }
    int64_t sent_to_peers = 0;
    for (int d = 0; d < N; ++d) {
        if (d != me) sent_to_peers += send_counts_[static_cast<size_t>(d)];
        const int64_t b = off[pl.rank_begin[static_cast<size_t>(d)]],
                      e = off[pl.rank_begin[static_cast<size_t>(d) + 1]];
        recv_displs_[static_cast<size_t>(d)] = b * static_cast<int64_t>(row_bytes);
        recv_counts_[static_cast<size_t>(d)] = (e - b) * static_cast<int64_t>(row_bytes);
    }
    const auto t0 = Clock::now();
    MOE_RETURN_IF_ERROR(
        comm_
            .all_to_all_v(std::as_bytes(std::span(combine_send_)), send_counts_, send_displs_,
                          std::span(reinterpret_cast<std::byte*>(out_perm), static_cast<size_t>(off[P]) * row_bytes),
                          recv_counts_, recv_displs_)
            .with_context("expert combine"));
    stats_.exchange_seconds += seconds_since(t0);
    stats_.combine_bytes += sent_to_peers;
    return ok_status();
}

}  // namespace moe
