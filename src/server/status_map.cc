#include "server/status_map.h"

namespace moe::server {

const char* grpc_code_label(grpc::StatusCode code) {
    switch (code) {
        case grpc::StatusCode::OK:
            return "OK";
        case grpc::StatusCode::CANCELLED:
            return "Canceled";
        case grpc::StatusCode::UNKNOWN:
            return "Unknown";
        case grpc::StatusCode::INVALID_ARGUMENT:
            return "InvalidArgument";
        case grpc::StatusCode::DEADLINE_EXCEEDED:
            return "DeadlineExceeded";
        case grpc::StatusCode::NOT_FOUND:
            return "NotFound";
        case grpc::StatusCode::ALREADY_EXISTS:
            return "AlreadyExists";
        case grpc::StatusCode::PERMISSION_DENIED:
            return "PermissionDenied";
        case grpc::StatusCode::RESOURCE_EXHAUSTED:
            return "ResourceExhausted";
        case grpc::StatusCode::FAILED_PRECONDITION:
            return "FailedPrecondition";
        case grpc::StatusCode::ABORTED:
            return "Aborted";
        case grpc::StatusCode::OUT_OF_RANGE:
            return "OutOfRange";
        case grpc::StatusCode::UNIMPLEMENTED:
            return "Unimplemented";
        case grpc::StatusCode::INTERNAL:
            return "Internal";
        case grpc::StatusCode::UNAVAILABLE:
            return "Unavailable";
        case grpc::StatusCode::DATA_LOSS:
            return "DataLoss";
        case grpc::StatusCode::UNAUTHENTICATED:
            return "Unauthenticated";
        default:
            return "Unknown";
    }
}

grpc::Status to_grpc_status(const Status& status) {
    grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
    switch (status.code()) {
        case StatusCode::kOk:
            return grpc::Status::OK;
        case StatusCode::kInvalidArgument:
            code = grpc::StatusCode::INVALID_ARGUMENT;
            break;
        case StatusCode::kNotFound:
            code = grpc::StatusCode::NOT_FOUND;
            break;
        case StatusCode::kUnimplemented:
            code = grpc::StatusCode::UNIMPLEMENTED;
            break;
        case StatusCode::kOutOfRange:
            code = grpc::StatusCode::OUT_OF_RANGE;
            break;
        case StatusCode::kResourceExhausted:
            code = grpc::StatusCode::RESOURCE_EXHAUSTED;
            break;
        case StatusCode::kFailedPrecondition:
            code = grpc::StatusCode::FAILED_PRECONDITION;
            break;
        case StatusCode::kUnavailable:
            code = grpc::StatusCode::UNAVAILABLE;
            break;
        case StatusCode::kCancelled:
            code = grpc::StatusCode::CANCELLED;
            break;
        case StatusCode::kDeadlineExceeded:
            code = grpc::StatusCode::DEADLINE_EXCEEDED;
            break;
        case StatusCode::kInternal:
            code = grpc::StatusCode::INTERNAL;
            break;
        case StatusCode::kDataLoss:
            code = grpc::StatusCode::DATA_LOSS;
            break;
    }
    return grpc::Status(code, status.message());
}

Status from_grpc_status(const grpc::Status& status) {
    StatusCode code = StatusCode::kInternal;
    switch (status.error_code()) {
        case grpc::StatusCode::OK:
            return ok_status();
        case grpc::StatusCode::INVALID_ARGUMENT:
            code = StatusCode::kInvalidArgument;
            break;
        case grpc::StatusCode::NOT_FOUND:
            code = StatusCode::kNotFound;
            break;
        case grpc::StatusCode::UNIMPLEMENTED:
            code = StatusCode::kUnimplemented;
            break;
        case grpc::StatusCode::OUT_OF_RANGE:
            code = StatusCode::kOutOfRange;
            break;
        case grpc::StatusCode::RESOURCE_EXHAUSTED:
            code = StatusCode::kResourceExhausted;
            break;
        case grpc::StatusCode::FAILED_PRECONDITION:
            code = StatusCode::kFailedPrecondition;
            break;
        case grpc::StatusCode::UNAVAILABLE:
            code = StatusCode::kUnavailable;
            break;
        case grpc::StatusCode::CANCELLED:
            code = StatusCode::kCancelled;
            break;
        case grpc::StatusCode::DEADLINE_EXCEEDED:
            code = StatusCode::kDeadlineExceeded;
            break;
        case grpc::StatusCode::DATA_LOSS:
            code = StatusCode::kDataLoss;
            break;
        default:
            break;  // UNKNOWN, ABORTED, ALREADY_EXISTS, PERMISSION_DENIED...: internal
    }
    return Status(code, status.error_message());
}

}  // namespace moe::server
