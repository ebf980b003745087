// Checks shared by the Communicator implementations: the spans of an all_to_all_v call against
// the group size and the buffers, before any byte moves.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "moe/status.h"

namespace moe::comm {

// kInvalidArgument when a span's length is not `group_size`; kOutOfRange when a count or a
// displacement is negative, above `max_count` (the library's count type, e.g. INT_MAX for MPI),
// or a range [displ, displ + count) falls outside its buffer; kInvalidArgument when two receive
// ranges overlap (the library would write them in an unspecified order) or the send and receive
// buffers overlap in memory (aliasing is erroneous in MPI and NCCL). `who` prefixes the
// message (e.g. "MpiComm rank 1: all_to_all_v").
Status check_all_to_all_v(const std::string& who, int group_size, const void* send_data, size_t send_bytes,
                          std::span<const int64_t> send_counts, std::span<const int64_t> send_displs,
                          const void* recv_data, size_t recv_bytes, std::span<const int64_t> recv_counts,
                          std::span<const int64_t> recv_displs, int64_t max_count);

// kInvalidArgument when what `rank` sends to itself is not what it expects from itself (both
// spans already checked to have an entry for `rank`).
Status check_self_count(const std::string& who, int rank, std::span<const int64_t> send_counts,
                        std::span<const int64_t> recv_counts);

}  // namespace moe::comm
