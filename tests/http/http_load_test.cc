// 500 concurrent streaming requests on loopback: every one completes with every token and
// [DONE], none is lost, and the engine ends idle.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <set>

#include "http/http_test_util.h"

namespace moe::http::testing {
namespace {

constexpr int kStreams = 500;
constexpr int kTokens = 8;

// One streaming request on its own connection, read with Beast's async parser (chunked decoding).
struct StreamCall : std::enable_shared_from_this<StreamCall> {
    StreamCall(asio::io_context& ioc, tcp::endpoint ep, std::string body)
        : socket(ioc), endpoint(ep), request(bhttp::verb::post, "/v1/completions", 11) {
        request.set(bhttp::field::host, "127.0.0.1");
        request.set(bhttp::field::content_type, "application/json");
        request.body() = std::move(body);
        request.prepare_payload();
        parser.body_limit(1 << 20);
    }
    void start() {
        socket.async_connect(endpoint, [self = shared_from_this()](beast::error_code ec) {
            if (ec) return self->fail("connect: " + ec.message());
            bhttp::async_write(self->socket, self->request, [self](beast::error_code ec, size_t) {
                if (ec) return self->fail("write: " + ec.message());
                bhttp::async_read(self->socket, self->buffer, self->parser, [self](beast::error_code ec, size_t) {
                    if (ec) return self->fail("read: " + ec.message());
                    self->status = static_cast<int>(self->parser.get().result_int());
                    self->body = self->parser.get().body();
                    self->finished = true;
                });
            });
        });
    }
    void fail(const std::string& why) {
        error = why;
        finished = true;
    }
    tcp::socket socket;
    tcp::endpoint endpoint;
    bhttp::request<bhttp::string_body> request;
    bhttp::response_parser<bhttp::string_body> parser;
    beast::flat_buffer buffer;
    bool finished = false;
    int status = 0;
    std::string body;
    std::string error;
};

TEST(HttpLoad, FiveHundredConcurrentStreamsCompleteWithNothingLost) {
    // Both ends of 500 connections live in this process: raise the soft descriptor limit (often
    // 1024) towards the hard one.
    rlimit nofile{};
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &nofile), 0);
    const rlim_t want = 4 * kStreams + 256;
    if (nofile.rlim_cur < want) {
        nofile.rlim_cur = std::min<rlim_t>(want, nofile.rlim_max);
        ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &nofile), 0);
    }
    ASSERT_GE(nofile.rlim_cur, static_cast<rlim_t>(2 * kStreams + 64))
        << "the hard descriptor limit is too low for " << kStreams << " connections (both ends)";
    EngineOptions eo;
    eo.kv_cache_bytes = 256 << 20;
    auto h = HttpHarness::start(eo);
    ASSERT_TRUE(h);
    asio::io_context ioc;
    const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(h->port()));
    std::vector<std::shared_ptr<StreamCall>> calls;
    for (int i = 0; i < kStreams; ++i) {
        const json req = {{"prompt", "request " + std::to_string(i)},
                          {"max_tokens", kTokens},
                          {"ignore_eos", true},
                          {"stream", true},
                          {"stream_options", {{"include_usage", true}}}};
        calls.push_back(std::make_shared<StreamCall>(ioc, ep, req.dump()));
        calls.back()->start();
    }
    const auto t0 = std::chrono::steady_clock::now();
    // Bounded: a lost stream must fail the test, not hang it.
    ioc.run_for(std::chrono::seconds(240));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int complete = 0;
    std::set<std::string> ids;
    for (const auto& c : calls) {
        ASSERT_TRUE(c->finished) << "a stream did not finish";
        ASSERT_TRUE(c->error.empty()) << c->error;
        ASSERT_EQ(c->status, 200) << c->body;
        bool done = false;
        std::vector<json> events = sse_events(c->body, &done);
        ASSERT_TRUE(done) << c->body;
        ASSERT_FALSE(events.empty());
        const json& usage = events.back()["usage"];
        ASSERT_TRUE(usage.is_object()) << c->body;
        EXPECT_EQ(usage["completion_tokens"], kTokens);
        EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
        ids.insert(events.front()["id"].get<std::string>());
        ++complete;
    }
    EXPECT_EQ(complete, kStreams);
    EXPECT_EQ(ids.size(), static_cast<size_t>(kStreams)) << "every stream carries its own request";
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10)));
    EXPECT_EQ(h->engine->load().generated_tokens, int64_t{kStreams} * kTokens);
    std::printf("%d concurrent streams x %d tokens: %.2f s\n", kStreams, kTokens, seconds);
}

}  // namespace
}  // namespace moe::http::testing
