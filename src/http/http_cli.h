// The `moeserve serve` flags of the HTTP API and its start from them, kept here so that
// cmd_serve.cc only registers them and starts/stops the server.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "http/http_server.h"

namespace moe::http {

struct HttpFlags {
    int port = -1;  // -1: off; 0: pick a free port
    int threads = 2;
    int64_t max_connections = 4096;
    double idle_timeout_seconds = 60;
    std::string served_model_name;  // empty: the model directory's name ("demo" for the built-in model)
    std::string chat_template;      // a Jinja chat template file used instead of the model's own
};

// Registers --http-port, --http-threads, --http-max-connections, --http-idle-timeout-seconds and
// --served-model-name, --chat-template (each also MOESERVE_<FLAG>).
void add_http_flags(CLI::App& cmd, HttpFlags& flags);

// What the HTTP server shares with the rest of `serve`.
struct HttpServeContext {
    std::string host;
    std::string model_dir;  // empty: the built-in demo model
    int64_t max_body_bytes = 16 << 20;
    int64_t stream_buffer_bytes = 4 << 20;
    std::string admin_token;
};

// The server (null when --http-port is -1). Loads the chat template: --chat-template (an error
// there fails the start: the operator asked for it), else the model directory's own (absent: chat
// requests get 400; present but unusable, e.g. a construct outside the supported Jinja subset: a
// warning, and chat requests get 400 saying why).
StatusOr<std::unique_ptr<HttpServer>> start_http_from_flags(const HttpFlags& flags, const HttpServeContext& ctx,
                                                            Engine& engine);

// The name /v1/models lists for a model directory: the flag, else the directory's last component.
std::string served_model_name(const HttpFlags& flags, const std::string& model_dir);

}  // namespace moe::http
