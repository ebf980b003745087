// Comparing two workers' ModelSignature (proto/moe/v1/worker.proto): the one check the decode
// worker makes on a prefill result and the router makes across its workers.
#pragma once

#include <optional>
#include <string>

#include "moe/v1/worker.pb.h"

namespace moe::server {

struct SignatureDifference {
    std::string field;  // the ModelSignature field's name
    std::string a, b;   // its values, printed for a message (strings quoted and escaped)
};

// The first field, in declaration order, whose values differ; nullopt when all are equal.
std::optional<SignatureDifference> first_signature_difference(const v1::ModelSignature& a, const v1::ModelSignature& b);

}  // namespace moe::server
