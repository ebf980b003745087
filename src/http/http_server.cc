#include "http/http_server.h"

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <ctime>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "core/log_field.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "server/auth.h"

namespace moe::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

spdlog::logger& logger() {
    static auto l = log::get("http");
    return *l;
}

// Lives as long as any sink: a sink posts to a connection's strand only while `open` (the
// io_context exists), checked under `mu`.
struct Hub {
    std::mutex mu;
    bool open = true;
};

}  // namespace

struct HttpServer::Impl {
    Engine* engine = nullptr;
    HttpOptions options;
    ApiContext api;
    int64_t created = 0;  // unix seconds, for /v1/models
    int bound_port = 0;
    std::atomic<bool> draining{false};
    std::atomic<int64_t> connections{0};
    std::atomic<int64_t> responding{0};  // accepted generations whose response is not yet fully written
    std::shared_ptr<Hub> hub = std::make_shared<Hub>();
    // moe:http_requests_total{endpoint, code}, in the engine's registry (served on /metrics).
    metrics::Family<metrics::Counter>* http_responses = nullptr;

    std::mutex active_mu;
    std::set<std::pair<std::string, std::string>> active;  // (request_id, namespace) submitted, not finished

    std::mutex shutdown_mu;
    bool shutdown_done = false;

    std::vector<std::thread> threads;
    // NOTE: last, so that it is destroyed first: destroying it destroys the handlers that still
    // hold connections, whose destructors use the members above.
    asio::io_context ioc;
    std::optional<tcp::acceptor> acceptor;

    bool engine_healthy() const { return options.engine_healthy ? options.engine_healthy() : engine->healthy(); }
    void add_active(const std::string& id, const std::string& ns) {
        std::lock_guard<std::mutex> lock(active_mu);
        active.emplace(id, ns);
    }
    void remove_active(const std::string& id, const std::string& ns) {
        std::lock_guard<std::mutex> lock(active_mu);
        active.erase({id, ns});
    }
    size_t num_active() {
        std::lock_guard<std::mutex> lock(active_mu);
        return active.size();
    }
    void do_accept();
};

namespace {

class Session;

// The engine's side of one request: posts each event to the connection's strand (never blocks).
class HttpSink final : public RequestSink {
public:
    HttpSink(HttpServer::Impl* srv, std::weak_ptr<Session> session, std::string id, std::string ns)
        : srv_(srv), hub_(srv->hub), session_(std::move(session)), id_(std::move(id)), ns_(std::move(ns)) {}
    void on_delta(DeltaEvent&& delta) override;
    void on_final(FinalEvent&& final_event) override;

private:
    template <class Fn>
    void post(Fn&& fn);
    HttpServer::Impl* srv_;
    std::shared_ptr<Hub> hub_;
    std::weak_ptr<Session> session_;
    std::string id_;
    std::string ns_;
};

// One connection. Every handler runs on the connection's strand.
//
//   read request -> route -> simple response -----------------------------> write -> (keep-alive) read
//                         -> generation: submit, watch the socket for EOF;
//                              stream: header, then chunks as events come, [DONE], last chunk
//                              else:   one response at the final event
class Session : public std::enable_shared_from_this<Session> {
public:
    // The connection's strand (the stream's executor).
    asio::any_io_executor executor() { return stream_.get_executor(); }
    Session(tcp::socket&& socket, HttpServer::Impl* srv) : stream_(std::move(socket)), srv_(srv) {
        srv_->connections.fetch_add(1);
        beast::error_code ec;
        const tcp::endpoint peer = stream_.socket().remote_endpoint(ec);
        peer_ = ec ? std::string("unknown") : peer.address().to_string() + ":" + std::to_string(peer.port());
    }
    ~Session() {
        cancel_request();
        end_responding();
        srv_->connections.fetch_sub(1);
    }

    void start() {
        asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->do_read(); });
    }

    void on_delta(DeltaEvent&& delta) {
        if (!gen_active_ || closed_) return;
        if (!stream_mode_) {
            builder_->add_delta(delta);
            return;
        }
        pending_ += builder_->stream_delta(delta);
        if (static_cast<int64_t>(pending_.size()) > srv_->options.stream_buffer_bytes) {
            logger().warn(
                "request {}: the client is not reading its stream ({} bytes waiting, the limit is {}): "
                "cancelled",
                log_field(request_id_), pending_.size(), srv_->options.stream_buffer_bytes);
            cancel_request();
            close();
            return;
        }
        flush();
    }

    void on_final(FinalEvent&& f) {
        if (!gen_active_ || closed_) return;
        gen_active_ = false;  // the engine is done with it: nothing to cancel any more
        if (stream_mode_) {
            pending_ += builder_->stream_final(f);
            final_queued_ = true;
            flush();
            return;
        }
        if (std::optional<ApiError> err = builder_->final_error(f)) return send_error(*err);
        send(200, builder_->complete_body(f));
    }

private:
    // ---- reading requests
    void do_read() {
        if (closed_) return;
        parser_.emplace();
        parser_->body_limit(static_cast<uint64_t>(srv_->options.max_body_bytes));
        parser_->header_limit(static_cast<uint32_t>(srv_->options.max_header_bytes));
        stream_.expires_after(srv_->options.idle_timeout);
        bhttp::async_read(stream_, buf_, *parser_, beast::bind_front_handler(&Session::on_read, shared_from_this()));
    }

    void on_read(beast::error_code ec, size_t) {
        if (closed_) return;
        if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted ||
            ec == asio::error::connection_reset || ec == asio::error::eof)
            return close();
        keep_alive_ = false;
        version_ = 11;
        if (ec == bhttp::error::body_limit)
            return send_error({.status = 413,
                               .message = "request body exceeds the limit of " +
                                          std::to_string(srv_->options.max_body_bytes) + " bytes",
                               .code = "request_too_large"});
        if (ec == bhttp::error::header_limit)
            return send_error({.status = 431,
                               .message = "request headers exceed the limit of " +
                                          std::to_string(srv_->options.max_header_bytes) + " bytes"});
        if (ec) return send_error({.status = 400, .message = "malformed HTTP request: " + ec.message()});
        req_ = parser_->release();
        keep_alive_ = req_.keep_alive();
        version_ = req_.version();
        route();
    }

    void route() {
        std::string_view target(req_.target().data(), req_.target().size());
        const std::string_view path = target.substr(0, target.find('?'));
        // The metric label: known routes only, so that clients cannot grow the label set.
        endpoint_ = "other";
        for (const char* known :
             {"/v1/completions", "/v1/chat/completions", "/health", "/ready", "/metrics", "/v1/models"})
            if (path == known) endpoint_ = known;
        if (path.rfind("/v1/models/", 0) == 0) endpoint_ = "/v1/models/{id}";
        const bhttp::verb method = req_.method();
        auto only = [&](bhttp::verb allowed) {
            if (method == allowed) return true;
            send_error({.status = 405,
                        .message = std::string(path) + " takes " + std::string(bhttp::to_string(allowed)) + ", not " +
                                   std::string(req_.method_string())},
                       std::string(bhttp::to_string(allowed)));
            return false;
        };
        if (path == "/v1/completions") {
            if (only(bhttp::verb::post)) start_generation(Endpoint::kCompletions);
        } else if (path == "/v1/chat/completions") {
            if (only(bhttp::verb::post)) start_generation(Endpoint::kChatCompletions);
        } else if (path == "/health") {
            if (only(bhttp::verb::get)) send(200, R"({"status":"ok"})");
        } else if (path == "/ready") {
            if (!only(bhttp::verb::get)) return;
            if (srv_->draining.load() || srv_->engine->load().draining)
                send(503, R"({"status":"draining"})");
            else if (!srv_->engine_healthy())
                send(503, R"({"status":"engine failed"})");
            else
                send(200, R"({"status":"ready"})");
        } else if (path == "/metrics") {
            if (!only(bhttp::verb::get)) return;
            std::string body = srv_->options.metrics_text ? srv_->options.metrics_text()
                                                          : metrics::render_text(srv_->engine->metrics());
            send(200, std::move(body), metrics::kTextContentType);
        } else if (path == "/v1/models") {
            if (only(bhttp::verb::get))
                send(200, dump_json(json{{"object", "list"}, {"data", json::array({model_json()})}}));
        } else if (path.rfind("/v1/models/", 0) == 0) {
            if (!only(bhttp::verb::get)) return;
            const std::string_view name = path.substr(std::string_view("/v1/models/").size());
            if (name == srv_->api.model_id || (!srv_->api.model_alias.empty() && name == srv_->api.model_alias))
                send(200, dump_json(model_json()));
            else
                send_error({.status = 404,
                            .message = "The model `" + std::string(name) + "` does not exist",
                            .param = "model",
                            .code = "model_not_found"});
        } else {
            send_error({.status = 404,
                        .message = "no route for " + std::string(req_.method_string()) + " " + std::string(path) +
                                   " (this server serves /v1/completions, /v1/chat/completions, /v1/models, "
                                   "/health, /ready, /metrics)",
                        .code = "not_found"});
        }
    }

    json model_json() const {
        return json{{"id", srv_->api.model_id},
                    {"object", "model"},
                    {"created", srv_->created},
                    {"owned_by", "moeserve"},
                    {"root", srv_->api.model_alias.empty() ? srv_->api.model_id : srv_->api.model_alias},
                    {"max_model_len", srv_->api.model.max_model_len}};
    }

    // ---- generation
    std::string caller_namespace() const {
        if (!srv_->options.admin_token.empty()) {
            auto it = req_.find(bhttp::field::authorization);
            if (it != req_.end()) {
                const std::string_view v(it->value().data(), it->value().size());
                constexpr std::string_view kBearer = "Bearer ";
                if (v.rfind(kBearer, 0) == 0 &&
                    server::constant_time_equals(v.substr(kBearer.size()), srv_->options.admin_token))
                    return "token:admin";
            }
        }
        return "peer:http:" + peer_;
    }

    void start_generation(Endpoint endpoint) {
        if (srv_->draining.load())
            return send_error({.status = 503, .message = "the server is draining", .type = "server_error"});
        if (!srv_->engine_healthy())
            return send_error({.status = 503, .message = "the engine has failed", .type = "server_error"});
        ParsedRequest parsed;
        if (std::optional<ApiError> err = parse_request(req_.body(), endpoint, srv_->api, &parsed)) {
            logger().debug("rejected request from {}: {}", peer_, log_field(err->message));
            return send_error(*err);
        }
        std::string().swap(req_.body());  // the prompt is tokenized: free the text
        StatusOr<std::string> assigned = new_request_id();
        if (!assigned.ok()) return send_error(from_status(assigned.status()));
        // "req-<hex>" -> "chatcmpl-<hex>" / "cmpl-<hex>", the prefixes OpenAI's ids have.
        const std::string id = (endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-") + assigned->substr(4);
        const std::string ns = caller_namespace();
        parsed.params.request_id = id;
        parsed.params.id_namespace = ns;
        stream_mode_ = parsed.stream;
        builder_.emplace(parsed, id, srv_->api.model_id, static_cast<int64_t>(std::time(nullptr)),
                         srv_->api.model.tokenizer);
        header_sent_ = false;
        final_queued_ = false;
        last_sent_ = false;
        pending_.clear();
        request_id_ = id;
        ns_ = ns;
        gen_active_ = true;
        srv_->add_active(id, ns);
        StatusOr<std::string> submitted =
            srv_->engine->submit(std::move(parsed.params), std::make_shared<HttpSink>(srv_, weak_from_this(), id, ns));
        if (!submitted.ok()) {
            gen_active_ = false;
            srv_->remove_active(id, ns);
            builder_.reset();
            return send_error(from_status(submitted.status()));
        }
        responding_ = true;
        srv_->responding.fetch_add(1);
        if (stream_mode_) write_sse_header();
        watch();
    }

    void write_sse_header() {
        count_response(200);
        sse_res_ = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::ok, version_);
        sse_res_->set(bhttp::field::server, "moeserve");
        sse_res_->set(bhttp::field::content_type, "text/event-stream");
        sse_res_->set(bhttp::field::cache_control, "no-cache");
        sse_res_->keep_alive(keep_alive_ && !srv_->draining.load());
        sse_res_->chunked(true);
        sse_sr_ = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(*sse_res_);
        writing_ = true;
        stream_.expires_after(srv_->options.write_timeout);
        bhttp::async_write_header(stream_, *sse_sr_, [self = shared_from_this()](beast::error_code ec, size_t) {
            self->writing_ = false;
            if (ec) return self->client_gone("writing the response header: " + ec.message());
            self->header_sent_ = true;
            self->flush();
        });
    }

    // Writes what is pending as one chunk; after the final event, the last chunk.
    void flush() {
        if (closed_ || writing_ || !header_sent_) return;
        if (!pending_.empty()) {
            writing_ = true;
            out_.swap(pending_);
            pending_.clear();
            stream_.expires_after(srv_->options.write_timeout);
            asio::async_write(stream_, bhttp::make_chunk(asio::buffer(out_)),
                              [self = shared_from_this()](beast::error_code ec, size_t) {
                                  self->writing_ = false;
                                  if (ec) return self->client_gone("writing the stream: " + ec.message());
                                  self->flush();
                              });
            return;
        }
        if (!final_queued_ || last_sent_) return;
        last_sent_ = true;
        writing_ = true;
        stream_.expires_after(srv_->options.write_timeout);
        asio::async_write(stream_, bhttp::make_chunk_last(), [self = shared_from_this()](beast::error_code ec, size_t) {
            self->writing_ = false;
            if (ec) return self->close();
            self->end_responding();
            if (!self->sse_res_->keep_alive()) return self->linger_close();
            self->after_response();
        });
    }

    // While a request runs, a read on the socket notices the client going away (EOF, reset) and
    // cancels the request. Bytes a pipelining client sends meanwhile are kept for the next request.
    void watch() {
        if (watching_ || closed_) return;
        watching_ = true;
        stream_.socket().async_read_some(asio::buffer(watch_buf_),
                                         beast::bind_front_handler(&Session::on_watch, shared_from_this()));
    }

    void on_watch(beast::error_code ec, size_t n) {
        watching_ = false;
        if (!ec && n > 0) {
            asio::buffer_copy(buf_.prepare(n), asio::buffer(watch_buf_, n));
            buf_.commit(n);
        }
        if (resume_after_watch_) {  // the response is complete: read the next request
            resume_after_watch_ = false;
            if (ec && ec != asio::error::operation_aborted) return close();
            return do_read();
        }
        if (closed_) return;
        if (ec) return client_gone("the client closed the connection");
        // A client that sends more than one request's worth while waiting: stop reading it.
        if (static_cast<int64_t>(buf_.size()) <= srv_->options.max_body_bytes + srv_->options.max_header_bytes) watch();
    }

    // The response is written and the connection stays open.
    void after_response() {
        builder_.reset();
        if (watching_) {
            resume_after_watch_ = true;
            beast::error_code ec;
            stream_.socket().cancel(ec);  // on_watch then reads the next request
            return;
        }
        do_read();
    }

    void client_gone(const std::string& why) {
        if (gen_active_) logger().debug("request {}: {}: cancelled", log_field(request_id_), why);
        cancel_request();
        close();
    }

    void cancel_request() {
        if (!gen_active_) return;
        gen_active_ = false;
        srv_->engine->cancel(request_id_, ns_);
    }

    void end_responding() {
        if (!responding_) return;
        responding_ = false;
        srv_->responding.fetch_sub(1);
    }

    // ---- simple responses
    void send(unsigned status, std::string body, const char* content_type = "application/json",
              std::string allow = {}) {
        auto res = std::make_shared<bhttp::response<bhttp::string_body>>(static_cast<bhttp::status>(status), version_);
        res->set(bhttp::field::server, "moeserve");
        res->set(bhttp::field::content_type, content_type);
        if (!allow.empty()) res->set(bhttp::field::allow, allow);
        res->keep_alive(keep_alive_ && !srv_->draining.load());
        res->body() = std::move(body);
        res->prepare_payload();
        count_response(status);
        stream_.expires_after(srv_->options.write_timeout);
        bhttp::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
            if (ec) return self->close();
            self->end_responding();
            if (!res->keep_alive()) return self->linger_close();
            self->after_response();
        });
    }

    void count_response(unsigned status) { srv_->http_responses->labels({endpoint_, std::to_string(status)}).inc(); }

    void send_error(const ApiError& e, std::string allow = {}) {
        send(static_cast<unsigned>(e.status), error_body(e), "application/json", std::move(allow));
    }

    // ---- closing
    // After a response with "Connection: close": stop sending, then read and discard what the
    // client still sends (the rest of an oversized body) for a moment before closing, so that the
    // client reads the response instead of a reset.
    void linger_close() {
        if (closed_) return;
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        if (ec) return close();
        lingered_ = 0;
        linger_read();
    }
    void linger_read() {
        stream_.expires_after(std::chrono::seconds(2));
        stream_.async_read_some(asio::buffer(watch_buf_), [self = shared_from_this()](beast::error_code ec, size_t n) {
            self->lingered_ += static_cast<int64_t>(n);
            if (ec || self->lingered_ > (int64_t{64} << 20)) return self->close();
            self->linger_read();
        });
    }

    void close() {
        if (closed_) return;
        closed_ = true;
        end_responding();
        stream_.close();
    }

    beast::tcp_stream stream_;
    HttpServer::Impl* srv_;
    std::string peer_;
    beast::flat_buffer buf_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    bhttp::request<bhttp::string_body> req_;
    bool keep_alive_ = false;
    unsigned version_ = 11;
    std::string endpoint_ = "other";  // the route, for moe:http_requests_total
    bool closed_ = false;

    // The request being generated.
    std::optional<ResponseBuilder> builder_;
    std::string request_id_;
    std::string ns_;
    bool gen_active_ = false;  // submitted, final not received, not cancelled
    bool responding_ = false;  // counted in Impl::responding
    bool stream_mode_ = false;
    std::shared_ptr<bhttp::response<bhttp::empty_body>> sse_res_;
    std::shared_ptr<bhttp::response_serializer<bhttp::empty_body>> sse_sr_;
    bool header_sent_ = false;
    bool final_queued_ = false;
    bool last_sent_ = false;
    bool writing_ = false;
    std::string pending_;  // SSE bytes not yet handed to a write
    std::string out_;      // the chunk being written

    bool watching_ = false;
    bool resume_after_watch_ = false;
    char watch_buf_[4096];
    int64_t lingered_ = 0;
};

// Under the hub's lock: while it is open the io_context exists, so the session and its strand may
// be reached (and the session even released) here. The sink holds no executor of its own: one
// that outlived the io_context (a sink the engine drops after the server is gone) would touch the
// destroyed strand service (TSan saw that race at shutdown).
template <class Fn>
void HttpSink::post(Fn&& fn) {
    std::lock_guard<std::mutex> lock(hub_->mu);
    if (!hub_->open) return;
    std::shared_ptr<Session> session = session_.lock();
    if (!session) return;
    asio::any_io_executor ex = session->executor();
    // The handler keeps the session, so its last reference is dropped on the strand, not here on
    // the engine thread.
    asio::post(ex, [session = std::move(session), fn = std::forward<Fn>(fn)]() mutable { fn(); });
}

void HttpSink::on_delta(DeltaEvent&& delta) {
    post([w = session_, d = std::move(delta)]() mutable {
        if (auto s = w.lock()) s->on_delta(std::move(d));
    });
}

void HttpSink::on_final(FinalEvent&& final_event) {
    {
        std::lock_guard<std::mutex> lock(hub_->mu);
        if (hub_->open) srv_->remove_active(id_, ns_);
    }
    post([w = session_, f = std::move(final_event)]() mutable {
        if (auto s = w.lock()) s->on_final(std::move(f));
    });
}

}  // namespace

void HttpServer::Impl::do_accept() {
    acceptor->async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted || !acceptor->is_open()) return;
        if (!ec) {
            if (connections.load() >= options.max_connections) {
                static std::atomic<int64_t> refused{0};
                // Rate-limited: a flood must not flood the log too.
                if ((refused.fetch_add(1) & 1023) == 0)
                    logger().warn("{} open connections (--http-max-connections): refusing new ones",
                                  options.max_connections);
                beast::error_code ignored;
                socket.close(ignored);
            } else {
                std::make_shared<Session>(std::move(socket), this)->start();
            }
        }
        do_accept();
    });
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
    shutdown(std::chrono::milliseconds(0));
}

StatusOr<std::unique_ptr<HttpServer>> HttpServer::start(Engine& engine, HttpOptions options) {
    if (options.port < 0 || options.port > 65535)
        return invalid_argument("http port must be in [0, 65535], got " + std::to_string(options.port));
    if (options.num_threads < 1 || options.num_threads > 256)
        return invalid_argument("http threads must be in [1, 256], got " + std::to_string(options.num_threads));
    if (options.max_body_bytes < 1024 || options.max_header_bytes < 1024 || options.max_header_bytes > (1 << 30))
        return invalid_argument("http body and header limits must be >= 1024 bytes");
    if (options.max_connections < 1) return invalid_argument("http max_connections must be >= 1");
    if (options.stream_buffer_bytes < 1024) return invalid_argument("http stream_buffer_bytes must be >= 1024");
    if (options.max_json_depth < 4) return invalid_argument("http max_json_depth must be >= 4");
    auto impl = std::make_unique<Impl>();
    impl->engine = &engine;
    impl->options = std::move(options);
    impl->created = static_cast<int64_t>(std::time(nullptr));
    ApiContext& api = impl->api;
    api.model_id = impl->options.model_id;
    api.model_alias = impl->options.model_alias;
    api.model.tokenizer = engine.tokenizer();
    api.model.vocab_size = engine.config().vocab_size;
    api.model.max_model_len = engine.max_model_len();
    api.limits = engine.options().limits;
    api.max_json_depth = impl->options.max_json_depth;
    api.render_chat = impl->options.render_chat;
    api.chat_unavailable_reason = impl->options.chat_unavailable_reason;
    impl->http_responses = &engine.metrics().counter("moe:http_requests_total",
                                                     "HTTP responses by route and status code.", {"endpoint", "code"});

    const std::string& host = impl->options.host;
    const std::string address = host + ":" + std::to_string(impl->options.port);
    beast::error_code ec;
    tcp::resolver resolver(impl->ioc);
    auto endpoints = resolver.resolve(host, std::to_string(impl->options.port), tcp::resolver::passive, ec);
    if (ec || endpoints.empty()) return invalid_argument("http: cannot resolve host " + host + ": " + ec.message());
    const tcp::endpoint endpoint = *endpoints.begin();
    impl->acceptor.emplace(asio::make_strand(impl->ioc));
    tcp::acceptor& acc = *impl->acceptor;
    acc.open(endpoint.protocol(), ec);
    if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acc.bind(endpoint, ec);
    if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return unavailable("http: could not listen on " + address + ": " + ec.message());
    impl->bound_port = acc.local_endpoint(ec).port();
    impl->do_accept();
    Impl* raw = impl.get();
    for (int i = 0; i < raw->options.num_threads; ++i) {
        raw->threads.emplace_back([raw] {
            // Thread entry: an exception from a handler is logged and the loop goes on, so one
            // bad request cannot take the listener down.
            while (true) {
                try {
                    raw->ioc.run();
                    return;
                } catch (const std::exception& e) {
                    logger().error("http: a handler threw: {}", e.what());
                }
            }
        });
    }
    std::unique_ptr<HttpServer> server(new HttpServer(std::move(impl)));
    logger().info("serving the OpenAI-compatible HTTP API on {} (model `{}`, {} threads)", server->address(),
                  raw->options.model_id, raw->options.num_threads);
    return server;
}

int HttpServer::port() const {
    return impl_->bound_port;
}

std::string HttpServer::address() const {
    return impl_->options.host + ":" + std::to_string(impl_->bound_port);
}

void HttpServer::drain() {
    impl_->draining.store(true);
}

bool HttpServer::draining() const {
    return impl_->draining.load();
}

int64_t HttpServer::active_requests() const {
    return static_cast<int64_t>(impl_->num_active());
}

int64_t HttpServer::connections() const {
    return impl_->connections.load();
}

void HttpServer::shutdown(std::chrono::milliseconds grace) {
    {
        std::lock_guard<std::mutex> lock(impl_->shutdown_mu);
        if (impl_->shutdown_done) return;
        impl_->shutdown_done = true;
    }
    Impl& s = *impl_;
    drain();
    asio::post(s.acceptor->get_executor(), [&s] {
        beast::error_code ec;
        s.acceptor->close(ec);
    });
    auto wait_until = [](std::chrono::milliseconds limit, const std::function<bool()>& done) {
        const auto until = std::chrono::steady_clock::now() + limit;
        while (!done() && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return done();
    };
    if (!wait_until(grace, [&] { return s.num_active() == 0; })) {
        std::vector<std::pair<std::string, std::string>> ids;
        {
            std::lock_guard<std::mutex> lock(s.active_mu);
            ids.assign(s.active.begin(), s.active.end());
        }
        for (const auto& [id, ns] : ids) s.engine->cancel(id, ns);
        logger().warn("http: grace period over: cancelled {} requests", ids.size());
        wait_until(std::chrono::seconds(5), [&] { return s.num_active() == 0; });
    }
    // Every request has its final event; give the connections a moment to write it (bounded: a
    // client that does not read must not hold shutdown).
    wait_until(std::chrono::seconds(2), [&] { return s.responding.load() == 0; });
    s.ioc.stop();
    for (std::thread& t : s.threads)
        if (t.joinable()) t.join();
    std::lock_guard<std::mutex> lock(s.hub->mu);
    s.hub->open = false;
}

}  // namespace moe::http
