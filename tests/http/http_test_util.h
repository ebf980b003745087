// An in-process engine on the built-in demo model with the HTTP API on 127.0.0.1 (port 0), and a
// small blocking HTTP client (Boost.Beast) for the tests.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "http/http_server.h"
#include "model/demo_model.h"
#include "moe/cpu_backend.h"

namespace moe::http::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

struct HttpHarness {
    std::unique_ptr<Backend> backend;
    std::unique_ptr<Engine> engine;
    std::unique_ptr<HttpServer> server;

    ~HttpHarness() {
        server.reset();
        if (engine) engine->stop();
    }

    static std::unique_ptr<HttpHarness> start(EngineOptions eo = {}, HttpOptions ho = {}) {
        auto h = std::make_unique<HttpHarness>();
        h->backend = make_cpu_backend({.num_threads = 1});
        StatusOr<DemoModel> demo = make_demo_model(*h->backend);
        EXPECT_TRUE(demo.ok()) << demo.status().to_string();
        if (!demo.ok()) return nullptr;
        if (eo.kv_cache_bytes == 0) eo.kv_cache_bytes = 64 << 20;
        auto e = Engine::create(std::move(demo->model), std::move(demo->tokenizer), eo);
        EXPECT_TRUE(e.ok()) << e.status().to_string();
        if (!e.ok()) return nullptr;
        h->engine = std::move(e).value();
        EXPECT_TRUE(h->engine->start().ok());
        ho.host = "127.0.0.1";
        ho.port = 0;
        auto s = HttpServer::start(*h->engine, std::move(ho));
        EXPECT_TRUE(s.ok()) << s.status().to_string();
        if (!s.ok()) return nullptr;
        h->server = std::move(s).value();
        return h;
    }
    int port() const { return server->port(); }

    // Polls until nothing is pending and every KV block is allocatable again.
    bool wait_kv_idle(std::chrono::milliseconds timeout, EngineLoad* last = nullptr) const {
        const auto until = std::chrono::steady_clock::now() + timeout;
        EngineLoad l;
        do {
            l = engine->load();
            if (l.pending == 0 && l.kv_blocks_free == l.kv_blocks_total) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        } while (std::chrono::steady_clock::now() < until);
        if (last) *last = l;
        return l.pending == 0 && l.kv_blocks_free == l.kv_blocks_total;
    }
};

struct Reply {
    int status = 0;
    std::string body;
    std::string content_type;
    bool keep_alive = false;
    json parsed() const { return json::parse(body, nullptr, /*allow_exceptions=*/false); }
};

// A blocking client on one connection (kept alive between calls).
class Client {
public:
    explicit Client(int port) : socket_(ioc_) {
        socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
    }
    Reply request(bhttp::verb method, const std::string& target, const std::string& body = {},
                  const std::vector<std::pair<std::string, std::string>>& headers = {}) {
        bhttp::request<bhttp::string_body> req(method, target, 11);
        req.set(bhttp::field::host, "127.0.0.1");
        req.set(bhttp::field::content_type, "application/json");
        for (const auto& [k, v] : headers) req.set(k, v);
        req.body() = body;
        req.prepare_payload();
        Reply r;
        beast::error_code ec;
        bhttp::write(socket_, req, ec);
        if (ec) return r;
        bhttp::response_parser<bhttp::string_body> parser;
        parser.body_limit(std::numeric_limits<uint64_t>::max());
        bhttp::read(socket_, buffer_, parser, ec);
        if (ec) return r;
        auto res = parser.release();
        r.status = static_cast<int>(res.result_int());
        r.body = res.body();
        r.content_type = std::string(res[bhttp::field::content_type]);
        r.keep_alive = res.keep_alive();
        return r;
    }
    Reply post(const std::string& target, const json& body) { return request(bhttp::verb::post, target, body.dump()); }
    Reply get(const std::string& target) { return request(bhttp::verb::get, target); }
    tcp::socket& socket() { return socket_; }

private:
    asio::io_context ioc_;
    tcp::socket socket_;
    beast::flat_buffer buffer_;
};

// The JSON events of an SSE body ("data: {...}\n\n" ...); `done` tells whether "data: [DONE]"
// came last.
inline std::vector<json> sse_events(const std::string& body, bool* done) {
    std::vector<json> out;
    *done = false;
    size_t pos = 0;
    while (pos < body.size()) {
        size_t end = body.find("\n\n", pos);
        if (end == std::string::npos) end = body.size();
        const std::string ev = body.substr(pos, end - pos);
        pos = end + 2;
        if (ev.rfind("data: ", 0) != 0) continue;
        const std::string data = ev.substr(6);
        if (data == "[DONE]") {
            *done = true;
            continue;
        }
        EXPECT_FALSE(*done) << "an event after [DONE]";
        out.push_back(json::parse(data, nullptr, false));
    }
    return out;
}

}  // namespace moe::http::testing
