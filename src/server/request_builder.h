// GenerateRequest (proto) -> GenerateParams (engine), and engine events -> GenerateResponse.
//
// Validation happens here, on the gRPC handler thread, before anything reaches the engine: each
// failure is INVALID_ARGUMENT naming the proto field ("sampling.top_p", "token_ids.ids[3]") and
// the limit. The engine validates again against the same RequestLimits (it also serves
// in-process callers), so both agree.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/engine.h"
#include "moe/v1/inference.pb.h"
#include "template/chat_template.h"

namespace moe::server {

// One limits struct for the server and the engine (src/engine/request_limits.h).
using moe::RequestLimits;

// What the request is checked against.
struct ModelLimits {
    const Tokenizer* tokenizer = nullptr;  // null: token ids only
    int64_t vocab_size = 0;
    int64_t max_model_len = 0;
    // The model's chat template, loaded once at start; null: chat input is refused, with
    // `chat_template_error` as the reason when loading failed (empty: the model has none).
    const tmpl::ChatTemplate* chat_template = nullptr;
    std::string chat_template_error;
};

// Checks every field and tokenizes text input (a text longer than limits.max_prompt_text_bytes is
// refused before tokenizing). Chat input: each JSON field is valid UTF-8 of at most
// max_prompt_text_bytes, nested at most kMaxJsonDepth; the rendered prompt is held to
// max_prompt_text_bytes too, then tokenized without special tokens (the template wrote them). Does not set
// params.deadline, request_id or id_namespace beyond copying the client's request_id.
StatusOr<GenerateParams> build_generate_params(const v1::GenerateRequest& request, const ModelLimits& model,
                                               const RequestLimits& limits = {});

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points
// above U+10FFFF are invalid), or -1 when `text` is valid.
int64_t first_invalid_utf8(std::string_view text);

void delta_to_proto(DeltaEvent&& delta, v1::Delta* out);
void final_to_proto(FinalEvent&& final_event, v1::Final* out);

}  // namespace moe::server
