#include "server/auth.h"

namespace moe::server {

bool constant_time_equals(std::string_view a, std::string_view b) {
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    const size_t n = a.size() < b.size() ? a.size() : b.size();
    for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff == 0;
}

bool is_loopback_host(std::string_view host) {
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0 || host.rfind("unix:", 0) == 0;
}

bool is_loopback_peer(std::string_view peer) {
    if (peer.rfind("unix:", 0) == 0) return true;
    if (peer.rfind("ipv4:", 0) == 0) return peer.substr(5).rfind("127.", 0) == 0;
    if (peer.rfind("ipv6:", 0) == 0) {
        const std::string_view rest = peer.substr(5);
        return rest.rfind("[::1]", 0) == 0 || rest.rfind("%5B::1%5D", 0) == 0 || rest.rfind("[::ffff:127.", 0) == 0;
    }
    return false;
}

Caller identify_caller(const grpc::ServerContextBase& ctx, const std::string& admin_token) {
    Caller c;
    const auto& md = ctx.client_metadata();
    const auto it = md.find("authorization");
    if (it != md.end()) {
        c.presented_token = true;
        const std::string_view value(it->second.data(), it->second.size());
        constexpr std::string_view kBearer = "Bearer ";
        if (!admin_token.empty() && value.size() > kBearer.size() && value.substr(0, kBearer.size()) == kBearer &&
            constant_time_equals(value.substr(kBearer.size()), admin_token))
            c.admin = true;
    }
    if (c.admin) {
        c.id_namespace = "token:admin";
        return c;
    }
    const std::string peer = ctx.peer();
    if (admin_token.empty() && is_loopback_peer(peer)) c.admin = true;
    const std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
    if (auth && auth->IsPeerAuthenticated()) {
        std::string identity;
        for (const grpc::string_ref& v : auth->GetPeerIdentity()) {
            if (!identity.empty()) identity += ",";
            identity.append(v.data(), v.size());
        }
        if (!identity.empty()) {
            c.id_namespace = "x509:" + identity;
            return c;
        }
    }
    c.id_namespace = "peer:" + peer;
    return c;
}

grpc::Status admin_required(const Caller& caller, std::string_view what) {
    const std::string msg =
        std::string(what) + " needs the admin credential (metadata \"authorization: Bearer <--admin-token>\")";
    if (caller.presented_token) return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, msg + ": wrong token");
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, msg);
}

}  // namespace moe::server
