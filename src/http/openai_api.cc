#include "http/openai_api.h"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "core/json_limits.h"

namespace moe::http {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

std::string str(int64_t v) {
    return std::to_string(v);
}

const char* type_name(const json& v) {
    switch (v.type()) {
        case json::value_t::null:
            return "null";
        case json::value_t::boolean:
            return "a boolean";
        case json::value_t::string:
            return "a string";
        case json::value_t::array:
            return "an array";
        case json::value_t::object:
            return "an object";
        case json::value_t::number_float:
            return "a number with a fraction";
        default:
            return "an integer";
    }
}

// The field, or null when absent or JSON null (OpenAI clients send null for "not set").
const json* field(const json& obj, const char* name) {
    auto it = obj.find(name);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
}

ApiError wrong_type(const std::string& name, const char* want, const json& got) {
    return bad_request(name + " must be " + want + ", got " + type_name(got), name);
}

std::optional<ApiError> get_bool(const json& obj, const char* name, std::optional<bool>* out) {
    const json* v = field(obj, name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) return wrong_type(name, "a boolean", *v);
    *out = v->get<bool>();
    return std::nullopt;
}

std::optional<ApiError> get_int(const json& obj, const char* name, std::optional<int64_t>* out) {
    const json* v = field(obj, name);
    if (v == nullptr) return std::nullopt;
    if (v->is_number_unsigned()) {
        const uint64_t u = v->get<uint64_t>();
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            return bad_request(std::string(name) + " is out of range", name);
        *out = static_cast<int64_t>(u);
        return std::nullopt;
    }
    if (!v->is_number_integer()) return wrong_type(name, "an integer", *v);
    *out = v->get<int64_t>();
    return std::nullopt;
}

std::optional<ApiError> get_float(const json& obj, const char* name, std::optional<float>* out) {
    const json* v = field(obj, name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) return wrong_type(name, "a number", *v);
    const double d = v->get<double>();
    // Out of float range: let the range check name it (as +-inf).
    *out = static_cast<float>(d);
    return std::nullopt;
}

// A request_builder message names proto fields; the OpenAI client knows its own names.
struct Rename {
    std::string proto;
    std::string api;
};

ApiError rename_builder_error(const Status& s, Endpoint endpoint, const std::string& max_tokens_name,
                              const std::string& logprobs_name) {
    const std::string prompt_name = endpoint == Endpoint::kChatCompletions ? "messages" : "prompt";
    const Rename renames[] = {
        {"sampling.", ""},
        {"stopping.max_tokens", max_tokens_name},
        {"stopping.min_tokens", "min_tokens"},
        {"stopping.stop_token_ids", "stop_token_ids"},
        {"stopping.stop", "stop"},
        {"output.logprobs", logprobs_name},
        {"text:", prompt_name + ":"},
        {"token_ids.ids", prompt_name},
        {"prompt:", prompt_name + ":"},
    };
    std::string msg = s.message();
    for (const Rename& r : renames) {
        if (msg.rfind(r.proto, 0) == 0) {
            msg = r.api + msg.substr(r.proto.size());
            break;
        }
    }
    size_t end = msg.find_first_of(" :[");
    std::string param = msg.substr(0, end == std::string::npos ? msg.size() : end);
    if (param == "sampling" || param == "stopping") param.clear();
    return from_status(Status(s.code(), msg), param);
}

// Chat content: a string, null, or an array of {"type": "text", "text": ...} parts (joined).
std::optional<ApiError> normalize_content(json& message, const std::string& where) {
    auto it = message.find("content");
    if (it == message.end() || it->is_null() || it->is_string()) return std::nullopt;
    if (!it->is_array()) return wrong_type(where + ".content", "a string, an array of parts or null", *it);
    std::string text;
    for (size_t j = 0; j < it->size(); ++j) {
        const json& part = (*it)[j];
        const std::string pw = where + ".content[" + str(static_cast<int64_t>(j)) + "]";
        if (!part.is_object()) return wrong_type(pw, "an object", part);
        const json* type = field(part, "type");
        if (type == nullptr || !type->is_string()) return bad_request(pw + ".type must be a string", pw + ".type");
        if (type->get<std::string>() != "text")
            return bad_request(pw + ".type '" + type->get<std::string>() + "' is not supported (text parts only)",
                               pw + ".type");
        const json* t = field(part, "text");
        if (t == nullptr || !t->is_string()) return bad_request(pw + ".text must be a string", pw + ".text");
        text += t->get<std::string>();
    }
    *it = text;
    return std::nullopt;
}

std::optional<ApiError> refuse_unless(const json& body, const char* name, const std::function<bool(const json&)>& ok,
                                      const std::string& why) {
    const json* v = field(body, name);
    if (v == nullptr || ok(*v)) return std::nullopt;
    return bad_request(std::string(name) + ": " + why, name);
}

}  // namespace

std::string dump_json(const json& value) {
    return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string error_body(const ApiError& e) {
    json err = {{"message", e.message},
                {"type", e.type},
                {"param", e.param.empty() ? json() : json(e.param)},
                {"code", e.code.empty() ? json() : json(e.code)}};
    return dump_json(json{{"error", std::move(err)}});
}

ApiError bad_request(std::string message, std::string param) {
    return ApiError{.status = 400, .message = std::move(message), .param = std::move(param)};
}

ApiError from_status(const Status& s, std::string param) {
    ApiError e{.message = s.message(), .param = std::move(param)};
    switch (s.code()) {
        case StatusCode::kInvalidArgument:
        case StatusCode::kOutOfRange:
            e.status = 400;
            break;
        case StatusCode::kNotFound:
            e.status = 404;
            break;
        case StatusCode::kResourceExhausted:
            e.status = 429;
            e.type = "rate_limit_error";
            break;
        case StatusCode::kUnavailable:
            e.status = 503;
            e.type = "server_error";
            break;
        default:
            e.status = 500;
            e.type = "server_error";
            break;
    }
    return e;
}

std::string json_path_at(std::string_view text, size_t offset) {
    struct Frame {
        bool object = false;
        bool expect_key = false;
        std::string key;
        int64_t index = 0;
    };
    std::vector<Frame> stack;
    auto path = [&] {
        std::string p;
        for (const Frame& f : stack) {
            if (f.object) {
                if (!p.empty()) p += '.';
                p += f.key;
            } else {
                p += '[';
                p += str(f.index);
                p += ']';
            }
        }
        return p;
    };
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '{') {
            stack.push_back({.object = true, .expect_key = true});
        } else if (c == '[') {
            stack.push_back({.object = false});
        } else if (c == '}' || c == ']') {
            if (!stack.empty()) stack.pop_back();
        } else if (c == ',') {
            if (!stack.empty()) {
                if (stack.back().object)
                    stack.back().expect_key = true;
                else
                    ++stack.back().index;
            }
        } else if (c == '"') {
            const size_t start = i + 1;
            size_t j = start;
            while (j < text.size() && text[j] != '"') j += text[j] == '\\' ? 2 : 1;
            const bool is_key = !stack.empty() && stack.back().object && stack.back().expect_key;
            if (offset >= start && offset < j) {
                if (is_key) stack.back().key = "(a key)";
                return path();
            }
            if (is_key) {
                stack.back().key = std::string(text.substr(start, std::min(j, text.size()) - start));
                stack.back().expect_key = false;
            }
            i = j;
        }
        if (i >= offset) break;
    }
    return "";
}

std::optional<ApiError> parse_request(std::string_view body, Endpoint endpoint, const ApiContext& ctx,
                                      ParsedRequest* out) {
    const bool chat = endpoint == Endpoint::kChatCompletions;
    if (Status s = check_json_depth(body, "request body", ctx.max_json_depth); !s.ok()) return bad_request(s.message());
    json req;
    try {
        req = json::parse(body);
    } catch (const json::parse_error& e) {
        if (const int64_t bad = server::first_invalid_utf8(body); bad >= 0) {
            const std::string where = json_path_at(body, static_cast<size_t>(bad));
            return bad_request((where.empty() ? std::string("request body") : where) + ": invalid UTF-8 at byte " +
                                   str(bad) + " of the body",
                               where);
        }
        return bad_request(std::string("request body is not valid JSON: ") + e.what());
    }
    if (!req.is_object()) return bad_request(std::string("request body must be a JSON object, got ") + type_name(req));

    // ---- model
    if (const json* m = field(req, "model")) {
        if (!m->is_string()) return wrong_type("model", "a string", *m);
        const std::string name = m->get<std::string>();
        if (name != ctx.model_id && (ctx.model_alias.empty() || name != ctx.model_alias))
            return ApiError{.status = 404,
                            .message = "The model `" + name + "` does not exist; this server serves `" + ctx.model_id +
                                       "` (GET /v1/models)",
                            .param = "model",
                            .code = "model_not_found"};
    }

    // ---- options this server does not implement: refused, never silently ignored
    if (auto e = refuse_unless(
            req, "n", [](const json& v) { return v.is_number_integer() && v.get<int64_t>() == 1; },
            "only n = 1 is supported (one choice per request); send separate requests"))
        return e;
    if (auto e = refuse_unless(
            req, "best_of", [](const json& v) { return v.is_number_integer() && v.get<int64_t>() == 1; },
            "only best_of = 1 is supported"))
        return e;
    if (auto e = refuse_unless(
            req, "echo", [](const json& v) { return v.is_boolean() && !v.get<bool>(); }, "echo is not supported"))
        return e;
    if (auto e = refuse_unless(
            req, "suffix", [](const json& v) { return v.is_string() && v.get<std::string>().empty(); },
            "suffix (insertion) is not supported"))
        return e;
    if (auto e = refuse_unless(
            req, "logit_bias", [](const json& v) { return v.is_object() && v.empty(); }, "logit_bias is not supported"))
        return e;
    if (auto e = refuse_unless(
            req, "response_format",
            [](const json& v) { return v.is_object() && v.value("type", std::string()) == "text"; },
            "only {\"type\": \"text\"} is supported (no JSON mode or schemas)"))
        return e;

    ParsedRequest parsed;
    parsed.endpoint = endpoint;
    v1::GenerateRequest proto;

    // ---- stream
    std::optional<bool> stream;
    if (auto e = get_bool(req, "stream", &stream)) return e;
    parsed.stream = stream.value_or(false);
    if (const json* so = field(req, "stream_options")) {
        if (!so->is_object()) return wrong_type("stream_options", "an object", *so);
        std::optional<bool> include_usage;
        if (const json* iu = field(*so, "include_usage")) {
            if (!iu->is_boolean()) return wrong_type("stream_options.include_usage", "a boolean", *iu);
            include_usage = iu->get<bool>();
        }
        parsed.include_usage = include_usage.value_or(false);
    }

    // ---- sampling
    v1::SamplingOptions* sampling = proto.mutable_sampling();
    struct FloatField {
        const char* name;
        void (v1::SamplingOptions::*set)(float);
    };
    const FloatField floats[] = {
        {"temperature", &v1::SamplingOptions::set_temperature},
        {"top_p", &v1::SamplingOptions::set_top_p},
        {"min_p", &v1::SamplingOptions::set_min_p},
        {"repetition_penalty", &v1::SamplingOptions::set_repetition_penalty},
        {"presence_penalty", &v1::SamplingOptions::set_presence_penalty},
        {"frequency_penalty", &v1::SamplingOptions::set_frequency_penalty},
    };
    for (const FloatField& f : floats) {
        std::optional<float> v;
        if (auto e = get_float(req, f.name, &v)) return e;
        if (v) (sampling->*f.set)(*v);
    }
    std::optional<int64_t> top_k, seed;
    if (auto e = get_int(req, "top_k", &top_k)) return e;
    if (top_k) {
        if (*top_k < -1 || *top_k > std::numeric_limits<int32_t>::max())
            return bad_request("top_k must be -1 or 0 (all tokens) or >= 1, got " + str(*top_k), "top_k");
        sampling->set_top_k(static_cast<int32_t>(*top_k));
    }
    if (auto e = get_int(req, "seed", &seed)) return e;
    if (seed) sampling->set_seed(static_cast<uint64_t>(*seed));  // any 64-bit value seeds the generator

    // ---- stopping
    v1::StoppingOptions* stopping = proto.mutable_stopping();
    std::optional<int64_t> max_tokens, max_completion_tokens, min_tokens;
    if (auto e = get_int(req, "max_tokens", &max_tokens)) return e;
    if (auto e = get_int(req, "max_completion_tokens", &max_completion_tokens)) return e;
    const std::string max_tokens_name = max_completion_tokens ? "max_completion_tokens" : "max_tokens";
    if (max_completion_tokens) max_tokens = max_completion_tokens;
    if (max_tokens) {
        if (*max_tokens < 1)
            return bad_request(max_tokens_name + " must be >= 1, got " + str(*max_tokens), max_tokens_name);
        stopping->set_max_tokens(
            static_cast<int32_t>(std::min<int64_t>(*max_tokens, std::numeric_limits<int32_t>::max())));
    }
    if (auto e = get_int(req, "min_tokens", &min_tokens)) return e;
    if (min_tokens) {
        if (*min_tokens < 0 || *min_tokens > std::numeric_limits<int32_t>::max())
            return bad_request("min_tokens must be >= 0, got " + str(*min_tokens), "min_tokens");
        stopping->set_min_tokens(static_cast<int32_t>(*min_tokens));
    }
    if (const json* st = field(req, "stop")) {
        if (st->is_string()) {
            stopping->add_stop(st->get<std::string>());
        } else if (st->is_array()) {
            if (st->size() > static_cast<size_t>(ctx.limits.max_stop_strings))
                return bad_request("stop: " + str(static_cast<int64_t>(st->size())) + " stop strings, the limit is " +
                                       str(ctx.limits.max_stop_strings),
                                   "stop");
            for (size_t i = 0; i < st->size(); ++i) {
                if (!(*st)[i].is_string())
                    return wrong_type("stop[" + str(static_cast<int64_t>(i)) + "]", "a string", (*st)[i]);
                stopping->add_stop((*st)[i].get<std::string>());
            }
        } else {
            return wrong_type("stop", "a string or an array of strings", *st);
        }
    }
    if (const json* ids = field(req, "stop_token_ids")) {
        if (!ids->is_array()) return wrong_type("stop_token_ids", "an array of integers", *ids);
        if (ids->size() > static_cast<size_t>(ctx.limits.max_stop_token_ids))
            return bad_request("stop_token_ids: " + str(static_cast<int64_t>(ids->size())) + " ids, the limit is " +
                                   str(ctx.limits.max_stop_token_ids),
                               "stop_token_ids");
        for (size_t i = 0; i < ids->size(); ++i) {
            const json& id = (*ids)[i];
            if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= ctx.model.vocab_size)
                return bad_request("stop_token_ids[" + str(static_cast<int64_t>(i)) + "] must be a token id in [0, " +
                                       str(ctx.model.vocab_size) + ")",
                                   "stop_token_ids");
            stopping->add_stop_token_ids(static_cast<int32_t>(id.get<int64_t>()));
        }
    }
    std::optional<bool> ignore_eos, skip_special;
    if (auto e = get_bool(req, "ignore_eos", &ignore_eos)) return e;
    if (ignore_eos) stopping->set_ignore_eos(*ignore_eos);
    if (auto e = get_bool(req, "skip_special_tokens", &skip_special)) return e;
    if (skip_special) proto.mutable_output()->set_skip_special_tokens(*skip_special);

    // ---- logprobs: completions take an int (how many alternatives), chat a bool + top_logprobs
    std::string logprobs_name = "logprobs";
    if (chat) {
        std::optional<bool> lp;
        std::optional<int64_t> top;
        if (auto e = get_bool(req, "logprobs", &lp)) return e;
        if (auto e = get_int(req, "top_logprobs", &top)) return e;
        parsed.logprobs = lp.value_or(false);
        if (top) {
            if (!parsed.logprobs) return bad_request("top_logprobs needs logprobs: true", "top_logprobs");
            if (*top < 0 || *top > ctx.limits.max_logprobs)
                return bad_request(
                    "top_logprobs must be in [0, " + str(ctx.limits.max_logprobs) + "], got " + str(*top),
                    "top_logprobs");
            parsed.top_logprobs = static_cast<int>(*top);
            logprobs_name = "top_logprobs";
        }
    } else {
        std::optional<int64_t> lp;
        if (auto e = get_int(req, "logprobs", &lp)) return e;
        if (lp) {
            if (*lp < 0 || *lp > ctx.limits.max_logprobs)
                return bad_request("logprobs must be in [0, " + str(ctx.limits.max_logprobs) + "], got " + str(*lp),
                                   "logprobs");
            parsed.logprobs = true;
            parsed.top_logprobs = static_cast<int>(*lp);
        }
    }
    if (parsed.top_logprobs > 0) proto.mutable_output()->set_logprobs(parsed.top_logprobs);

    // ---- the prompt
    if (chat) {
        if (field(req, "prompt") != nullptr)
            return bad_request("prompt belongs to /v1/completions; send messages", "prompt");
        const json* msgs = field(req, "messages");
        if (msgs == nullptr) return bad_request("messages is required", "messages");
        if (!msgs->is_array()) return wrong_type("messages", "an array", *msgs);
        if (msgs->empty()) return bad_request("messages must not be empty", "messages");
        json messages = *msgs;
        for (size_t i = 0; i < messages.size(); ++i) {
            const std::string where = "messages[" + str(static_cast<int64_t>(i)) + "]";
            json& m = messages[i];
            if (!m.is_object()) return wrong_type(where, "an object", m);
            const json* role = field(m, "role");
            if (role == nullptr) return bad_request(where + ".role is required", where + ".role");
            if (!role->is_string()) return wrong_type(where + ".role", "a string", *role);
            if (auto e = normalize_content(m, where)) return e;
        }
        if (const json* t = field(req, "tools"); t != nullptr && !t->is_array())
            return wrong_type("tools", "an array", *t);
        if (const json* kw = field(req, "chat_template_kwargs"); kw != nullptr && !kw->is_object())
            return wrong_type("chat_template_kwargs", "an object", *kw);
        std::optional<bool> add_generation_prompt;
        if (auto e = get_bool(req, "add_generation_prompt", &add_generation_prompt)) return e;
        if (!ctx.render_chat)
            return ApiError{.status = 400,
                            .message = ctx.chat_unavailable_reason.empty()
                                           ? "the served model has no chat template (tokenizer_config.json "
                                             "chat_template or chat_template.jinja; or --chat-template): use "
                                             "/v1/completions with a prompt"
                                           : "chat is unavailable: " + ctx.chat_unavailable_reason,
                            .param = "messages",
                            .code = "chat_template_missing"};
        if (ctx.model.tokenizer == nullptr)
            return bad_request("messages: the served model has no tokenizer", "messages");
        // The template sees objects in the client's key order (as Python's dicts keep it: a tool's
        // parameters print in the order sent), so it gets an insertion-ordered copy of the fields
        // checked above, with text parts joined the same way.
        const ordered_json oreq = ordered_json::parse(body);
        ordered_json omessages = oreq["messages"];
        for (size_t i = 0; i < omessages.size(); ++i)
            if (omessages[i].contains("content") && !omessages[i]["content"].is_null())
                omessages[i]["content"] = messages[i]["content"];
        const ordered_json tools =
            oreq.contains("tools") && !oreq["tools"].is_null() ? oreq["tools"] : ordered_json(nullptr);
        const ordered_json extra = oreq.contains("chat_template_kwargs") && !oreq["chat_template_kwargs"].is_null()
                                       ? oreq["chat_template_kwargs"]
                                       : ordered_json::object();
        StatusOr<std::string> rendered = ctx.render_chat(omessages, tools, add_generation_prompt.value_or(true), extra);
        if (!rendered.ok())
            return bad_request("messages: the chat template failed: " + rendered.status().message(), "messages");
        if (rendered->size() > ctx.limits.max_prompt_text_bytes)
            return bad_request("messages: the rendered prompt is " + str(static_cast<int64_t>(rendered->size())) +
                                   " bytes, the limit is " +
                                   str(static_cast<int64_t>(ctx.limits.max_prompt_text_bytes)),
                               "messages");
        // The template writes the special tokens (BOS...) itself: no post-processor on top.
        StatusOr<std::vector<int32_t>> ids = ctx.model.tokenizer->encode(*rendered, /*add_special_tokens=*/false);
        if (!ids.ok()) return bad_request("messages: " + ids.status().message(), "messages");
        if (ids->empty()) return bad_request("messages: the rendered prompt is empty", "messages");
        for (int32_t id : *ids) proto.mutable_token_ids()->add_ids(id);
        // Chat answers run to the end of the context unless told otherwise (as OpenAI and vLLM).
        if (!max_tokens && static_cast<int64_t>(ids->size()) < ctx.model.max_model_len)
            stopping->set_max_tokens(static_cast<int32_t>(ctx.model.max_model_len - static_cast<int64_t>(ids->size())));
    } else {
        if (field(req, "messages") != nullptr)
            return bad_request("messages belongs to /v1/chat/completions; send prompt", "messages");
        const json* p = field(req, "prompt");
        if (p == nullptr) return bad_request("prompt is required", "prompt");
        // A string, an array of token ids, or a batch of one of either.
        const json* one = p;
        if (p->is_array() && !p->empty() && ((*p)[0].is_string() || (*p)[0].is_array())) {
            if (p->size() != 1)
                return bad_request("prompt: a batch of " + str(static_cast<int64_t>(p->size())) +
                                       " prompts; only one prompt per request is supported",
                                   "prompt");
            one = &(*p)[0];
        }
        if (one->is_string()) {
            proto.set_text(one->get<std::string>());
        } else if (one->is_array()) {
            if (one->empty()) return bad_request("prompt: the prompt is empty", "prompt");
            for (size_t i = 0; i < one->size(); ++i) {
                const json& id = (*one)[i];
                if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
                    id.get<int64_t>() > std::numeric_limits<int32_t>::max())
                    return bad_request("prompt[" + str(static_cast<int64_t>(i)) +
                                           "] must be a token id (an integer in [0, " + str(ctx.model.vocab_size) +
                                           "))",
                                       "prompt");
                proto.mutable_token_ids()->add_ids(static_cast<int32_t>(id.get<int64_t>()));
            }
        } else {
            return wrong_type("prompt", "a string or an array of token ids", *one);
        }
    }

    StatusOr<GenerateParams> params = server::build_generate_params(proto, ctx.model, ctx.limits);
    if (!params.ok()) return rename_builder_error(params.status(), endpoint, max_tokens_name, logprobs_name);
    parsed.params = std::move(params).value();
    *out = std::move(parsed);
    return std::nullopt;
}

json finish_reason_json(FinishReason reason) {
    switch (reason) {
        case FinishReason::kStop:
            return "stop";
        case FinishReason::kLength:
            return "length";
        default:
            return nullptr;
    }
}

ResponseBuilder::ResponseBuilder(const ParsedRequest& request, std::string id, std::string model_id, int64_t created,
                                 const Tokenizer* tokenizer)
    : request_(request), id_(std::move(id)), model_id_(std::move(model_id)), created_(created), tokenizer_(tokenizer) {
    // NOTE: the params (prompt ids) are not needed past submission; keep the copy small.
    request_.params = {};
}

std::string ResponseBuilder::token_text(int32_t id) const {
    if (tokenizer_ == nullptr) return "";
    const int32_t one[1] = {id};
    StatusOr<std::string> t = tokenizer_->decode(one, false);
    return t.ok() ? *t : "";
}

json ResponseBuilder::chunk_base() const {
    const bool chat = request_.endpoint == Endpoint::kChatCompletions;
    json c = {{"id", id_},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created_},
              {"model", model_id_}};
    if (request_.include_usage) c["usage"] = nullptr;
    return c;
}

json ResponseBuilder::logprobs_json(const DeltaEvent& delta) {
    const bool chat = request_.endpoint == Endpoint::kChatCompletions;
    if (chat) {
        json content = json::array();
        for (const TokenEvent& t : delta.tokens) {
            const std::string s = token_text(t.token);
            json top = json::array();
            for (const TokenLogprob& alt : t.top) {
                const std::string a = token_text(alt.token);
                top.push_back(
                    {{"token", a}, {"logprob", alt.logprob}, {"bytes", std::vector<uint8_t>(a.begin(), a.end())}});
            }
            content.push_back({{"token", s},
                               {"logprob", t.logprob},
                               {"bytes", std::vector<uint8_t>(s.begin(), s.end())},
                               {"top_logprobs", std::move(top)}});
        }
        return json{{"content", std::move(content)}};
    }
    json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(), offsets = json::array();
    for (const TokenEvent& t : delta.tokens) {
        const std::string s = token_text(t.token);
        tokens.push_back(s);
        token_logprobs.push_back(t.logprob);
        json top_plain = json::object();
        for (const TokenLogprob& alt : t.top) top_plain[token_text(alt.token)] = alt.logprob;
        top_logprobs.push_back(request_.top_logprobs > 0 ? std::move(top_plain) : json());
        offsets.push_back(text_offset_);
        text_offset_ += static_cast<int64_t>(s.size());
    }
    return json{{"tokens", std::move(tokens)},
                {"token_logprobs", std::move(token_logprobs)},
                {"top_logprobs", std::move(top_logprobs)},
                {"text_offset", std::move(offsets)}};
}

void ResponseBuilder::append_logprobs(json& into, const json& more) const {
    if (into.is_null()) {
        into = more;
        return;
    }
    for (auto& [key, value] : more.items())
        for (const json& v : value) into[key].push_back(v);
}

json ResponseBuilder::usage_json(const FinalEvent& f) const {
    return json{{"prompt_tokens", f.prompt_tokens},
                {"completion_tokens", f.completion_tokens},
                {"total_tokens", f.prompt_tokens + f.completion_tokens},
                {"prompt_tokens_details", {{"cached_tokens", f.cached_prompt_tokens}}}};
}

std::string ResponseBuilder::stream_delta(const DeltaEvent& delta) {
    const bool chat = request_.endpoint == Endpoint::kChatCompletions;
    std::string out;
    if (chat && !sent_role_) {
        sent_role_ = true;
        json c = chunk_base();
        c["choices"] = json::array({{{"index", 0},
                                     {"delta", {{"role", "assistant"}, {"content", ""}}},
                                     {"logprobs", nullptr},
                                     {"finish_reason", nullptr}}});
        out += "data: " + dump_json(c) + "\n\n";
    }
    if (delta.text.empty() && !(request_.logprobs && !delta.tokens.empty())) return out;
    json choice = {{"index", 0}, {"finish_reason", nullptr}};
    choice["logprobs"] = request_.logprobs ? logprobs_json(delta) : json();
    if (chat)
        choice["delta"] = {{"content", delta.text}};
    else
        choice["text"] = delta.text;
    json c = chunk_base();
    c["choices"] = json::array({std::move(choice)});
    out += "data: " + dump_json(c) + "\n\n";
    return out;
}

std::optional<ApiError> ResponseBuilder::final_error(const FinalEvent& f) const {
    switch (f.reason) {
        case FinishReason::kStop:
        case FinishReason::kLength:
            return std::nullopt;
        case FinishReason::kCancelled:
            return ApiError{.status = 503,
                            .message = "the request was cancelled (the server is shutting down or an admin aborted it)",
                            .type = "server_error"};
        default:
            return ApiError{
                .status = 500,
                .message = "the request failed: " + (f.error.ok() ? std::string("unknown error") : f.error.to_string()),
                .type = "server_error"};
    }
}

std::string ResponseBuilder::stream_final(const FinalEvent& f) {
    const bool chat = request_.endpoint == Endpoint::kChatCompletions;
    std::string out;
    if (std::optional<ApiError> err = final_error(f)) {
        // Headers (200) are gone already: the error travels as an event, as vLLM sends it.
        out += "data: " + error_body(*err) + "\n\n";
    } else {
        if (chat && !sent_role_) out += stream_delta(DeltaEvent{});
        json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason_json(f.reason)}};
        if (chat)
            choice["delta"] = json::object();
        else
            choice["text"] = "";
        json c = chunk_base();
        c["choices"] = json::array({std::move(choice)});
        out += "data: " + dump_json(c) + "\n\n";
        if (request_.include_usage) {
            json u = chunk_base();
            u["choices"] = json::array();
            u["usage"] = usage_json(f);
            out += "data: " + dump_json(u) + "\n\n";
        }
    }
    out += "data: [DONE]\n\n";
    return out;
}

void ResponseBuilder::add_delta(const DeltaEvent& delta) {
    text_ += delta.text;
    if (request_.logprobs && !delta.tokens.empty()) append_logprobs(logprobs_, logprobs_json(delta));
}

std::string ResponseBuilder::complete_body(const FinalEvent& f) const {
    const bool chat = request_.endpoint == Endpoint::kChatCompletions;
    json logprobs = logprobs_;
    if (request_.logprobs && logprobs.is_null())
        logprobs = chat ? json{{"content", json::array()}} : json{{"tokens", json::array()}};
    json choice = {{"index", 0},
                   {"logprobs", request_.logprobs ? logprobs : json()},
                   {"finish_reason", finish_reason_json(f.reason)}};
    if (chat)
        choice["message"] = {{"role", "assistant"}, {"content", text_}};
    else
        choice["text"] = text_;
    json body = {{"id", id_},
                 {"object", chat ? "chat.completion" : "text_completion"},
                 {"created", created_},
                 {"model", model_id_},
                 {"choices", json::array({std::move(choice)})},
                 {"usage", usage_json(f)}};
    return dump_json(body);
}

}  // namespace moe::http
