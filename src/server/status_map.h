// The one place where moe::Status becomes a gRPC status (and back, for clients).
#pragma once

#include <grpcpp/support/status.h>

#include "moe/status.h"

namespace moe::server {

// Maps the code one to one (kOutOfRange -> OUT_OF_RANGE, kDataLoss -> DATA_LOSS...) and keeps the
// message. OK stays OK.
grpc::Status to_grpc_status(const Status& status);

// The inverse, for clients that turn an RPC failure into a moe::Status.
Status from_grpc_status(const grpc::Status& status);

}  // namespace moe::server
