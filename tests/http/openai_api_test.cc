// The request and response formats without a server.
#include "http/openai_api.h"

#include <gtest/gtest.h>

namespace moe::http {
namespace {

using nlohmann::json;

ApiContext token_only_context() {
    ApiContext ctx;
    ctx.model_id = "m";
    ctx.model.vocab_size = 100;
    ctx.model.max_model_len = 64;
    return ctx;
}

TEST(JsonPathAt, NamesTheStringHoldingAnOffset) {
    const std::string text = R"({"a": 1, "messages": [{"role": "user", "content": "xyz"}], "stop": ["p", "q"]})";
    EXPECT_EQ(json_path_at(text, text.find("xyz") + 1), "messages[0].content");
    EXPECT_EQ(json_path_at(text, text.find("user")), "messages[0].role");
    EXPECT_EQ(json_path_at(text, text.find("\"q\"") + 1), "stop[1]");
    EXPECT_EQ(json_path_at(text, text.find("stop") + 1), "(a key)");
    EXPECT_EQ(json_path_at(R"({"k\"e": "v"})", 10), "k\\\"e");
    EXPECT_EQ(json_path_at(text, 0), "");
}

TEST(ParseRequest, TokenPromptAndFields) {
    ApiContext ctx = token_only_context();
    ParsedRequest p;
    auto err = parse_request(
        R"({"model": "m", "prompt": [1, 2, 3], "max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "seed": -7,
            "stop_token_ids": [4], "presence_penalty": 1, "frequency_penalty": -1, "logprobs": 2,
            "stream": true, "stream_options": {"include_usage": true}, "n": 1, "user": "x"})",
        Endpoint::kCompletions, ctx, &p);
    ASSERT_FALSE(err) << err->message;
    EXPECT_EQ(p.params.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
    EXPECT_EQ(p.params.stopping.max_tokens, 5);
    EXPECT_FLOAT_EQ(p.params.sampling.temperature, 0.5f);
    EXPECT_FLOAT_EQ(p.params.sampling.top_p, 0.9f);
    EXPECT_FLOAT_EQ(p.params.sampling.presence_penalty, 1.0f);
    EXPECT_FLOAT_EQ(p.params.sampling.frequency_penalty, -1.0f);
    EXPECT_EQ(p.params.sampling.logprobs, 2);
    EXPECT_TRUE(p.stream);
    EXPECT_TRUE(p.include_usage);
    EXPECT_TRUE(p.logprobs);
    EXPECT_EQ(p.params.stopping.stop_token_ids, (std::vector<int32_t>{4}));
}

TEST(ParseRequest, ErrorsNameTheOpenAiField) {
    ApiContext ctx = token_only_context();
    struct Case {
        const char* body;
        int status;
        const char* param;
    };
    const Case cases[] = {
        {R"({"prompt": [1], "max_tokens": 64})", 400, "max_tokens"},  // prompt + 64 > 64
        {R"({"prompt": [1], "max_completion_tokens": 0})", 400, "max_completion_tokens"},
        {R"({"prompt": [100]})", 400, "prompt"},  // outside the vocabulary
        {R"({"prompt": [1], "temperature": -1})", 400, "temperature"},
        {R"({"prompt": [1], "stop": "x"})", 400, "stop"},  // no tokenizer
        {R"({"prompt": "text"})", 400, "prompt"},          // no tokenizer
        {R"({"prompt": [1], "best_of": 3})", 400, "best_of"},
        {R"({"prompt": [1], "echo": true})", 400, "echo"},
        {R"({"prompt": [1], "logit_bias": {"1": 5}})", 400, "logit_bias"},
        {R"({"prompt": [1], "messages": []})", 400, "messages"},
        {R"({"model": 5, "prompt": [1]})", 400, "model"},
        {R"({"model": "x", "prompt": [1]})", 404, "model"},
    };
    for (const Case& c : cases) {
        ParsedRequest p;
        auto err = parse_request(c.body, Endpoint::kCompletions, ctx, &p);
        ASSERT_TRUE(err) << c.body;
        EXPECT_EQ(err->status, c.status) << c.body << ": " << err->message;
        EXPECT_EQ(err->param, c.param) << c.body << ": " << err->message;
        EXPECT_NE(err->message.find(c.param), std::string::npos) << err->message;
    }
}

TEST(ParseRequest, ChatChecksMessages) {
    ApiContext ctx = token_only_context();
    ParsedRequest p;
    auto err =
        parse_request(R"({"messages": [{"role": "user", "content": "x"}]})", Endpoint::kChatCompletions, ctx, &p);
    ASSERT_TRUE(err);
    EXPECT_EQ(err->code, "chat_template_missing");
    ctx.render_chat = [](const nlohmann::ordered_json&, const nlohmann::ordered_json&, bool,
                         const nlohmann::ordered_json&) -> StatusOr<std::string> { return std::string("x"); };
    const std::pair<const char*, const char*> cases[] = {
        {R"({"messages": []})", "messages"},
        {R"({"messages": "hi"})", "messages"},
        {R"({"messages": [{"content": "x"}]})", "messages[0].role"},
        {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", "messages[0].content[0].type"},
        {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
        {R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", "top_logprobs"},
        {R"({"messages": [{"role": "user", "content": "x"}], "tools": {}})", "tools"},
    };
    for (const auto& [body, param] : cases) {
        auto e = parse_request(body, Endpoint::kChatCompletions, ctx, &p);
        ASSERT_TRUE(e) << body;
        EXPECT_EQ(e->status, 400);
        EXPECT_EQ(e->param, param) << body << ": " << e->message;
    }
}

TEST(ResponseBuilder, StreamEndsWithFinishUsageAndDone) {
    ParsedRequest req;
    req.endpoint = Endpoint::kChatCompletions;
    req.stream = true;
    req.include_usage = true;
    ResponseBuilder b(req, "chatcmpl-1", "m", 7, nullptr);
    DeltaEvent d;
    d.text = "hi";
    d.tokens.push_back({.token = 3, .logprob = -0.5f});
    std::string out = b.stream_delta(d);
    // The role chunk, then the content chunk.
    EXPECT_EQ(out.find("data: {"), 0u);
    EXPECT_NE(out.find("\"role\":\"assistant\""), std::string::npos);
    EXPECT_NE(out.find("\"content\":\"hi\""), std::string::npos);
    FinalEvent f;
    f.reason = FinishReason::kStop;
    f.prompt_tokens = 4;
    f.completion_tokens = 1;
    out = b.stream_final(f);
    EXPECT_NE(out.find("\"finish_reason\":\"stop\""), std::string::npos);
    EXPECT_NE(out.find("\"total_tokens\":5"), std::string::npos);
    EXPECT_EQ(out.substr(out.size() - 14), "data: [DONE]\n\n");

    FinalEvent failed;
    failed.reason = FinishReason::kError;
    failed.error = internal_error("boom");
    ResponseBuilder b2(req, "chatcmpl-2", "m", 7, nullptr);
    out = b2.stream_final(failed);
    EXPECT_NE(out.find("\"error\""), std::string::npos);
    EXPECT_NE(out.find("boom"), std::string::npos);
    EXPECT_EQ(b2.final_error(failed)->status, 500);
}

TEST(ErrorBody, HasOpenAiShape) {
    const json e = json::parse(error_body(bad_request("bad", "temperature")));
    EXPECT_EQ(e["error"]["message"], "bad");
    EXPECT_EQ(e["error"]["type"], "invalid_request_error");
    EXPECT_EQ(e["error"]["param"], "temperature");
    EXPECT_TRUE(e["error"]["code"].is_null());
    EXPECT_EQ(from_status(resource_exhausted("full")).status, 429);
    EXPECT_EQ(from_status(unavailable("draining")).status, 503);
    EXPECT_EQ(from_status(not_found("x")).status, 404);
}

}  // namespace
}  // namespace moe::http
