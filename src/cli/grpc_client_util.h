// Helpers shared by the gRPC client commands (generate, bench).
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/status.h"

namespace moe::cli {

// How a client reaches the server: plaintext, or TLS trusting `tls_ca` (PEM file), with a client
// certificate for mTLS when tls_cert/tls_key are given.
struct ChannelSecurity {
    std::string tls_ca;
    std::string tls_cert;
    std::string tls_key;
};

// A channel to `address` ("host:port") with no message-size surprise for long prompts.
StatusOr<std::shared_ptr<grpc::Channel>> make_channel(const std::string& address, const ChannelSecurity& security);
std::shared_ptr<grpc::Channel> make_channel(const std::string& address);

// Adds "authorization: Bearer <token>" to a call when `token` is not empty.
void add_admin_token(grpc::ClientContext& ctx, const std::string& token);

// "INVALID_ARGUMENT: message" (the gRPC code's canonical name).
std::string grpc_status_string(const grpc::Status& status);

// "1,2,3" -> ids; an error names `flag`.
StatusOr<std::vector<int32_t>> parse_id_list(const std::string& text, const std::string& flag);

}  // namespace moe::cli
