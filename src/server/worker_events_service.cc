#include "server/worker_events_service.h"

#include <mutex>

#include "core/logging.h"
#include "moe/v1/worker.grpc.pb.h"
#include "server/auth.h"

namespace moe::server {
namespace {

void to_proto(const KvEventBatch& b, v1::KvEvents* out) {
    out->set_reset(b.reset);
    for (const Sha256Digest& h : b.stored) out->add_stored(reinterpret_cast<const char*>(h.data()), h.size());
    for (const Sha256Digest& h : b.evicted) out->add_evicted(reinterpret_cast<const char*>(h.data()), h.size());
    out->set_kv_blocks_total(b.load.kv_blocks_total);
    out->set_kv_blocks_free(b.load.kv_blocks_free);
    out->set_num_running(b.load.num_running);
    out->set_num_waiting(b.load.num_waiting);
}

class SubscribeReactor;

// Shared by the reactor and the hub's wake callback (which may run on the engine thread after
// the reactor is gone: it then finds `reactor` null and does nothing).
struct SubscribeState {
    std::mutex mu;
    SubscribeReactor* reactor = nullptr;
    bool writing = false;  // the owner of the reactor's StartWrite/Finish (see pump)
    bool pending = false;  // something may have become readable since the owner last looked
    bool cancelled = false;
    bool finished = false;
};

class SubscribeReactor final : public grpc::ServerWriteReactor<v1::KvEvents> {
public:
    SubscribeReactor(std::shared_ptr<KvEventHub> hub) : state_(std::make_shared<SubscribeState>()) {
        state_->reactor = this;
        std::weak_ptr<SubscribeState> weak = state_;
        sub_ = hub->subscribe([weak] {
            if (auto st = weak.lock()) wake(*st);
        });
        wake(*state_);  // the snapshot
    }

    static void wake(SubscribeState& st) {
        SubscribeReactor* r;
        {
            std::lock_guard<std::mutex> lock(st.mu);
            st.pending = true;
            if (st.writing || st.finished || st.reactor == nullptr) return;
            st.writing = true;
            r = st.reactor;
        }
        r->pump();
    }

    void OnWriteDone(bool ok) override {
        if (!ok) return finish(grpc::Status(grpc::StatusCode::CANCELLED, "the subscriber went away"));
        pump();
    }

    void OnCancel() override {
        bool own = false;
        {
            std::lock_guard<std::mutex> lock(state_->mu);
            state_->cancelled = true;
            if (!state_->writing && !state_->finished) own = state_->writing = true;
        }
        sub_->cancel();
        if (own) finish(grpc::Status::CANCELLED);
    }

    void OnDone() override {
        {
            std::lock_guard<std::mutex> lock(state_->mu);
            state_->reactor = nullptr;
        }
        sub_->cancel();
        delete this;
    }

private:
    // Called by the owner (writing == true): writes the next batch, or gives ownership back.
    void pump() {
        for (;;) {
            {
                std::lock_guard<std::mutex> lock(state_->mu);
                state_->pending = false;
                if (state_->cancelled) break;
            }
            KvEventBatch batch;
            if (sub_->try_next(&batch)) {
                msg_.Clear();
                to_proto(batch, &msg_);
                StartWrite(&msg_);
                return;  // OnWriteDone continues
            }
            if (sub_->closed()) return finish(grpc::Status::OK);
            std::lock_guard<std::mutex> lock(state_->mu);
            if (state_->pending) continue;  // woken while this thread owned the writes
            state_->writing = false;
            return;
        }
        finish(grpc::Status::CANCELLED);
    }

    void finish(const grpc::Status& s) {
        {
            std::lock_guard<std::mutex> lock(state_->mu);
            if (state_->finished) return;
            state_->finished = true;
        }
        sub_->cancel();
        Finish(s);
    }

    std::shared_ptr<SubscribeState> state_;
    std::shared_ptr<KvEventHub::Subscription> sub_;
    v1::KvEvents msg_;
};

class WorkerEventsService final : public v1::WorkerEvents::CallbackService {
public:
    WorkerEventsService(std::shared_ptr<KvEventHub> hub, std::string secret)
        : hub_(std::move(hub)), secret_(std::move(secret)) {}

    grpc::ServerWriteReactor<v1::KvEvents>* Subscribe(grpc::CallbackServerContext* ctx,
                                                      const v1::SubscribeEventsRequest*) override {
        if (grpc::Status s = check_internal_secret(*ctx, secret_); !s.ok()) {
            auto* r = new FailedReactor();
            r->Finish(s);
            return r;
        }
        return new SubscribeReactor(hub_);
    }

private:
    struct FailedReactor final : grpc::ServerWriteReactor<v1::KvEvents> {
        void OnDone() override { delete this; }
    };
    std::shared_ptr<KvEventHub> hub_;
    std::string secret_;
};

}  // namespace

grpc::Status check_internal_secret(const grpc::CallbackServerContext& ctx, const std::string& secret) {
    if (secret.empty()) return grpc::Status::OK;
    const auto& md = ctx.client_metadata();
    auto it = md.find("authorization");
    if (it == md.end())
        return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                            "internal port: send `authorization: Bearer <internal secret>`");
    const std::string_view got(it->second.data(), it->second.size());
    if (!constant_time_equals(got, "Bearer " + secret))
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "internal port: wrong internal secret");
    return grpc::Status::OK;
}

std::unique_ptr<grpc::Service> make_worker_events_service(std::shared_ptr<KvEventHub> hub,
                                                          std::string internal_secret) {
    return std::make_unique<WorkerEventsService>(std::move(hub), std::move(internal_secret));
}

}  // namespace moe::server
