// The HTTP API end to end: an in-process engine on the demo model, the server on an ephemeral
// port, a real HTTP client.
#include <gtest/gtest.h>

#include "http/http_test_util.h"
#include "template/chat_template.h"

namespace moe::http::testing {
namespace {

json completion(int max_tokens, bool stream = false) {
    return json{{"model", "demo"},    {"prompt", "Hello there"}, {"max_tokens", max_tokens},
                {"ignore_eos", true}, {"temperature", 0},        {"stream", stream}};
}

TEST(HttpServer, HealthReadyModelsAndMetrics) {
    auto h = HttpHarness::start();
    ASSERT_TRUE(h);
    Client c(h->port());
    Reply r = c.get("/health");
    EXPECT_EQ(r.status, 200);
    r = c.get("/ready");
    EXPECT_EQ(r.status, 200) << r.body;
    r = c.get("/v1/models");
    ASSERT_EQ(r.status, 200);
    const json models = r.parsed();
    ASSERT_EQ(models["data"].size(), 1u);
    EXPECT_EQ(models["data"][0]["id"], "demo");
    EXPECT_EQ(models["data"][0]["max_model_len"], h->engine->max_model_len());
    EXPECT_EQ(c.get("/v1/models/demo").status, 200);
    EXPECT_EQ(c.get("/v1/models/other").status, 404);
    r = c.get("/metrics");
    EXPECT_EQ(r.status, 200);
    EXPECT_NE(r.content_type.find("text/plain"), std::string::npos);
    // The engine's registry, and this server's own counter (the requests above).
    EXPECT_NE(r.body.find("# TYPE vllm:num_requests_running gauge"), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("moe:kv_blocks_total{"), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("moe:http_requests_total{endpoint=\"/health\",code=\"200\"} 1"), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("moe:http_requests_total{endpoint=\"/v1/models/{id}\",code=\"404\"} 1"), std::string::npos)
        << r.body;
    EXPECT_EQ(c.get("/nope").status, 404);
    EXPECT_EQ(c.request(bhttp::verb::delete_, "/health").status, 405);
}

TEST(HttpServer, CompletionNonStreamingAndStreamingAgree) {
    auto h = HttpHarness::start();
    ASSERT_TRUE(h);
    Client c(h->port());
    Reply r = c.post("/v1/completions", completion(7));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_TRUE(r.keep_alive);
    const json body = r.parsed();
    EXPECT_EQ(body["object"], "text_completion");
    EXPECT_EQ(body["model"], "demo");
    EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(body["usage"]["completion_tokens"], 7);
    EXPECT_GT(body["usage"]["prompt_tokens"].get<int>(), 0);
    EXPECT_EQ(body["usage"]["total_tokens"],
              body["usage"]["prompt_tokens"].get<int>() + body["usage"]["completion_tokens"].get<int>());

    // Same connection (keep-alive), streamed with usage: the same greedy text, in chunks.
    json req = completion(7, true);
    req["stream_options"] = {{"include_usage", true}};
    r = c.post("/v1/completions", req);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.content_type, "text/event-stream");
    bool done = false;
    std::vector<json> events = sse_events(r.body, &done);
    EXPECT_TRUE(done);
    ASSERT_GE(events.size(), 2u);
    std::string text;
    for (size_t i = 0; i + 2 < events.size(); ++i) {
        EXPECT_TRUE(events[i]["choices"][0]["finish_reason"].is_null());
        EXPECT_TRUE(events[i]["usage"].is_null());
        text += events[i]["choices"][0]["text"].get<std::string>();
    }
    const json& finish = events[events.size() - 2];
    EXPECT_EQ(finish["choices"][0]["finish_reason"], "length");
    const json& usage = events.back();
    EXPECT_TRUE(usage["choices"].empty());
    EXPECT_EQ(usage["usage"]["completion_tokens"], 7);
    EXPECT_EQ(text, body["choices"][0]["text"].get<std::string>());
}

TEST(HttpServer, LogprobsAndSeedAndStop) {
    auto h = HttpHarness::start();
    ASSERT_TRUE(h);
    Client c(h->port());
    json req = completion(5);
    req["logprobs"] = 3;
    req["temperature"] = 0.8;
    req["seed"] = 1234;
    Reply a = c.post("/v1/completions", req);
    Reply b = c.post("/v1/completions", req);
    ASSERT_EQ(a.status, 200) << a.body;
    const json lp = a.parsed()["choices"][0]["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), 5u);
    ASSERT_EQ(lp["token_logprobs"].size(), 5u);
    ASSERT_EQ(lp["top_logprobs"].size(), 5u);
    for (const json& top : lp["top_logprobs"]) EXPECT_LE(top.size(), 3u);  // distinct texts may merge
    for (const json& v : lp["token_logprobs"]) EXPECT_LE(v.get<double>(), 0.0);
    // The same seed gives the same sample.
    EXPECT_EQ(a.parsed()["choices"][0]["text"], b.parsed()["choices"][0]["text"]);

    // A stop string taken from the greedy output ends it early with finish_reason "stop".
    const std::string full = c.post("/v1/completions", completion(12)).parsed()["choices"][0]["text"];
    ASSERT_GE(full.size(), 4u);
    // Split at a character boundary so the stop string is valid UTF-8.
    size_t cut = full.size() / 2;
    while (cut < full.size() && (static_cast<unsigned char>(full[cut]) & 0xC0) == 0x80) ++cut;
    size_t cut_end = cut + 1;
    while (cut_end < full.size() && (static_cast<unsigned char>(full[cut_end]) & 0xC0) == 0x80) ++cut_end;
    json stop_req = completion(12);
    stop_req["stop"] = json::array({full.substr(cut, cut_end - cut)});
    const json stopped = c.post("/v1/completions", stop_req).parsed();
    EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop") << stopped.dump();
    EXPECT_LT(stopped["choices"][0]["text"].get<std::string>().size(), full.size());
}

TEST(HttpServer, ChatUsesTheRendererAndWithoutOneIs400) {
    {
        auto h = HttpHarness::start();
        ASSERT_TRUE(h);
        Client c(h->port());
        Reply r = c.post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
        EXPECT_EQ(r.status, 400);
        EXPECT_EQ(r.parsed()["error"]["code"], "chat_template_missing");
    }
    HttpOptions ho;
    json seen;
    ho.render_chat = [&seen](const nlohmann::ordered_json& messages, const nlohmann::ordered_json&,
                             bool add_generation_prompt, const nlohmann::ordered_json&) -> StatusOr<std::string> {
        seen = messages;
        std::string out;
        for (const json& m : messages)
            out += "<" + m["role"].get<std::string>() + ">" + m["content"].get<std::string>();
        if (add_generation_prompt) out += "<assistant>";
        return out;
    };
    auto h = HttpHarness::start({}, ho);
    ASSERT_TRUE(h);
    Client c(h->port());
    json req = {
        {"messages",
         {{{"role", "system"}, {"content", "be brief"}},
          {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hel"}}, {{"type", "text"}, {"text", "lo"}}}}}}},
        {"max_completion_tokens", 4},
        {"ignore_eos", true},
        {"logprobs", true},
        {"top_logprobs", 2}};
    Reply r = c.post("/v1/chat/completions", req);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(seen[1]["content"], "hello");  // text parts joined before rendering
    const json body = r.parsed();
    EXPECT_EQ(body["object"], "chat.completion");
    EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
    EXPECT_EQ(body["usage"]["completion_tokens"], 4);
    const auto ids = h->engine->tokenizer()->encode("<system>be brief<user>hello<assistant>", false);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(body["usage"]["prompt_tokens"], static_cast<int64_t>(ids->size()));
    ASSERT_EQ(body["choices"][0]["logprobs"]["content"].size(), 4u);
    EXPECT_LE(body["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), 2u);

    req["stream"] = true;
    r = c.post("/v1/chat/completions", req);
    ASSERT_EQ(r.status, 200);
    bool done = false;
    std::vector<json> events = sse_events(r.body, &done);
    EXPECT_TRUE(done);
    ASSERT_GE(events.size(), 2u);
    EXPECT_EQ(events.front()["object"], "chat.completion.chunk");
    EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
    EXPECT_EQ(events.back()["choices"][0]["finish_reason"], "length");
}

TEST(HttpServer, ChatWithARealTemplateRendersMessagesAndTools) {
    auto tpl = tmpl::ChatTemplate::load(std::string(MOE_TEST_DATA_DIR) + "/chat-templates/qwen3");
    ASSERT_TRUE(tpl.ok()) << tpl.status().to_string();
    auto shared = std::make_shared<const tmpl::ChatTemplate>(std::move(tpl).value());
    HttpOptions ho;
    ho.render_chat = [shared](const nlohmann::ordered_json& m, const nlohmann::ordered_json& t, bool g,
                              const nlohmann::ordered_json& x) { return shared->render(m, t, g, x); };
    auto h = HttpHarness::start({}, ho);
    ASSERT_TRUE(h);
    Client c(h->port());
    const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(
        R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}])");
    const nlohmann::ordered_json tools = nlohmann::ordered_json::parse(
        R"([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])");
    for (bool with_tools : {false, true}) {
        nlohmann::ordered_json req = {{"messages", messages}, {"max_tokens", 2}, {"ignore_eos", true}};
        if (with_tools) req["tools"] = tools;
        Reply r = c.request(bhttp::verb::post, "/v1/chat/completions", req.dump());
        ASSERT_EQ(r.status, 200) << r.body;
        const auto rendered = shared->render(messages, with_tools ? tools : nlohmann::ordered_json(), true);
        ASSERT_TRUE(rendered.ok());
        if (with_tools) EXPECT_NE(rendered->find("get_weather"), std::string::npos);
        const auto ids = h->engine->tokenizer()->encode(*rendered, false);
        ASSERT_TRUE(ids.ok());
        EXPECT_EQ(r.parsed()["usage"]["prompt_tokens"], static_cast<int64_t>(ids->size())) << "tools=" << with_tools;
    }
}

TEST(HttpServer, ATemplateThatRaisesIs400AndTheServerGoesOn) {
    auto tpl = tmpl::ChatTemplate::from_string(
        "{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start with a user') }}{% endif %}"
        "{{ messages[0].content }}",
        "", "");
    ASSERT_TRUE(tpl.ok()) << tpl.status().to_string();
    auto shared = std::make_shared<const tmpl::ChatTemplate>(std::move(tpl).value());
    HttpOptions ho;
    ho.render_chat = [shared](const nlohmann::ordered_json& m, const nlohmann::ordered_json& t, bool g,
                              const nlohmann::ordered_json& x) { return shared->render(m, t, g, x); };
    auto h = HttpHarness::start({}, ho);
    ASSERT_TRUE(h);
    Client c(h->port());
    Reply r = c.post("/v1/chat/completions", {{"messages", {{{"role", "system"}, {"content", "x"}}}}});
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_NE(r.parsed()["error"]["message"].get<std::string>().find("Conversations must start with a user"),
              std::string::npos)
        << r.body;
    EXPECT_EQ(r.parsed()["error"]["param"], "messages");
    r = c.post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"max_tokens", 1}});
    EXPECT_EQ(r.status, 200) << r.body;
}

TEST(HttpServer, BadRequestsGet4xxAndTheServerKeepsServing) {
    HttpOptions ho;
    ho.max_body_bytes = 4096;
    auto h = HttpHarness::start({}, ho);
    ASSERT_TRUE(h);
    struct Case {
        std::string body;
        int status;
        std::string param;
    };
    const std::vector<Case> cases = {
        {R"({"prompt": "hi", "max_tokens": "ten"})", 400, "max_tokens"},
        {R"({"prompt": "hi", "max_tokens": -1})", 400, "max_tokens"},
        {R"({"prompt": "hi", "max_tokens": 100000000})", 400, "max_tokens"},
        {R"({"prompt": "hi", "n": 2})", 400, "n"},
        {R"({"prompt": "hi", "top_p": 0})", 400, "top_p"},
        {R"({"prompt": "hi", "presence_penalty": 9})", 400, "presence_penalty"},
        {R"({"prompt": "hi", "stop": [1]})", 400, "stop[0]"},
        {R"({"prompt": "hi", "logprobs": 99})", 400, "logprobs"},
        {R"({"prompt": "hi", "stream": "yes"})", 400, "stream"},
        {R"({"prompt": ["a", "b"]})", 400, "prompt"},
        {R"({"prompt": [1, -2]})", 400, "prompt"},
        {R"({"prompt": ""})", 400, "prompt"},
        {R"({"model": "gpt-4", "prompt": "hi"})", 404, "model"},
        {R"({"max_tokens": 3})", 400, "prompt"},
        {R"([1, 2])", 400, ""},
        {R"({"prompt": )", 400, ""},
        {"{\"prompt\": \"caf\xc3\"}", 400, "prompt"},
        {"{\"prompt\": \"ok\", \"stop\": [\"a\", \"\xed\xa0\x80\"]}", 400, "stop[1]"},
        {std::string(40, '[') + std::string(40, ']'), 400, ""},
    };
    Client c(h->port());
    for (const Case& k : cases) {
        Reply r = c.request(bhttp::verb::post, "/v1/completions", k.body);
        EXPECT_EQ(r.status, k.status) << k.body << " -> " << r.body;
        const json e = r.parsed();
        ASSERT_TRUE(e.contains("error")) << r.body;
        EXPECT_FALSE(e["error"]["message"].get<std::string>().empty());
        if (k.param.empty())
            EXPECT_TRUE(e["error"]["param"].is_null()) << r.body;
        else
            EXPECT_EQ(e["error"]["param"], k.param) << r.body;
        EXPECT_TRUE(r.keep_alive) << "a 4xx keeps the connection: " << k.body;
    }
    // Oversized body: 413 (and the connection closes, the rest of the body unread).
    {
        Client big(h->port());
        Reply r = big.post("/v1/completions", {{"prompt", std::string(8000, 'x')}});
        EXPECT_EQ(r.status, 413) << r.body;
        EXPECT_EQ(r.parsed()["error"]["code"], "request_too_large");
    }
    // Not HTTP at all: 400.
    {
        Client junk(h->port());
        asio::write(junk.socket(), asio::buffer(std::string("HELLO\r\n\r\n")));
        beast::flat_buffer buf;
        bhttp::response<bhttp::string_body> res;
        beast::error_code ec;
        bhttp::read(junk.socket(), buf, res, ec);
        EXPECT_FALSE(ec) << ec.message();
        EXPECT_EQ(res.result_int(), 400u);
    }
    // Still serving, on the old connection and a new one.
    EXPECT_EQ(c.post("/v1/completions", completion(2)).status, 200);
    Client fresh(h->port());
    EXPECT_EQ(fresh.post("/v1/completions", completion(2)).status, 200);
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10)));
}

// Reads raw bytes until `needle` shows up (or the peer closes).
bool read_until(tcp::socket& s, const std::string& needle, std::string* got) {
    char buf[4096];
    while (got->find(needle) == std::string::npos) {
        beast::error_code ec;
        const size_t n = s.read_some(asio::buffer(buf), ec);
        if (ec) return false;
        got->append(buf, n);
    }
    return true;
}

TEST(HttpServer, ClientDisconnectMidStreamCancelsAndFreesKv) {
    auto h = HttpHarness::start();
    ASSERT_TRUE(h);
    for (bool stream : {true, false}) {
        {
            Client c(h->port());
            const std::string body = completion(3000, stream).dump();
            const std::string req =
                "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body;
            asio::write(c.socket(), asio::buffer(req));
            if (stream) {
                std::string got;
                ASSERT_TRUE(read_until(c.socket(), "data: ", &got));
            } else {
                // Wait until the engine runs it.
                const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
                while (h->engine->load().running == 0 && std::chrono::steady_clock::now() < until)
                    std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
            EXPECT_EQ(h->engine->load().pending, 1);
            EXPECT_LT(h->engine->load().kv_blocks_free, h->engine->load().kv_blocks_total);
        }  // the client goes away
        EngineLoad l;
        EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10), &l))
            << "stream=" << stream << ": pending " << l.pending << ", free " << l.kv_blocks_free << "/"
            << l.kv_blocks_total;
        EXPECT_LT(l.generated_tokens, 3000 * (stream ? 1 : 2)) << "cancelled long before max_tokens";
        EXPECT_EQ(h->server->active_requests(), 0);
    }
}

TEST(HttpServer, QueueFullIs429AndDrainIs503) {
    EngineOptions eo;
    eo.max_pending = 1;
    auto h = HttpHarness::start(eo);
    ASSERT_TRUE(h);
    Client slow(h->port());
    const std::string body = completion(3000, true).dump();
    const std::string req =
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
        body;
    asio::write(slow.socket(), asio::buffer(req));
    std::string got;
    ASSERT_TRUE(read_until(slow.socket(), "data: ", &got));
    Client c(h->port());
    Reply r = c.post("/v1/completions", completion(2));
    EXPECT_EQ(r.status, 429) << r.body;
    EXPECT_EQ(r.parsed()["error"]["type"], "rate_limit_error");

    h->server->drain();
    // A draining server closes each connection after its response (Connection: close).
    Reply ready = c.get("/ready");
    EXPECT_EQ(ready.status, 503);
    EXPECT_FALSE(ready.keep_alive);
    EXPECT_EQ(Client(h->port()).get("/health").status, 200);  // alive, not ready
    Client c2(h->port());
    r = c2.post("/v1/completions", completion(2));
    EXPECT_EQ(r.status, 503) << r.body;
    slow.socket().close();
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10)));
}

TEST(HttpServer, EngineDrainTurnsReadinessOff) {
    auto h = HttpHarness::start();
    ASSERT_TRUE(h);
    Client c(h->port());
    EXPECT_EQ(c.get("/ready").status, 200);
    h->engine->drain();  // what gRPC Control.Drain and SIGTERM do
    EXPECT_EQ(c.get("/ready").status, 503);
    EXPECT_EQ(c.post("/v1/completions", completion(2)).status, 503);
}

TEST(HttpServer, ShutdownCancelsRequestsInFlight) {
    auto h = HttpHarness::start();
    ASSERT_TRUE(h);
    Client c(h->port());
    const std::string body = completion(3000, true).dump();
    const std::string req =
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
        body;
    asio::write(c.socket(), asio::buffer(req));
    std::string got;
    ASSERT_TRUE(read_until(c.socket(), "data: ", &got));
    const auto t0 = std::chrono::steady_clock::now();
    h->server->shutdown(std::chrono::milliseconds(100));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(8));
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10)));
    // The stream ended with an error event and [DONE] (the request was cancelled), or the
    // connection closed.
    read_until(c.socket(), "[DONE]", &got);
    if (got.find("[DONE]") != std::string::npos) EXPECT_NE(got.find("\"error\""), std::string::npos) << got;
}

}  // namespace
}  // namespace moe::http::testing

namespace moe::http::testing {
namespace {

TEST(HttpServer, AFailedEngineIsNotReadyAndRefusesWith503) {
    auto healthy = std::make_shared<std::atomic<bool>>(true);
    HttpOptions ho;
    ho.engine_healthy = [healthy] { return healthy->load(); };
    auto h = HttpHarness::start({}, ho);
    ASSERT_TRUE(h);
    Client c(h->port());
    EXPECT_EQ(c.get("/ready").status, 200);
    healthy->store(false);
    Reply r = c.get("/ready");
    EXPECT_EQ(r.status, 503);
    EXPECT_NE(r.body.find("engine failed"), std::string::npos) << r.body;
    EXPECT_EQ(c.get("/health").status, 200);
    r = c.post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "x"}}}}});
    EXPECT_EQ(r.status, 503) << r.body;
    EXPECT_EQ(r.parsed()["error"]["type"], "server_error");
}

}  // namespace
}  // namespace moe::http::testing
