// KvEventHub: the engine's prefix-cache events (KvBlockManager::take_events) handed to any number
// of subscribers on other threads (the WorkerEvents.Subscribe streams a KV-aware router reads).
//
//   engine thread: publish(events, load) -- a short critical section: the hub's mirror of the
//                  index is updated and the batch is appended to each subscriber's queue; no
//                  I/O, no waiting for a subscriber.
//   subscriber:    next() -- a reset snapshot first (every hash cached now, from the mirror),
//                  then the batches in order.
//
// Memory: the mirror holds at most the cache's block count of hashes. A subscriber's queue holds
// at most `max_queued_hashes` hashes; a subscriber that falls further behind loses its queue and
// gets a fresh snapshot (reset) on its next read instead of unbounded memory. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "engine/kv_block_manager.h"

namespace moe {

struct KvLoadInfo {
    int64_t kv_blocks_total = 0;
    int64_t kv_blocks_free = 0;
    int32_t num_running = 0;
    int32_t num_waiting = 0;
    bool operator==(const KvLoadInfo&) const = default;
};

// One message of the stream: a snapshot (reset: forget what you knew, `stored` is everything)
// or a batch of net changes.
struct KvEventBatch {
    bool reset = false;
    std::vector<Sha256Digest> stored;
    std::vector<Sha256Digest> evicted;
    KvLoadInfo load;
};

// Create with std::make_shared: subscriptions keep the hub alive.
class KvEventHub : public std::enable_shared_from_this<KvEventHub> {
public:
    struct Options {
        int64_t max_queued_hashes = 1 << 16;  // per subscriber; beyond: the queue is dropped, reset
    };
    KvEventHub() : KvEventHub(Options{}) {}
    explicit KvEventHub(Options options) : options_(options) {}

    class Subscription;
    // A new subscriber; its first next() returns a snapshot. `wake` (optional) is called, outside
    // the hub's lock, whenever something becomes readable; it must not block.
    std::shared_ptr<Subscription> subscribe(std::function<void()> wake = {});

    // Engine thread. Applies `events` to the mirror and queues them (with `load`) for every
    // subscriber. A call with no events and an unchanged load queues nothing.
    void publish(const KvBlockManager::Events& events, const KvLoadInfo& load);

    // Ends every subscription: next() returns false once its queue is read, wake is called.
    void close();

    // Introspection (tests, metrics).
    int64_t num_cached() const;
    int64_t num_subscribers() const;
    int64_t num_resets() const;  // snapshots sent after an overflow (not counting first ones)

    class Subscription {
    public:
        // Non-blocking: the next message, if any. False when none is ready.
        bool try_next(KvEventBatch* out);
        // Waits up to `timeout` for a message. False on timeout or when the hub closed and
        // nothing is left (closed() says which).
        bool next(KvEventBatch* out, std::chrono::milliseconds timeout);
        bool closed() const;
        // Detaches from the hub (also on destruction); the hub stops queuing for it.
        void cancel();
        ~Subscription() { cancel(); }

    private:
        friend class KvEventHub;
        std::shared_ptr<KvEventHub> hub_;  // set once; `attached_` (hub's mutex) says if queued for
        bool attached_ = true;
        std::function<void()> wake_;
        bool need_reset_ = true;
        std::deque<KvEventBatch> queue_;
        int64_t queued_hashes_ = 0;
    };

private:
    bool pop_locked(Subscription& s, KvEventBatch* out);

    const Options options_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool closed_ = false;
    struct DigestHash {
        size_t operator()(const Sha256Digest& d) const {
            size_t h;
            std::memcpy(&h, d.data(), sizeof(h));
            return h;
        }
    };
    std::unordered_set<Sha256Digest, DigestHash> mirror_;
    KvLoadInfo load_;
    std::vector<Subscription*> subs_;
    int64_t resets_ = 0;
};

}  // namespace moe
