// Status and StatusOr: how host code reports errors (no exceptions across modules).
//
// A Status is a code plus a human message. Messages name the offending field, file or
// tensor and the limit that was broken, because they reach users verbatim.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace moe {

enum class StatusCode {
    kOk = 0,
    kInvalidArgument,     // the caller's fault: bad request, bad file, bad config
    kNotFound,            // a file or tensor that should be there is not
    kUnimplemented,       // a backend or family that does not support this (yet)
    kOutOfRange,          // an index or size past a limit
    kResourceExhausted,   // out of memory, queue full, KV pool full
    kFailedPrecondition,  // called in the wrong state
    kUnavailable,         // draining, device absent
    kCancelled,
    kDeadlineExceeded,
    kInternal,  // a bug or a library failure
    kDataLoss,  // a file that is truncated or corrupt
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
public:
    Status() = default;
    Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

    static Status ok_status() { return Status(); }

    bool ok() const { return code_ == StatusCode::kOk; }
    StatusCode code() const { return code_; }
    const std::string& message() const { return message_; }
    // "INVALID_ARGUMENT: message"
    std::string to_string() const;

    // Returns a copy with `context + ": "` prefixed to the message (keeps the code).
    Status with_context(const std::string& context) const;

private:
    StatusCode code_ = StatusCode::kOk;
    std::string message_;
};

inline Status ok_status() {
    return Status();
}
Status invalid_argument(std::string message);
Status not_found(std::string message);
Status unimplemented(std::string message);
Status out_of_range(std::string message);
Status resource_exhausted(std::string message);
Status failed_precondition(std::string message);
Status unavailable(std::string message);
Status internal_error(std::string message);
Status data_loss(std::string message);

// StatusOr<T>: a value or a non-OK Status. Accessing the value of an error aborts.
template <typename T>
class [[nodiscard]] StatusOr {
public:
    StatusOr(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
        if (status_.ok()) status_ = Status(StatusCode::kInternal, "StatusOr built from an OK status without a value");
    }
    StatusOr(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)

    bool ok() const { return status_.ok(); }
    const Status& status() const { return status_; }

    T& value() & {
        check_ok();
        return *value_;
    }
    const T& value() const& {
        check_ok();
        return *value_;
    }
    T&& value() && {
        check_ok();
        return std::move(*value_);
    }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

private:
    void check_ok() const;
    Status status_;
    std::optional<T> value_;
};

[[noreturn]] void status_or_value_of_error(const Status& s);

template <typename T>
void StatusOr<T>::check_ok() const {
    if (!status_.ok()) status_or_value_of_error(status_);
}

}  // namespace moe

#define MOE_STATUS_CONCAT_INNER_(a, b) a##b
#define MOE_STATUS_CONCAT_(a, b) MOE_STATUS_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function if `expr` is not OK.
#define MOE_RETURN_IF_ERROR(expr)                          \
    do {                                                   \
        ::moe::Status moe_status_tmp_ = (expr);            \
        if (!moe_status_tmp_.ok()) return moe_status_tmp_; \
    } while (0)

// MOE_ASSIGN_OR_RETURN(auto x, f()): binds the value or returns the error.
#define MOE_ASSIGN_OR_RETURN(lhs, expr) \
    MOE_ASSIGN_OR_RETURN_IMPL_(MOE_STATUS_CONCAT_(moe_statusor_, __LINE__), lhs, expr)
#define MOE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
    auto tmp = (expr);                             \
    if (!tmp.ok()) return tmp.status();            \
    lhs = std::move(tmp).value()
