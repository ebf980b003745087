// The router's view of one worker: its Describe answer, the stubs to call it, and the prefix-cache
// hashes and load its WorkerEvents stream reports (kept current by one thread per worker, which
// reconnects after the stream breaks and marks the worker unhealthy meanwhile).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "moe/status.h"
#include "moe/v1/control.grpc.pb.h"
#include "moe/v1/inference.grpc.pb.h"
#include "moe/v1/worker.grpc.pb.h"
#include "router/routing_policy.h"

namespace moe::router {

// A router keeps at most this many hashes per worker: a worker that reports more (a lying or
// broken peer) has its set cleared, and it is routed to as if nothing were cached.
inline constexpr int64_t kMaxHashesPerWorker = int64_t{1} << 22;

class WorkerClient {
public:
    WorkerClient(std::string address, std::string internal_secret, int max_message_bytes);
    ~WorkerClient();  // stop()

    // Describe, waiting for the worker to come up until `deadline`.
    Status describe(std::chrono::system_clock::time_point deadline);
    // Starts the event thread. wait_for_snapshot: until the first snapshot arrived or deadline.
    void start_events();
    bool wait_for_snapshot(std::chrono::steady_clock::time_point deadline);
    void stop();

    const std::string& address() const { return address_; }
    const v1::WorkerInfo& info() const { return info_; }
    std::string role_name() const;
    // The public API of the worker (its public_address from Describe).
    v1::Inference::Stub* public_inference() { return public_inference_.get(); }
    v1::Control::Stub* public_control() { return public_control_.get(); }
    v1::Worker::Stub* worker() { return worker_.get(); }

    // Adds the internal credential to a call.
    void authorize(grpc::ClientContext& ctx) const;

    // What the routing policy needs, for a request whose full blocks hash to `hashes`.
    WorkerState state(std::span<const Sha256Digest> hashes) const;
    bool healthy() const;
    int64_t known_hashes() const;

    std::atomic<int64_t> in_flight{0};
    std::atomic<int64_t> bad_hashes{0};  // hashes of a wrong length it sent (ignored)

private:
    void events_loop();

    const std::string address_;
    const std::string secret_;
    std::shared_ptr<grpc::Channel> channel_;
    std::unique_ptr<v1::Worker::Stub> worker_;
    std::unique_ptr<v1::WorkerEvents::Stub> events_;
    std::unique_ptr<v1::Inference::Stub> public_inference_;
    std::unique_ptr<v1::Control::Stub> public_control_;
    v1::WorkerInfo info_;

    mutable std::mutex mu_;
    std::condition_variable cv_;
    HashSet cached_;
    int64_t kv_blocks_total_ = 0, kv_blocks_free_ = 0, num_running_ = 0, num_waiting_ = 0;
    bool healthy_ = false;
    bool snapshot_seen_ = false;
    bool stop_ = false;
    grpc::ClientContext* events_ctx_ = nullptr;  // the live Subscribe call (to cancel on stop)
    std::thread thread_;
};

// The channel arguments the router uses for every worker (message size; no retries by gRPC
// itself: the router decides).
std::shared_ptr<grpc::Channel> make_worker_channel(const std::string& address, int max_message_bytes);

}  // namespace moe::router
