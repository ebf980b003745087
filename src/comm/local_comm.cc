// LocalComm: the group of one rank. Collectives copy the caller's own slice or do nothing.
#include <cstring>

#include "comm/comm_check.h"
#include "comm/communicator.h"

namespace moe::comm {
namespace {

Status check_one(size_t n, const char* what) {
    if (n != 1)
        return invalid_argument(std::string("LocalComm: ") + what + " has " + std::to_string(n) +
                                " entries, the group has 1 rank");
    return ok_status();
}

class LocalComm final : public Communicator {
public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    const char* kind() const override { return "local"; }

    Status all_reduce_sum(std::span<int64_t>) override { return ok_status(); }
    Status all_reduce_max(std::span<int64_t>) override { return ok_status(); }

    Status all_to_all_v(std::span<const std::byte> send, std::span<const int64_t> send_counts,
                        std::span<const int64_t> send_displs, std::span<std::byte> recv,
                        std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs) override {
        for (auto [s, name] : {std::pair{send_counts.size(), "send_counts"},
                               {send_displs.size(), "send_displs"},
                               {recv_counts.size(), "recv_counts"},
                               {recv_displs.size(), "recv_displs"}}) {
            if (Status st = check_one(s, name); !st.ok()) return st;
        }
        const int64_t n = send_counts[0];
        MOE_RETURN_IF_ERROR(check_self_count("LocalComm: all_to_all_v", 0, send_counts, recv_counts));
        if (n < 0 || send_displs[0] < 0 || recv_displs[0] < 0 || send_displs[0] > static_cast<int64_t>(send.size()) ||
            n > static_cast<int64_t>(send.size()) - send_displs[0] ||
            recv_displs[0] > static_cast<int64_t>(recv.size()) ||
            n > static_cast<int64_t>(recv.size()) - recv_displs[0]) {
            return out_of_range("LocalComm: all_to_all_v count " + std::to_string(n) + " with displacements " +
                                std::to_string(send_displs[0]) + "/" + std::to_string(recv_displs[0]) +
                                " falls outside the send (" + std::to_string(send.size()) + " B) or receive (" +
                                std::to_string(recv.size()) + " B) buffer");
        }
        if (n > 0) std::memmove(recv.data() + recv_displs[0], send.data() + send_displs[0], static_cast<size_t>(n));
        return ok_status();
    }

    Status all_to_all_counts(std::span<const int64_t> in, std::span<int64_t> out) override {
        if (Status st = check_one(in.size(), "in"); !st.ok()) return st;
        if (Status st = check_one(out.size(), "out"); !st.ok()) return st;
        out[0] = in[0];
        return ok_status();
    }

    Status barrier() override { return ok_status(); }
    void abort(const std::string&) override {}
};

}  // namespace

std::unique_ptr<Communicator> make_local_comm() {
    return std::make_unique<LocalComm>();
}

}  // namespace moe::comm
