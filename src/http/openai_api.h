// The OpenAI-compatible request and response formats, apart from any socket: JSON request bodies
// -> GenerateParams, engine events -> JSON responses and server-sent-event chunks, errors ->
// OpenAI's error object. Pure functions and one accumulator per request, so that every field rule
// is tested without a server (tests/http/openai_api_test.cc).
//
// Requests are checked field by field: a wrong type, an out-of-range value or an unsupported
// option is a 400 naming the JSON field (`param`) and the limit. Range checks that the gRPC API
// shares (sampling, stop strings, max_tokens vs the context) go through the same
// build_generate_params as a gRPC request, so both APIs accept exactly the same values; its
// messages, which name proto fields, are rewritten to name the OpenAI field.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "engine/engine.h"
#include "server/request_builder.h"

namespace moe::http {

// One error as OpenAI returns it: {"error": {"message", "type", "param", "code"}} with `status`.
struct ApiError {
    int status = 400;
    std::string message;
    std::string type = "invalid_request_error";
    std::string param;  // the JSON field at fault; empty: null
    std::string code;   // empty: null
};
std::string error_body(const ApiError& error);
// 400 invalid_request_error naming `param`.
ApiError bad_request(std::string message, std::string param = {});
// A moe::Status from the engine or the request builder as an HTTP error: kInvalidArgument 400,
// kNotFound 404, kResourceExhausted 429, kUnavailable 503, anything else 500.
ApiError from_status(const Status& status, std::string param = {});

// Renders chat messages to a prompt with the model's chat template (see HttpOptions::render_chat):
// (messages, tools (null when the request has none), add_generation_prompt, chat_template_kwargs),
// insertion-ordered as the client sent them.
using ChatRenderer =
    std::function<StatusOr<std::string>(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                        bool add_generation_prompt, const nlohmann::ordered_json& extra)>;

enum class Endpoint { kCompletions, kChatCompletions };

// What a request is checked against.
struct ApiContext {
    std::string model_id;     // what /v1/models lists; `model` must name it (or alias)
    std::string model_alias;  // also accepted as `model` (the model directory); may be empty
    server::ModelLimits model;
    RequestLimits limits;
    int max_json_depth = 32;
    ChatRenderer render_chat;  // null: the model has no chat template (chat requests get 400)
    // Why render_chat is null, for that 400 (e.g. the template failed to load); empty: no template.
    std::string chat_unavailable_reason;
};

struct ParsedRequest {
    Endpoint endpoint = Endpoint::kCompletions;
    GenerateParams params;  // request_id and id_namespace left to the server
    bool stream = false;
    bool include_usage = false;  // stream_options.include_usage
    // Completions: `logprobs` (an int, top alternatives); chat: `logprobs` true, top_logprobs.
    bool logprobs = false;
    int top_logprobs = 0;
};

// Parses and checks a request body. On failure returns the error (never throws).
std::optional<ApiError> parse_request(std::string_view body, Endpoint endpoint, const ApiContext& ctx,
                                      ParsedRequest* out);

// The JSON path ("messages[1].content") of the string that contains byte `offset` of `text`, or
// "" when none does. Used to name the field that holds invalid UTF-8 (nlohmann's parser rejects it
// without saying where in the document it was).
std::string json_path_at(std::string_view text, size_t offset);

// Builds the responses of one request from its engine events, in order. Not thread-safe; used on
// the connection's strand only.
class ResponseBuilder {
public:
    ResponseBuilder(const ParsedRequest& request, std::string id, std::string model_id, int64_t created,
                    const Tokenizer* tokenizer);

    // Streaming: the SSE events ("data: {...}\n\n") for this delta (possibly none).
    std::string stream_delta(const DeltaEvent& delta);
    // Streaming: the closing events: the finish chunk (or an error event), the usage chunk when
    // asked, and "data: [DONE]".
    std::string stream_final(const FinalEvent& final_event);

    // Non-streaming: accumulates a delta.
    void add_delta(const DeltaEvent& delta);
    // Non-streaming: the response body, or an error for a request that ended in error or was
    // cancelled (drain).
    std::optional<ApiError> final_error(const FinalEvent& final_event) const;
    std::string complete_body(const FinalEvent& final_event) const;

private:
    nlohmann::json chunk_base() const;
    nlohmann::json logprobs_json(const DeltaEvent& delta);
    void append_logprobs(nlohmann::json& into, const nlohmann::json& more) const;
    nlohmann::json usage_json(const FinalEvent& f) const;
    std::string token_text(int32_t id) const;

    ParsedRequest request_;
    std::string id_;
    std::string model_id_;
    int64_t created_;
    const Tokenizer* tokenizer_;
    bool sent_role_ = false;
    std::string text_;
    nlohmann::json logprobs_;  // accumulated (non-streaming)
    int64_t text_offset_ = 0;  // completions logprobs.text_offset
};

// The finish_reason string: "stop", "length", else null.
nlohmann::json finish_reason_json(FinishReason reason);

// JSON text without throwing on invalid UTF-8 (replaced by U+FFFD): token text may hold part of a
// character.
std::string dump_json(const nlohmann::json& value);

}  // namespace moe::http
