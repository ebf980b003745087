#include "cli/grpc_client_util.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <sstream>

namespace moe::cli {

std::shared_ptr<grpc::Channel> make_channel(const std::string& address) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
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
