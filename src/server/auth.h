// Who is calling: the admin check and the caller's request-id namespace (#18, control plane).
//
// Admin: with ServerOptions::admin_token set, a call is admin when it carries the metadata
// `authorization: Bearer <token>` (compared in constant time). Without a token, only peers on
// the loopback interface (127.0.0.0/8, ::1, unix sockets) are admin, so a server reachable from
// elsewhere needs --admin-token for Drain and cross-client Abort over the network.
//
// Namespace (which requests a caller's ids live in, and which it may abort): the admin token
// ("token:admin"), else the verified client certificate identity under mTLS ("x509:<SAN or
// CN>"), else the connection ("peer:<address:port>"): without a credential, a client's ids are
// its connection's. Two callers in different namespaces may use the same request_id.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <string_view>

namespace moe::server {

struct Caller {
    bool admin = false;
    bool presented_token = false;  // an authorization header was sent (wrong or right)
    std::string id_namespace;
};

Caller identify_caller(const grpc::ServerContextBase& ctx, const std::string& admin_token);

// a == b without an early exit on the first differing byte (length differences still show).
bool constant_time_equals(std::string_view a, std::string_view b);

// True for 127.0.0.0/8, ::1, localhost and unix-socket addresses ("host" as given to --host,
// or a gRPC peer string such as "ipv4:127.0.0.1:5000").
bool is_loopback_host(std::string_view host);
bool is_loopback_peer(std::string_view peer);

// The status for a caller that is not admin: UNAUTHENTICATED without credentials,
// PERMISSION_DENIED with the wrong ones.
grpc::Status admin_required(const Caller& caller, std::string_view what);

}  // namespace moe::server
