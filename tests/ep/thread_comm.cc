#include "ep/thread_comm.h"

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>

namespace moe::testing {
namespace {

// What each rank posts for the collective in progress: pointers into its own buffers, read by
// the others between the two barriers of the collective.
struct Post {
    const std::byte* send = nullptr;
    const int64_t* counts = nullptr;
    const int64_t* displs = nullptr;
    size_t send_bytes = 0;
    const int64_t* values = nullptr;
};

struct Group {
    explicit Group(int n, std::chrono::milliseconds t) : size(n), timeout(t), posts(static_cast<size_t>(n)) {}
    const int size;
    const std::chrono::milliseconds timeout;
    std::mutex mu;
    std::condition_variable cv;
    int arrived = 0;
    int64_t generation = 0;
    bool broken = false;
    std::string reason;
    std::vector<Post> posts;
};

class ThreadComm final : public comm::Communicator {
public:
    ThreadComm(std::shared_ptr<Group> g, int rank) : g_(std::move(g)), rank_(rank) {}

    int rank() const override { return rank_; }
    int size() const override { return g_->size; }
    const char* kind() const override { return "thread"; }

    Status all_reduce_sum(std::span<int64_t> v) override { return reduce(v, false, "all_reduce_sum"); }
    Status all_reduce_max(std::span<int64_t> v) override { return reduce(v, true, "all_reduce_max"); }

    Status all_to_all_v(std::span<const std::byte> send, std::span<const int64_t> send_counts,
                        std::span<const int64_t> send_displs, std::span<std::byte> recv,
                        std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs) override {
        const size_t n = static_cast<size_t>(g_->size);
        if (send_counts.size() != n || send_displs.size() != n || recv_counts.size() != n || recv_displs.size() != n)
            return invalid_argument("ThreadComm: all_to_all_v spans must have one entry per rank");
        for (size_t r = 0; r < n; ++r) {
            if (send_counts[r] < 0 || send_displs[r] < 0 ||
                send_displs[r] + send_counts[r] > static_cast<int64_t>(send.size()))
                return out_of_range("ThreadComm: send slice for rank " + std::to_string(r) + " outside the buffer");
            if (recv_counts[r] < 0 || recv_displs[r] < 0 ||
                recv_displs[r] + recv_counts[r] > static_cast<int64_t>(recv.size()))
                return out_of_range("ThreadComm: receive slice for rank " + std::to_string(r) + " outside the buffer");
        }
        MOE_RETURN_IF_ERROR(post({.send = send.data(),
                                  .counts = send_counts.data(),
                                  .displs = send_displs.data(),
                                  .send_bytes = send.size(),
                                  .values = nullptr},
                                 "all_to_all_v"));
        Status st = ok_status();
        for (size_t s = 0; s < n; ++s) {
            const Post& p = g_->posts[s];
            const int64_t c = p.counts[rank_];
            if (c != recv_counts[s]) {
                st = data_loss("ThreadComm: rank " + std::to_string(s) + " sends " + std::to_string(c) +
                               " bytes, rank " + std::to_string(rank_) + " expects " + std::to_string(recv_counts[s]));
                break;
            }
            if (c > 0) std::memcpy(recv.data() + recv_displs[s], p.send + p.displs[rank_], static_cast<size_t>(c));
        }
        MOE_RETURN_IF_ERROR(barrier_named("all_to_all_v"));
        return st;
    }

    Status all_to_all_counts(std::span<const int64_t> in, std::span<int64_t> out) override {
        const size_t n = static_cast<size_t>(g_->size);
        if (in.size() != n || out.size() != n) return invalid_argument("ThreadComm: all_to_all_counts spans");
        MOE_RETURN_IF_ERROR(post({.values = in.data()}, "all_to_all_counts"));
        for (size_t s = 0; s < n; ++s) out[s] = g_->posts[s].values[rank_];
        return barrier_named("all_to_all_counts");
    }

    Status barrier() override { return barrier_named("barrier"); }

    void abort(const std::string& reason) override {
        std::lock_guard<std::mutex> lock(g_->mu);
        if (!g_->broken) {
            g_->broken = true;
            g_->reason = "rank " + std::to_string(rank_) + " aborted: " + reason;
        }
        g_->cv.notify_all();
    }

private:
    Status reduce(std::span<int64_t> v, bool max, const char* what) {
        std::vector<int64_t> mine(v.begin(), v.end());
        MOE_RETURN_IF_ERROR(post({.values = mine.data()}, what));
        for (int s = 0; s < g_->size; ++s) {
            if (s == rank_) continue;
            for (size_t i = 0; i < v.size(); ++i) {
                const int64_t x = g_->posts[static_cast<size_t>(s)].values[i];
                v[i] = max ? std::max(v[i], x) : v[i] + x;
            }
        }
        return barrier_named(what);
    }

    Status post(const Post& p, const char* what) {
        {
            std::lock_guard<std::mutex> lock(g_->mu);
            g_->posts[static_cast<size_t>(rank_)] = p;
        }
        return barrier_named(what);
    }

    // Everyone arrives or the collective fails (UNAVAILABLE) and the group is broken for good.
    Status barrier_named(const char* what) {
        std::unique_lock<std::mutex> lock(g_->mu);
        if (g_->broken) return unavailable(std::string("ThreadComm ") + what + ": group broken: " + g_->reason);
        const int64_t gen = g_->generation;
        if (++g_->arrived == g_->size) {
            g_->arrived = 0;
            ++g_->generation;
            g_->cv.notify_all();
            return ok_status();
        }
        const bool done = g_->cv.wait_for(lock, g_->timeout, [&] { return g_->generation != gen || g_->broken; });
        if (g_->generation != gen) return ok_status();
        if (!done && !g_->broken) {
            g_->broken = true;
            g_->reason = "rank " + std::to_string(rank_) + " timed out after " + std::to_string(g_->timeout.count()) +
                         " ms in " + what;
            g_->cv.notify_all();
        }
        return unavailable(std::string("ThreadComm ") + what + ": " + g_->reason);
    }

    std::shared_ptr<Group> g_;
    int rank_;
};

}  // namespace

std::vector<std::unique_ptr<comm::Communicator>> make_thread_comms(int size, std::chrono::milliseconds timeout) {
    auto g = std::make_shared<Group>(size, timeout);
    std::vector<std::unique_ptr<comm::Communicator>> out;
    for (int r = 0; r < size; ++r) out.push_back(std::make_unique<ThreadComm>(g, r));
    return out;
}

}  // namespace moe::testing
