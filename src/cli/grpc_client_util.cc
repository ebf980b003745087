#include "cli/grpc_client_util.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace moe::cli {

namespace {

StatusOr<std::string> read_file(const std::string& path, const char* flag) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return invalid_argument(std::string(flag) + ": cannot read " + path);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace

StatusOr<std::shared_ptr<grpc::Channel>> make_channel(const std::string& address, const ChannelSecurity& security) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    if (security.tls_ca.empty() && security.tls_cert.empty())
        return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    if (security.tls_cert.empty() != security.tls_key.empty())
        return invalid_argument("--tls-cert and --tls-key must be given together");
    grpc::SslCredentialsOptions ssl;
    if (!security.tls_ca.empty()) {
        MOE_ASSIGN_OR_RETURN(ssl.pem_root_certs, read_file(security.tls_ca, "--tls-ca"));
    }
    if (!security.tls_cert.empty()) {
        MOE_ASSIGN_OR_RETURN(ssl.pem_cert_chain, read_file(security.tls_cert, "--tls-cert"));
        MOE_ASSIGN_OR_RETURN(ssl.pem_private_key, read_file(security.tls_key, "--tls-key"));
    }
    return grpc::CreateCustomChannel(address, grpc::SslCredentials(ssl), args);
}

std::shared_ptr<grpc::Channel> make_channel(const std::string& address) {
    return make_channel(address, ChannelSecurity{}).value();
}

void add_admin_token(grpc::ClientContext& ctx, const std::string& token) {
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
}

std::string grpc_status_string(const grpc::Status& status) {
    static const char* const kNames[] = {
        "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED"};
    const int code = static_cast<int>(status.error_code());
    const std::string name = code >= 0 && code <= 16 ? kNames[code] : "CODE_" + std::to_string(code);
    return name + ": " + status.error_message();
}

StatusOr<std::vector<int32_t>> parse_id_list(const std::string& text, const std::string& flag) {
    std::vector<int32_t> ids;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (item.empty()) return invalid_argument(flag + ": empty item in \"" + text + "\"");
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(item.c_str(), &end, 10);
        if (*end != '\0' || errno != 0 || v < 0 || v > INT32_MAX)
            return invalid_argument(flag + ": \"" + item + "\" is not a token id in [0, 2^31)");
        ids.push_back(static_cast<int32_t>(v));
    }
    if (ids.empty()) return invalid_argument(flag + ": at least one id is needed");
    return ids;
}

}  // namespace moe::cli
