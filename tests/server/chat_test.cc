// GenerateRequest.chat over gRPC: messages rendered with the model's chat template at request
// build time, then tokenized without special tokens; every way it can be refused says why.
#include <gtest/gtest.h>

#include "server_harness.h"

namespace moe::server::testing {
namespace {

constexpr const char* kTemplate =
    "{{ bos_token }}{% for m in messages %}"
    "{% if m.role == 'boom' %}{{ raise_exception('role boom is not allowed') }}{% endif %}"
    "<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if tools %}tools={{ tools | map(attribute='name') | join(',') }}\n{% endif %}"
    "{% if enable_thinking is defined %}thinking={{ enable_thinking }}\n{% endif %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}";

ServerOptions with_template() {
    ServerOptions so;
    auto t = tmpl::ChatTemplate::from_string(kTemplate, "<s>", "</s>");
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    so.chat_template = std::make_shared<const tmpl::ChatTemplate>(std::move(t).value());
    return so;
}

v1::GenerateRequest chat_request(const std::string& messages) {
    v1::GenerateRequest req;
    req.mutable_chat()->set_messages(messages);
    req.mutable_sampling()->set_temperature(0.0f);
    req.mutable_stopping()->set_max_tokens(4);
    req.mutable_stopping()->set_ignore_eos(true);
    return req;
}

const char* kMessages = R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}])";

TEST(ServerChat, RendersWithTheTemplateThenTokenizesWithoutSpecialTokens) {
    auto h = Harness::start("", {}, with_template());
    ASSERT_TRUE(h);
    const StreamResult chat = collect(*h->inference, chat_request(kMessages));
    ASSERT_TRUE(chat.status.ok()) << chat.status.error_message();
    ASSERT_TRUE(chat.final_msg.has_value());

    // The same prompt, rendered by hand and sent as token ids: the same prompt length and, greedy,
    // the same generated tokens.
    const std::string rendered = "<s><|system|>Be brief.\n<|user|>Hi there\n<|assistant|>";
    auto ids = h->engine->tokenizer()->encode(rendered, /*add_special_tokens=*/false);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(chat.final_msg->usage().prompt_tokens(), static_cast<int64_t>(ids->size()));
    v1::GenerateRequest by_ids = chat_request("");
    by_ids.mutable_token_ids()->mutable_ids()->Assign(ids->begin(), ids->end());
    const StreamResult direct = collect(*h->inference, by_ids);
    ASSERT_TRUE(direct.status.ok()) << direct.status.error_message();
    EXPECT_EQ(chat.ids, direct.ids);
    EXPECT_EQ(chat.ids.size(), 4u);

    // add_generation_prompt=false, tools and kwargs change the rendered prompt (and so its length).
    v1::GenerateRequest req = chat_request(kMessages);
    req.mutable_chat()->set_add_generation_prompt(false);
    req.mutable_chat()->set_tools(R"([{"name": "get_weather"}, {"name": "search"}])");
    req.mutable_chat()->set_template_kwargs(R"({"enable_thinking": false})");
    const StreamResult varied = collect(*h->inference, req);
    ASSERT_TRUE(varied.status.ok()) << varied.status.error_message();
    auto varied_ids = h->engine->tokenizer()->encode(
        "<s><|system|>Be brief.\n<|user|>Hi there\ntools=get_weather,search\nthinking=False\n", false);
    ASSERT_TRUE(varied_ids.ok());
    EXPECT_EQ(varied.final_msg->usage().prompt_tokens(), static_cast<int64_t>(varied_ids->size()));
}

void expect_invalid(Harness& h, const v1::GenerateRequest& req, const std::string& needle) {
    const StreamResult r = collect(*h.inference, req);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << r.status.error_message();
    EXPECT_NE(r.status.error_message().find(needle), std::string::npos)
        << "[" << r.status.error_message() << "] lacks [" << needle << "]";
}

TEST(ServerChat, BadChatInputIsRefusedNamingTheField) {
    auto h = Harness::start("", {}, with_template());
    ASSERT_TRUE(h);
    expect_invalid(*h, chat_request(""), "chat.messages: empty");
    expect_invalid(*h, chat_request("{not json"), "chat.messages: not valid JSON");
    expect_invalid(*h, chat_request(R"({"role": "user"})"), "chat.messages must be a JSON array");
    expect_invalid(*h, chat_request(R"(["just a string"])"), "chat.messages[0] must be a JSON object");
    expect_invalid(*h, chat_request(std::string("[{\"content\": \"\xff\"}]")), "chat.messages: invalid UTF-8");
    std::string deep(100, '[');
    expect_invalid(*h, chat_request(deep + std::string(100, ']')), "nested deeper");
    v1::GenerateRequest req = chat_request(kMessages);
    req.mutable_chat()->set_tools(R"({"name": "x"})");
    expect_invalid(*h, req, "chat.tools must be a JSON array");
    req = chat_request(kMessages);
    req.mutable_chat()->set_template_kwargs("[1]");
    expect_invalid(*h, req, "chat.template_kwargs must be a JSON object");
    // The template's own raise_exception reaches the client verbatim.
    expect_invalid(*h, chat_request(R"([{"role": "boom", "content": "x"}])"), "role boom is not allowed");
    // The server keeps serving after all of that.
    EXPECT_TRUE(collect(*h->inference, chat_request(kMessages)).status.ok());
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10)));
}

TEST(ServerChat, ModelWithoutTemplate) {
    auto h = Harness::start("");
    ASSERT_TRUE(h);
    expect_invalid(*h, chat_request(kMessages), "has no chat template");

    ServerOptions so;
    so.chat_template_error = "tokenizer_config.json: chat template uses the filter 'xmlattr' at line 3";
    auto h2 = Harness::start("", {}, so);
    ASSERT_TRUE(h2);
    expect_invalid(*h2, chat_request(kMessages),
                   "could not be loaded: tokenizer_config.json: chat template uses the filter 'xmlattr'");
}

TEST(ServerChat, RenderedPromptOverTheLimit) {
    EngineOptions eo;
    eo.limits.max_prompt_text_bytes = 64;
    ServerOptions so;
    auto t = tmpl::ChatTemplate::from_string("{{ messages[0].content * 10 }}", "", "");
    ASSERT_TRUE(t.ok());
    so.chat_template = std::make_shared<const tmpl::ChatTemplate>(std::move(t).value());
    auto h = Harness::start("", eo, so);
    ASSERT_TRUE(h);
    expect_invalid(*h, chat_request(R"([{"role": "user", "content": ")" + std::string(100, 'a') + "\"}]"),
                   "chat.messages is");
    // Small messages whose rendering grows past the limit are refused by the render limit.
    expect_invalid(*h, chat_request(R"([{"content": "0123456789"}])"), "exceeds the limit of 64 bytes");
    EXPECT_TRUE(collect(*h->inference, chat_request(R"([{"content": "ab"}])")).status.ok());
}

}  // namespace
}  // namespace moe::server::testing
