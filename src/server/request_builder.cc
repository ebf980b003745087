#include "server/request_builder.h"

#include <fmt/format.h>

#include <cmath>
#include <string>

#include "core/json_limits.h"

namespace moe::server {
namespace {

std::string str(int64_t v) {
    return std::to_string(v);
}

std::string fstr(float v) {
    if (std::isnan(v)) return "NaN";
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(v));
    return buf;
}

Status check_float(const char* field, float v, float lo, bool lo_open, float hi, const char* range) {
    const bool below = lo_open ? !(v > lo) : !(v >= lo);  // NaN fails both
    if (!std::isfinite(v) || below || !(v <= hi))
        return invalid_argument(std::string(field) + " must be in " + range + ", got " + fstr(v));
    return ok_status();
}

Status build_sampling(const v1::SamplingOptions& s, const RequestLimits& limits, SamplingParams& out) {
    if (s.has_temperature()) {
        const float t = s.temperature();
        if (!std::isfinite(t) || t < 0 || t > limits.max_temperature)
            return invalid_argument("sampling.temperature must be finite and in [0, " + fstr(limits.max_temperature) +
                                    "] (0 = greedy), got " + fstr(t));
        out.temperature = t;
    }
    if (s.has_top_p()) {
        MOE_RETURN_IF_ERROR(check_float("sampling.top_p", s.top_p(), 0.0f, true, 1.0f, "(0, 1]"));
        out.top_p = s.top_p();
    }
    if (s.has_top_k()) {
        if (s.top_k() < -1)
            return invalid_argument("sampling.top_k must be -1 or 0 (all tokens) or >= 1, got " + str(s.top_k()));
        out.top_k = s.top_k() == 0 ? -1 : s.top_k();
    }
    if (s.has_min_p()) {
        MOE_RETURN_IF_ERROR(check_float("sampling.min_p", s.min_p(), 0.0f, false, 1.0f, "[0, 1]"));
        out.min_p = s.min_p();
    }
    if (s.has_repetition_penalty()) {
        const std::string range = fmt::format("(0, {}]", fstr(limits.max_repetition_penalty));
        MOE_RETURN_IF_ERROR(check_float("sampling.repetition_penalty", s.repetition_penalty(), 0.0f, true,
                                        limits.max_repetition_penalty, range.c_str()));
        out.repetition_penalty = s.repetition_penalty();
    }
    const float pen = limits.max_abs_penalty;
    const std::string pen_range = fmt::format("[{}, {}]", fstr(-pen), fstr(pen));
    if (s.has_presence_penalty()) {
        MOE_RETURN_IF_ERROR(
            check_float("sampling.presence_penalty", s.presence_penalty(), -pen, false, pen, pen_range.c_str()));
        out.presence_penalty = s.presence_penalty();
    }
    if (s.has_frequency_penalty()) {
        MOE_RETURN_IF_ERROR(
            check_float("sampling.frequency_penalty", s.frequency_penalty(), -pen, false, pen, pen_range.c_str()));
        out.frequency_penalty = s.frequency_penalty();
    }
    if (s.has_seed()) out.seed = s.seed();
    return ok_status();
}

// One JSON field of GenerateRequest.Chat: UTF-8, size and depth checked before parsing; ordered
// so that dicts reach the template in the client's key order.
StatusOr<nlohmann::ordered_json> parse_chat_json(const std::string& bytes, const char* field,
                                                 const RequestLimits& limits) {
    if (bytes.size() > limits.max_prompt_text_bytes)
        return invalid_argument(std::string(field) + " is " + str(static_cast<int64_t>(bytes.size())) +
                                " bytes, the limit is " + str(static_cast<int64_t>(limits.max_prompt_text_bytes)));
    if (const int64_t bad = first_invalid_utf8(bytes); bad >= 0)
        return invalid_argument(std::string(field) + ": invalid UTF-8 at byte " + str(bad));
    MOE_RETURN_IF_ERROR(check_json_depth(bytes, field));
    try {
        return nlohmann::ordered_json::parse(bytes);
    } catch (const nlohmann::json::exception& e) {
        return invalid_argument(std::string(field) + ": not valid JSON: " + e.what());
    }
}

StatusOr<std::string> render_chat(const v1::GenerateRequest::Chat& chat, const ModelLimits& model,
                                  const RequestLimits& limits) {
    if (model.chat_template == nullptr) {
        if (!model.chat_template_error.empty())
            return invalid_argument("chat: the served model's chat template could not be loaded: " +
                                    model.chat_template_error);
        return invalid_argument(
            "chat: the served model has no chat template (no 'chat_template' in tokenizer_config.json and no "
            "chat_template.jinja); send text or token_ids instead");
    }
    if (model.tokenizer == nullptr)
        return invalid_argument("chat: the served model has no tokenizer; send token_ids instead");
    if (chat.messages().empty()) return invalid_argument("chat.messages: empty (a JSON array of messages is required)");
    MOE_ASSIGN_OR_RETURN(nlohmann::ordered_json messages, parse_chat_json(chat.messages(), "chat.messages", limits));
    if (!messages.is_array()) return invalid_argument("chat.messages must be a JSON array of message objects");
    for (size_t i = 0; i < messages.size(); ++i) {
        if (!messages[i].is_object())
            return invalid_argument("chat.messages[" + str(static_cast<int64_t>(i)) + "] must be a JSON object");
    }
    nlohmann::ordered_json tools;  // null: the template sees None
    if (!chat.tools().empty()) {
        MOE_ASSIGN_OR_RETURN(tools, parse_chat_json(chat.tools(), "chat.tools", limits));
        if (!tools.is_array()) return invalid_argument("chat.tools must be a JSON array of tool definitions");
    }
    nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
    if (!chat.template_kwargs().empty()) {
        MOE_ASSIGN_OR_RETURN(kwargs, parse_chat_json(chat.template_kwargs(), "chat.template_kwargs", limits));
        if (!kwargs.is_object()) return invalid_argument("chat.template_kwargs must be a JSON object");
    }
    const bool add_generation_prompt = chat.has_add_generation_prompt() ? chat.add_generation_prompt() : true;
    tmpl::ChatTemplate tmpl = *model.chat_template;  // shares the parsed template; only limits are per copy
    tmpl::RenderLimits rl;
    rl.max_output_bytes = limits.max_prompt_text_bytes;
    tmpl.set_limits(rl);
    StatusOr<std::string> text = tmpl.render(messages, tools, add_generation_prompt, kwargs);
    if (!text.ok()) {
        // A template's raise_exception or a malformed conversation is the caller's to fix.
        return invalid_argument("chat: " + text.status().message());
    }
    if (text->empty()) return invalid_argument("chat: the chat template rendered an empty prompt");
    return text;
}

}  // namespace

int64_t first_invalid_utf8(std::string_view text) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    size_t i = 0;
    while (i < n) {
        const unsigned c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len = 0;
        uint32_t cp = 0;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return static_cast<int64_t>(i);  // continuation byte, C0/C1 overlong lead, F5..FF
        }
        if (i + len > n) return static_cast<int64_t>(i);
        for (size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return static_cast<int64_t>(i);
        i += len;
    }
    return -1;
}

StatusOr<GenerateParams> build_generate_params(const v1::GenerateRequest& request, const ModelLimits& model,
                                               const RequestLimits& limits) {
    GenerateParams params;
    if (request.request_id().size() > limits.max_request_id_bytes)
        return invalid_argument("request_id is " + str(static_cast<int64_t>(request.request_id().size())) +
                                " bytes, the limit is " + str(static_cast<int64_t>(limits.max_request_id_bytes)));
    if (const int64_t bad = first_invalid_utf8(request.request_id()); bad >= 0)
        return invalid_argument("request_id: invalid UTF-8 at byte " + str(bad));
    params.request_id = request.request_id();

    // ---- the prompt
    switch (request.input_case()) {
        case v1::GenerateRequest::kText: {
            const std::string& text = request.text();
            if (model.tokenizer == nullptr)
                return invalid_argument("text: the served model has no tokenizer; send token_ids instead");
            if (text.empty()) return invalid_argument("text: the prompt is empty");
            if (text.size() > limits.max_prompt_text_bytes)
                return invalid_argument("text: the prompt is " + str(static_cast<int64_t>(text.size())) +
                                        " bytes, the limit is " +
                                        str(static_cast<int64_t>(limits.max_prompt_text_bytes)));
            const int64_t bad = first_invalid_utf8(text);
            if (bad >= 0) return invalid_argument("text: invalid UTF-8 at byte " + str(bad));
            auto ids = model.tokenizer->encode(text, /*add_special_tokens=*/true);
            if (!ids.ok()) return invalid_argument("text: " + ids.status().message());
            params.prompt_ids = std::move(ids).value();
            if (params.prompt_ids.empty()) return invalid_argument("text: the prompt tokenizes to no tokens");
            break;
        }
        case v1::GenerateRequest::kTokenIds: {
            const auto& ids = request.token_ids().ids();
            if (ids.empty()) return invalid_argument("token_ids.ids: the prompt is empty");
            for (int i = 0; i < ids.size(); ++i) {
                if (ids[i] < 0 || ids[i] >= model.vocab_size)
                    return invalid_argument("token_ids.ids[" + str(i) + "]: id " + str(ids[i]) +
                                            " is outside the vocabulary [0, " + str(model.vocab_size) + ")");
            }
            params.prompt_ids.assign(ids.begin(), ids.end());
            break;
        }
        case v1::GenerateRequest::kChat: {
            MOE_ASSIGN_OR_RETURN(std::string text, render_chat(request.chat(), model, limits));
            auto ids = model.tokenizer->encode(text, /*add_special_tokens=*/false);
            if (!ids.ok()) return invalid_argument("chat: " + ids.status().message());
            params.prompt_ids = std::move(ids).value();
            if (params.prompt_ids.empty()) return invalid_argument("chat: the prompt tokenizes to no tokens");
            break;
        }
        case v1::GenerateRequest::INPUT_NOT_SET:
            return invalid_argument("input: set text, token_ids or chat");
    }
    const int64_t num_prompt = static_cast<int64_t>(params.prompt_ids.size());
    if (num_prompt >= model.max_model_len)
        return invalid_argument("prompt: " + str(num_prompt) + " tokens, but max_model_len is " +
                                str(model.max_model_len) + " and at least one token must be generated (at most " +
                                str(model.max_model_len - 1) + " prompt tokens)");
    const int64_t room = model.max_model_len - num_prompt;

    // ---- sampling
    MOE_RETURN_IF_ERROR(build_sampling(request.sampling(), limits, params.sampling));

    // ---- stopping
    const v1::StoppingOptions& st = request.stopping();
    StopCriteria& stop = params.stopping;
    if (st.has_max_tokens()) {
        const int64_t m = st.max_tokens();
        if (m < 1) return invalid_argument("stopping.max_tokens must be >= 1, got " + str(m));
        if (m > room)
            return invalid_argument("stopping.max_tokens: " + str(m) + " plus the prompt's " + str(num_prompt) +
                                    " tokens exceeds max_model_len " + str(model.max_model_len) + " (at most " +
                                    str(room) + " for this prompt)");
        stop.max_tokens = static_cast<int32_t>(m);
    } else {
        stop.max_tokens = static_cast<int32_t>(std::min<int64_t>(limits.default_max_tokens, room));
    }
    if (st.has_min_tokens()) {
        if (st.min_tokens() < 0 || st.min_tokens() > stop.max_tokens)
            return invalid_argument("stopping.min_tokens must be in [0, max_tokens = " + str(stop.max_tokens) +
                                    "], got " + str(st.min_tokens()));
        stop.min_tokens = st.min_tokens();
    }
    if (st.stop_size() > limits.max_stop_strings)
        return invalid_argument("stopping.stop: " + str(st.stop_size()) + " stop strings, the limit is " +
                                str(limits.max_stop_strings));
    if (st.stop_size() > 0 && model.tokenizer == nullptr)
        return invalid_argument(
            "stopping.stop: the served model has no tokenizer, so stop strings cannot match; "
            "use stopping.stop_token_ids");
    for (int i = 0; i < st.stop_size(); ++i) {
        const std::string& s = st.stop(i);
        if (s.empty()) return invalid_argument("stopping.stop[" + str(i) + "] is empty");
        if (s.size() > limits.max_stop_string_bytes)
            return invalid_argument("stopping.stop[" + str(i) + "] is " + str(static_cast<int64_t>(s.size())) +
                                    " bytes, the limit is " + str(static_cast<int64_t>(limits.max_stop_string_bytes)));
        if (const int64_t bad = first_invalid_utf8(s); bad >= 0)
            return invalid_argument("stopping.stop[" + str(i) + "]: invalid UTF-8 at byte " + str(bad));
        stop.stop_strings.push_back(s);
    }
    if (st.stop_token_ids_size() > limits.max_stop_token_ids)
        return invalid_argument("stopping.stop_token_ids: " + str(st.stop_token_ids_size()) + " ids, the limit is " +
                                str(limits.max_stop_token_ids));
    for (int i = 0; i < st.stop_token_ids_size(); ++i) {
        const int32_t id = st.stop_token_ids(i);
        if (id < 0 || id >= model.vocab_size)
            return invalid_argument("stopping.stop_token_ids[" + str(i) + "]: id " + str(id) +
                                    " is outside the vocabulary [0, " + str(model.vocab_size) + ")");
        stop.stop_token_ids.push_back(id);
    }
    if (st.has_ignore_eos()) stop.ignore_eos = st.ignore_eos();

    // ---- output
    const v1::OutputOptions& out = request.output();
    if (out.has_logprobs()) {
        if (out.logprobs() < 0 || out.logprobs() > limits.max_logprobs)
            return invalid_argument("output.logprobs must be in [0, " + str(limits.max_logprobs) + "], got " +
                                    str(out.logprobs()));
        params.sampling.logprobs = out.logprobs();
    }
    if (out.has_skip_special_tokens()) params.skip_special_tokens = out.skip_special_tokens();
    if (out.has_stream_interval()) {
        if (out.stream_interval() < 1 || out.stream_interval() > limits.max_stream_interval)
            return invalid_argument("output.stream_interval must be in [1, " + str(limits.max_stream_interval) +
                                    "], got " + str(out.stream_interval()));
        params.stream_interval = out.stream_interval();
    }
    if (request.has_cache_salt()) {
        if (request.cache_salt().size() > limits.max_cache_salt_bytes)
            return invalid_argument("cache_salt is " + str(static_cast<int64_t>(request.cache_salt().size())) +
                                    " bytes, the limit is " + str(static_cast<int64_t>(limits.max_cache_salt_bytes)));
        params.cache_salt = request.cache_salt();
    }
    // The sampler's own check, so that the server and the engine never disagree about a limit.
    Status s = validate(params.sampling);
    if (!s.ok()) return invalid_argument("sampling: " + s.message());
    s = validate(params.stopping, model.max_model_len);
    if (!s.ok()) return invalid_argument("stopping: " + s.message());
    return params;
}

void delta_to_proto(DeltaEvent&& delta, v1::Delta* out) {
    out->mutable_token_ids()->Reserve(static_cast<int>(delta.tokens.size()));
    for (const TokenEvent& t : delta.tokens) {
        out->add_token_ids(t.token);
        v1::GeneratedToken* g = out->add_tokens();
        g->set_token_id(t.token);
        g->set_logprob(t.logprob);
        for (const TokenLogprob& alt : t.top) {
            v1::TokenLogprob* a = g->add_top();
            a->set_token_id(alt.token);
            a->set_logprob(alt.logprob);
        }
    }
    out->set_text(std::move(delta.text));
}

void final_to_proto(FinalEvent&& f, v1::Final* out) {
    switch (f.reason) {
        case FinishReason::kStop:
            out->set_finish_reason(v1::FINISH_REASON_STOP);
            break;
        case FinishReason::kLength:
            out->set_finish_reason(v1::FINISH_REASON_LENGTH);
            break;
        case FinishReason::kCancelled:
            out->set_finish_reason(v1::FINISH_REASON_CANCELLED);
            break;
        case FinishReason::kError:
            out->set_finish_reason(v1::FINISH_REASON_ERROR);
            break;
        case FinishReason::kDeadline:
            out->set_finish_reason(v1::FINISH_REASON_DEADLINE);
            break;
        case FinishReason::kNone:
            out->set_finish_reason(v1::FINISH_REASON_UNSPECIFIED);
            break;
    }
    if (!f.matched_stop.empty()) out->set_matched_stop(std::move(f.matched_stop));
    if (f.matched_token.has_value()) out->set_matched_token_id(*f.matched_token);
    v1::Usage* u = out->mutable_usage();
    u->set_prompt_tokens(f.prompt_tokens);
    u->set_completion_tokens(f.completion_tokens);
    u->set_cached_prompt_tokens(f.cached_prompt_tokens);
    v1::Timing* t = out->mutable_timing();
    t->set_queue_seconds(f.queue_seconds);
    t->set_ttft_seconds(f.ttft_seconds);
    t->set_mean_inter_token_seconds(f.mean_itl_seconds);
    t->set_total_seconds(f.total_seconds);
    if (!f.error.ok()) out->set_error(f.error.to_string());
}

}  // namespace moe::server
