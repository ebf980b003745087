// The request contract shared by the server and the engine: one set of limits, one id assigner.
//
// The gRPC server checks a request against these limits field by field (INVALID_ARGUMENT naming
// the proto field) and Engine::submit checks the same limits again for in-process callers, so
// the two layers can never disagree about what is accepted. Both take the limits from
// EngineOptions::limits (Server::start copies the engine's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/sampler.h"
#include "engine/stop_checker.h"
#include "moe/status.h"

namespace moe {

// The length of an id from new_request_id(): "req-" + 32 hex digits.
inline constexpr size_t kAssignedRequestIdBytes = 36;

struct RequestLimits {
    int32_t default_max_tokens = 16;  // max_tokens when unset (vLLM's completions default)
    int max_stop_strings = static_cast<int>(kMaxStopStrings);
    size_t max_stop_string_bytes = kMaxStopStringBytes;
    int max_stop_token_ids = static_cast<int>(kMaxStopTokenIds);
    int32_t max_logprobs = kMaxLogprobs;
    int32_t max_stream_interval = 1024;
    size_t max_request_id_bytes = 128;  // >= kAssignedRequestIdBytes (Engine::create checks)
    // The submitter's id namespace (see GenerateParams::id_namespace): an opaque tag the server
    // derives from the caller's credential, never client text.
    size_t max_id_namespace_bytes = 512;
    size_t max_cache_salt_bytes = 256;
    // A text prompt longer than this is refused before it is tokenized.
    size_t max_prompt_text_bytes = 1 << 20;
    float max_temperature = 100.0f;
    float max_repetition_penalty = 10.0f;
    float max_abs_penalty = 2.0f;  // presence and frequency penalties
};

// A new request id: "req-" and 32 hex digits of a 128-bit random number from the kernel's CSPRNG
// (getrandom(2)), so that nobody can guess another client's id. Thread-safe. INTERNAL only if
// the kernel gives no randomness.
StatusOr<std::string> new_request_id();

}  // namespace moe
