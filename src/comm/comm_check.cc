#include "comm/comm_check.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace moe::comm {
namespace {

Status check_side(const std::string& who, const char* side, size_t buf_bytes, std::span<const int64_t> counts,
                  std::span<const int64_t> displs, int64_t max_count) {
    const auto size = static_cast<int64_t>(std::min<size_t>(buf_bytes, INT64_MAX));
    for (size_t r = 0; r < counts.size(); ++r) {
        const int64_t c = counts[r], d = displs[r];
        if (c < 0 || d < 0)
            return out_of_range(fmt::format("{}: {}_counts[{}] = {} and {}_displs[{}] = {} must be non-negative", who,
                                            side, r, c, side, r, d));
        if (c > max_count || d > max_count)
            return out_of_range(
                fmt::format("{}: {}_counts[{}] = {} or {}_displs[{}] = {} exceeds the library's "
                            "limit of {} bytes per peer (refused, not truncated)",
                            who, side, r, c, side, r, d, max_count));
        if (d > size || c > size - d)
            // Displacement and count printed apart: their sum may not fit in int64.
            return out_of_range(fmt::format(
                "{}: {} range of rank {} ({} bytes at displacement {}) falls outside the {} buffer of {} bytes", who,
                side, r, c, d, side, size));
    }
    return ok_status();
}

}  // namespace

Status check_all_to_all_v(const std::string& who, int group_size, const void* send_data, size_t send_bytes,
                          std::span<const int64_t> send_counts, std::span<const int64_t> send_displs,
                          const void* recv_data, size_t recv_bytes, std::span<const int64_t> recv_counts,
                          std::span<const int64_t> recv_displs, int64_t max_count) {
    const auto n = static_cast<size_t>(group_size);
    for (auto [len, name] : {std::pair{send_counts.size(), "send_counts"},
                             {send_displs.size(), "send_displs"},
                             {recv_counts.size(), "recv_counts"},
                             {recv_displs.size(), "recv_displs"}}) {
        if (len != n)
            return invalid_argument(
                fmt::format("{}: {} has {} entries, the group has {} ranks", who, name, len, group_size));
    }
    if (send_bytes > 0 && recv_bytes > 0 && send_data != nullptr && recv_data != nullptr) {
        // Aliased buffers are erroneous in MPI; OpenMPI's libnbc even takes send == recv as
        // MPI_IN_PLACE and runs another algorithm than its peers, which then hang.
        const auto s0 = reinterpret_cast<uintptr_t>(send_data), r0 = reinterpret_cast<uintptr_t>(recv_data);
        if (s0 < r0 + recv_bytes && r0 < s0 + send_bytes)
            return invalid_argument(
                fmt::format("{}: the send buffer ({} bytes) and the receive buffer ({} bytes) overlap", who, send_bytes,
                            recv_bytes));
    }
    MOE_RETURN_IF_ERROR(check_side(who, "send", send_bytes, send_counts, send_displs, max_count));
    MOE_RETURN_IF_ERROR(check_side(who, "recv", recv_bytes, recv_counts, recv_displs, max_count));
    // Receive ranges must not overlap: sort the non-empty ones by start.
    std::vector<std::pair<int64_t, size_t>> ranges;
    for (size_t r = 0; r < n; ++r)
        if (recv_counts[r] > 0) ranges.emplace_back(recv_displs[r], r);
    std::sort(ranges.begin(), ranges.end());
    for (size_t k = 1; k < ranges.size(); ++k) {
        const size_t a = ranges[k - 1].second, b = ranges[k].second;
        if (recv_displs[a] + recv_counts[a] > recv_displs[b])
            return invalid_argument(fmt::format("{}: receive ranges of ranks {} [{}, {}) and {} [{}, {}) overlap", who,
                                                a, recv_displs[a], recv_displs[a] + recv_counts[a], b, recv_displs[b],
                                                recv_displs[b] + recv_counts[b]));
    }
    return ok_status();
}

Status check_self_count(const std::string& who, int rank, std::span<const int64_t> send_counts,
                        std::span<const int64_t> recv_counts) {
    const auto me = static_cast<size_t>(rank);
    if (send_counts[me] == recv_counts[me]) return ok_status();
    return invalid_argument(
        fmt::format("{}: sends {} bytes to itself but expects {}", who, send_counts[me], recv_counts[me]));
}

}  // namespace moe::comm
