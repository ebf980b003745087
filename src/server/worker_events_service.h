// moe.v1.WorkerEvents (proto/moe/v1/worker.proto): a worker's prefix-cache events for the
// KV-aware router, served on the worker's internal port beside moe.v1.Worker.
//
// Subscribe streams, per subscriber: first a snapshot (reset = true, every chained block hash the
// worker's prefix index holds), then batches of stored and evicted hashes with the worker's load,
// as the engine publishes them into its KvEventHub (src/engine/kv_event_hub.h). The engine thread
// never waits for a subscriber: a subscriber that reads too slowly loses its queued batches and
// gets a new snapshot (reset) instead. At most one write is in flight per stream; the stream ends
// OK when the hub closes (the engine stopped) and CANCELLED when the caller cancels.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "engine/kv_event_hub.h"

namespace moe::server {

// The internal port's credential check: `authorization: Bearer <secret>` compared in constant
// time. UNAUTHENTICATED without the header, PERMISSION_DENIED with a wrong one. An empty
// `secret` accepts every caller (the internal port binds to loopback by default).
grpc::Status check_internal_secret(const grpc::CallbackServerContext& ctx, const std::string& secret);

// The service over `hub`; register it on the internal port's grpc::ServerBuilder. The hub (and
// its subscriptions) outlive the service's streams; close the hub before shutting the server
// down so that open streams end at once.
std::unique_ptr<grpc::Service> make_worker_events_service(std::shared_ptr<KvEventHub> hub, std::string internal_secret);

}  // namespace moe::server
