#include "moe/status.h"

#include <cstdio>
#include <cstdlib>

#include "moe/check.h"

namespace moe {

const char* status_code_name(StatusCode code) {
    switch (code) {
        case StatusCode::kOk:
            return "OK";
        case StatusCode::kInvalidArgument:
            return "INVALID_ARGUMENT";
        case StatusCode::kNotFound:
            return "NOT_FOUND";
        case StatusCode::kUnimplemented:
            return "UNIMPLEMENTED";
        case StatusCode::kOutOfRange:
            return "OUT_OF_RANGE";
        case StatusCode::kResourceExhausted:
            return "RESOURCE_EXHAUSTED";
        case StatusCode::kFailedPrecondition:
            return "FAILED_PRECONDITION";
        case StatusCode::kUnavailable:
            return "UNAVAILABLE";
        case StatusCode::kCancelled:
            return "CANCELLED";
        case StatusCode::kDeadlineExceeded:
            return "DEADLINE_EXCEEDED";
        case StatusCode::kInternal:
            return "INTERNAL";
        case StatusCode::kDataLoss:
            return "DATA_LOSS";
    }
    return "UNKNOWN";
}

std::string Status::to_string() const {
    if (ok()) return "OK";
    return std::string(status_code_name(code_)) + ": " + message_;
}

Status Status::with_context(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
}

Status invalid_argument(std::string m) {
    return Status(StatusCode::kInvalidArgument, std::move(m));
}
Status not_found(std::string m) {
    return Status(StatusCode::kNotFound, std::move(m));
}
Status unimplemented(std::string m) {
    return Status(StatusCode::kUnimplemented, std::move(m));
}
Status out_of_range(std::string m) {
    return Status(StatusCode::kOutOfRange, std::move(m));
}
Status resource_exhausted(std::string m) {
    return Status(StatusCode::kResourceExhausted, std::move(m));
}
Status failed_precondition(std::string m) {
    return Status(StatusCode::kFailedPrecondition, std::move(m));
}
Status unavailable(std::string m) {
    return Status(StatusCode::kUnavailable, std::move(m));
}
Status internal_error(std::string m) {
    return Status(StatusCode::kInternal, std::move(m));
}
Status data_loss(std::string m) {
    return Status(StatusCode::kDataLoss, std::move(m));
}

void status_or_value_of_error(const Status& s) {
    detail::check_failed(__FILE__, __LINE__, "StatusOr::value() of an error", s.to_string());
}

namespace detail {
void check_failed(const char* file, int line, const char* expr, const std::string& detail) {
    std::fprintf(stderr, "%s:%d: MOE_CHECK failed: %s %s\n", file, line, expr, detail.c_str());
    std::fflush(stderr);
    std::abort();
}
}  // namespace detail

}  // namespace moe
