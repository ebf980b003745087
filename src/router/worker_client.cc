#include "router/worker_client.h"

#include <cstring>

#include "core/logging.h"

namespace moe::router {
namespace {

spdlog::logger& logger() {
    static auto l = log::get("router");
    return *l;
}

}  // namespace

std::shared_ptr<grpc::Channel> make_worker_channel(const std::string& address, int max_message_bytes) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(max_message_bytes);
    args.SetMaxSendMessageSize(max_message_bytes);
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
    // A restarted worker is found again quickly (the default backoff grows to 2 minutes).
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

WorkerClient::WorkerClient(std::string address, std::string internal_secret, int max_message_bytes)
    : address_(std::move(address)), secret_(std::move(internal_secret)) {
    channel_ = make_worker_channel(address_, max_message_bytes);
    worker_ = v1::Worker::NewStub(channel_);
    events_ = v1::WorkerEvents::NewStub(channel_);
}

WorkerClient::~WorkerClient() {
    stop();
}

void WorkerClient::authorize(grpc::ClientContext& ctx) const {
    if (!secret_.empty()) ctx.AddMetadata("authorization", "Bearer " + secret_);
}

Status WorkerClient::describe(std::chrono::system_clock::time_point deadline) {
    grpc::ClientContext ctx;
    authorize(ctx);
    ctx.set_deadline(deadline);
    ctx.set_wait_for_ready(true);
    const grpc::Status s = worker_->Describe(&ctx, v1::DescribeRequest(), &info_);
    if (!s.ok())
        return Status(s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? StatusCode::kUnavailable
                                                                            : StatusCode::kFailedPrecondition,
                      "worker " + address_ + ": Describe failed: " + s.error_message());
    if (info_.model().block_size() < 1 || info_.model().block_size() > 1024)
        return failed_precondition("worker " + address_ + ": block_size " + std::to_string(info_.model().block_size()) +
                                   " is outside [1, 1024]");
    if (!info_.public_address().empty()) {
        auto pub = make_worker_channel(info_.public_address(), 64 << 20);
        public_inference_ = v1::Inference::NewStub(pub);
        public_control_ = v1::Control::NewStub(pub);
    }
    return Status();
}

std::string WorkerClient::role_name() const {
    switch (info_.role()) {
        case v1::WORKER_ROLE_AGGREGATED:
            return "aggregated";
        case v1::WORKER_ROLE_PREFILL:
            return "prefill";
        case v1::WORKER_ROLE_DECODE:
            return "decode";
        default:
            return "unspecified";
    }
}

void WorkerClient::start_events() {
    thread_ = std::thread([this] { events_loop(); });
}

bool WorkerClient::wait_for_snapshot(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return snapshot_seen_ || stop_; }) && snapshot_seen_;
}

void WorkerClient::stop() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
        stop_ = true;
        if (events_ctx_) events_ctx_->TryCancel();
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void WorkerClient::events_loop() {
    bool was_up = true;
    for (;;) {
        grpc::ClientContext ctx;
        authorize(ctx);
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (stop_) return;
            events_ctx_ = &ctx;
        }
        auto reader = events_->Subscribe(&ctx, v1::SubscribeEventsRequest());
        v1::KvEvents msg;
        while (reader->Read(&msg)) {
            std::lock_guard<std::mutex> lock(mu_);
            if (msg.reset()) cached_.clear();
            auto digest_of = [&](const std::string& raw, Sha256Digest* out) {
                if (raw.size() != out->size()) {
                    bad_hashes.fetch_add(1);
                    return false;
                }
                std::memcpy(out->data(), raw.data(), out->size());
                return true;
            };
            Sha256Digest d;
            for (const std::string& raw : msg.stored())
                if (digest_of(raw, &d)) cached_.insert(d);
            for (const std::string& raw : msg.evicted())
                if (digest_of(raw, &d)) cached_.erase(d);
            if (static_cast<int64_t>(cached_.size()) > kMaxHashesPerWorker) {
                logger().warn("worker {}: reports more than {} cached blocks; ignoring its prefix cache", address_,
                              kMaxHashesPerWorker);
                cached_.clear();
            }
            kv_blocks_total_ = msg.kv_blocks_total();
            kv_blocks_free_ = msg.kv_blocks_free();
            num_running_ = msg.num_running();
            num_waiting_ = msg.num_waiting();
            if (!healthy_ && !was_up) logger().info("worker {}: event stream up again", address_);
            healthy_ = true;
            was_up = true;
            snapshot_seen_ = true;
            cv_.notify_all();
        }
        const grpc::Status s = reader->Finish();
        std::unique_lock<std::mutex> lock(mu_);
        events_ctx_ = nullptr;
        healthy_ = false;
        cached_.clear();
        if (stop_) return;
        if (was_up)
            logger().warn("worker {}: event stream ended ({}: {}); routing around it until it is back", address_,
                          static_cast<int>(s.error_code()), s.error_message());
        was_up = false;
        cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stop_; });
    }
}

WorkerState WorkerClient::state(std::span<const Sha256Digest> hashes) const {
    WorkerState w;
    std::lock_guard<std::mutex> lock(mu_);
    w.healthy = healthy_;
    w.cached_prefix_blocks = leading_cached_blocks(hashes, cached_);
    w.kv_blocks_free = kv_blocks_free_;
    w.kv_blocks_total = kv_blocks_total_;
    w.num_running = num_running_;
    w.num_waiting = num_waiting_;
    w.in_flight = in_flight.load();
    return w;
}

bool WorkerClient::healthy() const {
    std::lock_guard<std::mutex> lock(mu_);
    return healthy_;
}

int64_t WorkerClient::known_hashes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(cached_.size());
}

}  // namespace moe::router
