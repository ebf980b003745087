// Helpers shared by the gRPC client commands (generate, bench).
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/status.h"

namespace moe::cli {

// A channel to `address` ("host:port") with no message-size surprise for long prompts.
std::shared_ptr<grpc::Channel> make_channel(const std::string& address);

// "INVALID_ARGUMENT: message" (the gRPC code's canonical name).
std::string grpc_status_string(const grpc::Status& status);

// "1,2,3" -> ids; an error names `flag`.
StatusOr<std::vector<int32_t>> parse_id_list(const std::string& text, const std::string& flag);

}  // namespace moe::cli
