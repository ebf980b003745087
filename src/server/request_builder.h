// GenerateRequest (proto) -> GenerateParams (engine), and engine events -> GenerateResponse.
//
// Validation happens here, on the gRPC handler thread, before anything reaches the engine: each
// failure is INVALID_ARGUMENT naming the proto field ("sampling.top_p", "token_ids.ids[3]") and
// the limit. The engine validates again (it also serves in-process callers); both agree.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/engine.h"
#include "moe/v1/inference.pb.h"

namespace moe::server {

struct RequestLimits {
    int32_t default_max_tokens = 16;  // max_tokens when unset (vLLM's completions default)
    // The engine's own limits, so that the server and the engine never disagree.
    int max_stop_strings = static_cast<int>(kMaxStopStrings);
    size_t max_stop_string_bytes = kMaxStopStringBytes;
    int max_stop_token_ids = static_cast<int>(kMaxStopTokenIds);
    int32_t max_logprobs = kMaxLogprobs;
    int32_t max_stream_interval = 1024;
    size_t max_request_id_bytes = 128;
    size_t max_cache_salt_bytes = 256;
    float max_temperature = 100.0f;
    float max_repetition_penalty = 10.0f;
    float max_abs_penalty = 2.0f;  // presence and frequency penalties
};

// What the request is checked against.
struct ModelLimits {
    const Tokenizer* tokenizer = nullptr;  // null: token ids only
    int64_t vocab_size = 0;
    int64_t max_model_len = 0;
};

// Checks every field and tokenizes text input. Does not set params.deadline.
StatusOr<GenerateParams> build_generate_params(const v1::GenerateRequest& request, const ModelLimits& model,
                                               const RequestLimits& limits = {});

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points
// above U+10FFFF are invalid), or -1 when `text` is valid.
int64_t first_invalid_utf8(std::string_view text);

void delta_to_proto(DeltaEvent&& delta, v1::Delta* out);
void final_to_proto(FinalEvent&& final_event, v1::Final* out);

}  // namespace moe::server
