#include "engine/kv_event_hub.h"

#include <algorithm>

namespace moe {

std::shared_ptr<KvEventHub::Subscription> KvEventHub::subscribe(std::function<void()> wake) {
    auto s = std::make_shared<Subscription>();
    s->hub_ = shared_from_this();
    s->wake_ = std::move(wake);
    std::lock_guard<std::mutex> lock(mu_);
    subs_.push_back(s.get());
    return s;
}

void KvEventHub::publish(const KvBlockManager::Events& events, const KvLoadInfo& load) {
    std::vector<std::function<void()>> wakes;
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (closed_ || (events.empty() && load == load_)) return;
        for (const Sha256Digest& h : events.stored) mirror_.insert(h);
        for (const Sha256Digest& h : events.evicted) mirror_.erase(h);
        load_ = load;
        const int64_t n = static_cast<int64_t>(events.stored.size() + events.evicted.size());
        for (Subscription* s : subs_) {
            if (s->need_reset_) {
                // Its snapshot is still to be read: it will be taken from the mirror then.
            } else if (s->queued_hashes_ + n > options_.max_queued_hashes) {
                // Too far behind: drop what it has not read; it gets a snapshot instead.
                s->queue_.clear();
                s->queued_hashes_ = 0;
                s->need_reset_ = true;
                ++resets_;
            } else {
                s->queue_.push_back(KvEventBatch{false, events.stored, events.evicted, load});
                s->queued_hashes_ += n;
            }
            if (s->wake_) wakes.push_back(s->wake_);
        }
    }
    cv_.notify_all();
    for (auto& w : wakes) w();
}

void KvEventHub::close() {
    std::vector<std::function<void()>> wakes;
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (closed_) return;
        closed_ = true;
        for (Subscription* s : subs_)
            if (s->wake_) wakes.push_back(s->wake_);
    }
    cv_.notify_all();
    for (auto& w : wakes) w();
}

int64_t KvEventHub::num_cached() const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(mirror_.size());
}
int64_t KvEventHub::num_subscribers() const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(subs_.size());
}
int64_t KvEventHub::num_resets() const {
    std::lock_guard<std::mutex> lock(mu_);
    return resets_;
}

bool KvEventHub::pop_locked(Subscription& s, KvEventBatch* out) {
    if (!s.attached_) return false;
    if (s.need_reset_) {
        // Closed: no snapshot any more, the stream just ends.
        if (closed_) return false;
        *out = KvEventBatch{};
        out->reset = true;
        out->stored.assign(mirror_.begin(), mirror_.end());
        out->load = load_;
        s.need_reset_ = false;
        return true;
    }
    if (s.queue_.empty()) return false;
    *out = std::move(s.queue_.front());
    s.queue_.pop_front();
    s.queued_hashes_ -= static_cast<int64_t>(out->stored.size() + out->evicted.size());
    return true;
}

bool KvEventHub::Subscription::try_next(KvEventBatch* out) {
    std::lock_guard<std::mutex> lock(hub_->mu_);
    return hub_->pop_locked(*this, out);
}

bool KvEventHub::Subscription::next(KvEventBatch* out, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(hub_->mu_);
    bool got = false;
    hub_->cv_.wait_for(lock, timeout, [&] {
        got = hub_->pop_locked(*this, out);
        return got || hub_->closed_ || !attached_;
    });
    return got;
}

bool KvEventHub::Subscription::closed() const {
    std::lock_guard<std::mutex> lock(hub_->mu_);
    return hub_->closed_ || !attached_;
}

void KvEventHub::Subscription::cancel() {
    if (!hub_) return;
    std::lock_guard<std::mutex> lock(hub_->mu_);
    if (!attached_) return;
    attached_ = false;
    auto& subs = hub_->subs_;
    subs.erase(std::remove(subs.begin(), subs.end(), this), subs.end());
    queue_.clear();
    queued_hashes_ = 0;
}

}  // namespace moe
