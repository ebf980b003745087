// The one place where moe::Status becomes a gRPC status (and back, for clients).
#pragma once

#include <grpcpp/support/status.h>

#include "moe/status.h"

namespace moe::server {

// Maps the code one to one (kOutOfRange -> OUT_OF_RANGE, kDataLoss -> DATA_LOSS...) and keeps the
// message. OK stays OK.
grpc::Status to_grpc_status(const Status& status);

// The code's name as Go and go-grpc-prometheus spell it ("OK", "InvalidArgument", "Canceled",
// ...): the grpc_code label of grpc_server_handled_total, as gRPC dashboards expect it.
const char* grpc_code_label(grpc::StatusCode code);

// The inverse, for clients that turn an RPC failure into a moe::Status.
Status from_grpc_status(const grpc::Status& status);

}  // namespace moe::server
