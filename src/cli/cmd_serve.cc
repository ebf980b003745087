// moeserve serve: the gRPC server over the engine.
//
//   moeserve serve [--model DIR] [--host 127.0.0.1] [--port 50051] [--kv-cache-bytes N] ...
//
// Every flag is also an environment variable (MOESERVE_<FLAG>, e.g. MOESERVE_PORT). SIGTERM or
// SIGINT drains: readiness turns NOT_SERVING, new requests get UNAVAILABLE, in-flight requests
// get --drain-grace-seconds to finish, the rest are cancelled, and the process exits 0. The
// signal handler only writes the signal number to a self-pipe that the main thread reads, so no
// work happens in a handler. (sigwait alone is not enough: threads started before main, such as
// OpenBLAS's pool, do not block the signals, and one arriving before sigwait would kill them.)

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "cli/backend_select.h"
#include "cli/command.h"
#include "cli/ep_launch.h"
#include "core/logging.h"
#include "core/sha256.h"
#include "engine/engine.h"
#include "http/http_cli.h"
#include "model/demo_model.h"
#include "server/server.h"
#include "template/chat_template.h"

namespace moe::cli {
namespace {

struct ServeFlags {
    EpFlags ep;
    std::string model;
    std::string host = "127.0.0.1";
    int port = 50051;
    int threads = 0;
    std::string device = "cpu";
    std::string dtype = "auto";
    int64_t kv_cache_bytes = 0;
    double kv_cache_fraction = 0.25;
    int64_t kv_block_size = 16;
    std::string kv_cache_dtype = "auto";
    bool compress_weights = true;
    std::string cpu_matmul = "auto";
    int64_t max_batched_tokens = 2048;
    int64_t max_seqs = 256;
    int64_t max_model_len = 0;
    int64_t max_pending = 1024;
    bool no_prefix_caching = false;
    double drain_grace_seconds = 30;
    std::string tls_cert;
    std::string tls_key;
    std::string tls_client_ca;
    std::string admin_token;
    int64_t max_message_bytes = 16 << 20;
    int64_t max_prompt_bytes = 1 << 20;
    double keepalive_time_seconds = 120;
    double keepalive_timeout_seconds = 20;
    double max_connection_idle_seconds = 300;
    int64_t stream_buffer_bytes = 4 << 20;
    int64_t total_stream_buffer_bytes = int64_t{256} << 20;
    http::HttpFlags http;  // the OpenAI-compatible HTTP API (src/http/http_cli.h)
    // Disaggregated serving (moe.v1.Worker on the internal port).
    std::string role = "aggregated";
    int internal_port = -1;  // -1: no internal port (aggregated only); 0: pick a free one
    std::string internal_host = "127.0.0.1";
    std::string internal_secret;
    double handoff_lease_seconds = 30;
    std::string kv_transport = "ucx";
};

// The identity of a model's weights for the worker signature: SHA-256 over config.json and, per
// *.safetensors file (sorted by name), its name, its header (tensor names, dtypes, shapes,
// offsets) and the first and last 64 KiB of its data, so that two checkpoints of one
// architecture (a fine-tune) differ without reading every weight. "demo" for the demo model.
StatusOr<std::string> weights_fingerprint(const std::string& dir) {
    if (dir.empty()) return std::string("demo");
    Sha256 h;
    auto add_file_part = [&](const std::filesystem::path& p, uint64_t offset, uint64_t len) -> Status {
        std::ifstream in(p, std::ios::binary);
        if (!in) return invalid_argument("cannot read " + p.string() + " for the weights fingerprint");
        in.seekg(static_cast<std::streamoff>(offset));
        std::vector<char> buf(static_cast<size_t>(len));
        in.read(buf.data(), static_cast<std::streamsize>(len));
        h.update(buf.data(), static_cast<size_t>(in.gcount()));
        return ok_status();
    };
    std::error_code ec;
    const std::filesystem::path root(dir);
    MOE_RETURN_IF_ERROR(add_file_part(root / "config.json", 0, 1 << 20));
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(root, ec))
        if (e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    constexpr uint64_t kSample = 64 << 10;
    for (const auto& f : files) {
        const std::string name = f.filename().string();
        h.update(name.data(), name.size());
        const uint64_t size = std::filesystem::file_size(f, ec);
        if (ec || size < 8) return invalid_argument(f.string() + ": not a safetensors file (weights fingerprint)");
        uint64_t header_len = 0;
        {
            std::ifstream in(f, std::ios::binary);
            in.read(reinterpret_cast<char*>(&header_len), 8);
        }
        if (header_len > size - 8) return invalid_argument(f.string() + ": header length past the end of the file");
        MOE_RETURN_IF_ERROR(add_file_part(f, 0, 8 + header_len));
        const uint64_t data = 8 + header_len;
        MOE_RETURN_IF_ERROR(add_file_part(f, data, std::min(kSample, size - data)));
        if (size - data > kSample) MOE_RETURN_IF_ERROR(add_file_part(f, size - kSample, kSample));
    }
    return Sha256::hex(h.finish());
}

int g_signal_pipe[2] = {-1, -1};

void on_shutdown_signal(int sig) {
    const int saved = errno;
    const char byte = static_cast<char>(sig);
    [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &byte, 1);
    errno = saved;
}

Status install_signal_pipe() {
    if (pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return internal_error("pipe2 failed for the signal pipe");
    // The read end blocks; only the handler's write end must never block.
    fcntl(g_signal_pipe[0], F_SETFL, fcntl(g_signal_pipe[0], F_GETFL) & ~O_NONBLOCK);
    struct sigaction sa {};
    sa.sa_handler = on_shutdown_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, nullptr) != 0 || sigaction(SIGINT, &sa, nullptr) != 0)
        return internal_error("sigaction failed for SIGTERM/SIGINT");
    return ok_status();
}

int wait_for_shutdown_signal() {
    char byte = 0;
    while (true) {
        const ssize_t n = read(g_signal_pipe[0], &byte, 1);
        if (n == 1) return byte;
        if (n < 0 && errno == EINTR) continue;
        return SIGTERM;  // the pipe broke: treat it as a request to stop
    }
}

bool has_tokenizer_files(const std::filesystem::path& dir) {
    std::error_code ec;
    return std::filesystem::exists(dir / "tokenizer.json", ec) ||
           (std::filesystem::exists(dir / "vocab.json", ec) && std::filesystem::exists(dir / "merges.txt", ec));
}

// The model_name label of the metrics: the model directory's name ("Qwen3-30B-A3B" for
// /models/Qwen3-30B-A3B/), as a vLLM server's for a model id; a directory layout is no business of
// a dashboard.
std::string metrics_model_name(const std::string& model_dir) {
    if (model_dir.empty()) return "demo";
    std::filesystem::path p = std::filesystem::path(model_dir).lexically_normal();
    if (!p.has_filename()) p = p.parent_path();
    const std::string name = p.filename().string();
    return name.empty() ? "model" : name;
}

std::map<std::string, std::string> effective_config(const ServeFlags& f, const EngineOptions& eo) {
    auto b = [](bool v) { return std::string(v ? "true" : "false"); };
    return {
        {"model", f.model.empty() ? "(built-in demo model)" : f.model},
        {"host", f.host},
        {"port", std::to_string(f.port)},
        {"threads", std::to_string(f.threads)},
        {"device", f.device},
        {"dtype", f.dtype},
        {"kv_cache_bytes", std::to_string(eo.kv_cache_bytes)},
        {"kv_cache_fraction", std::to_string(eo.kv_cache_fraction)},
        {"kv_block_size", std::to_string(eo.kv_block_size)},
        {"kv_cache_dtype", dtype_name(eo.kv_dtype)},
        {"compress_weights", b(f.compress_weights)},
        {"cpu_matmul", f.cpu_matmul},
        {"max_batched_tokens", std::to_string(eo.scheduler.max_batched_tokens)},
        {"max_seqs", std::to_string(eo.scheduler.max_seqs)},
        {"max_model_len", std::to_string(eo.scheduler.max_model_len)},
        {"max_pending", std::to_string(eo.max_pending)},
        {"prefix_caching", b(eo.prefix_caching)},
        {"drain_grace_seconds", std::to_string(f.drain_grace_seconds)},
        {"tls_cert", f.tls_cert},
        {"tls_key", f.tls_key},
        {"tls_client_ca", f.tls_client_ca},
        // NOTE: never the token itself (this map is logged and served by GetServerInfo).
        {"admin_token", f.admin_token.empty() ? "(none: loopback peers are admin)" : "(set)"},
        {"max_message_bytes", std::to_string(f.max_message_bytes)},
        {"max_prompt_bytes", std::to_string(f.max_prompt_bytes)},
        {"keepalive_time_seconds", std::to_string(f.keepalive_time_seconds)},
        {"keepalive_timeout_seconds", std::to_string(f.keepalive_timeout_seconds)},
        {"max_connection_idle_seconds", std::to_string(f.max_connection_idle_seconds)},
        {"stream_buffer_bytes", std::to_string(f.stream_buffer_bytes)},
        {"total_stream_buffer_bytes", std::to_string(f.total_stream_buffer_bytes)},
        {"expert_parallel", b(f.ep.enabled)},
        {"comm_timeout", std::to_string(f.ep.comm_timeout_s)},
        {"ep_placement", f.ep.placement_file},
        {"role", f.role},
        {"internal_host", f.internal_host},
        {"internal_port", std::to_string(f.internal_port)},
        // NOTE: never the secret itself.
        {"internal_secret", f.internal_secret.empty() ? "(none)" : "(set)"},
        {"handoff_lease_seconds", std::to_string(f.handoff_lease_seconds)},
        {"kv_transport", f.kv_transport},
    };
}

Status serve(const ServeFlags& f, EpGroup& group) {
    // Before loading anything, so that a signal during a long model load also drains cleanly
    // (it is read once the server is up).
    MOE_RETURN_IF_ERROR(install_signal_pipe());

    auto& logger = *log::get("server");
    WeightDType dtype = WeightDType::kAuto;
    if (f.dtype == "f32")
        dtype = WeightDType::kF32;
    else if (f.dtype == "bf16")
        dtype = WeightDType::kBF16;
    else if (f.dtype != "auto")
        return invalid_argument("--dtype must be auto, f32 or bf16, got " + f.dtype);
    if (f.drain_grace_seconds < 0) return invalid_argument("--drain-grace-seconds must be >= 0");

    MOE_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                         make_backend(f.device, f.threads, f.compress_weights, f.cpu_matmul));
    std::unique_ptr<MoeTransformer> model;
    std::unique_ptr<Tokenizer> tokenizer;
    if (f.model.empty()) {
        if (group.comm) return invalid_argument("--expert-parallel needs --model (the demo model is not sharded)");
        MOE_ASSIGN_OR_RETURN(DemoModel demo, make_demo_model(*backend));
        model = std::move(demo.model);
        tokenizer = std::move(demo.tokenizer);
        logger.warn(
            "no --model: serving the built-in demo model (random weights, fixed seed): its output is "
            "meaningless");
    } else {
        MOE_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(f.model));
        MOE_ASSIGN_OR_RETURN(ExpertParallelOptions ep, ep_model_options(f.ep, group, config));
        MOE_ASSIGN_OR_RETURN(
            model, MoeTransformer::load(f.model, *backend, {.weight_dtype = dtype, .expert_parallel = std::move(ep)}));
        if (has_tokenizer_files(f.model)) {
            MOE_ASSIGN_OR_RETURN(tokenizer, Tokenizer::load(f.model));
        } else {
            logger.warn("{} has no tokenizer.json (or vocab.json + merges.txt): token-id input only", f.model);
        }
    }
    const std::string matrix_dtype = dtype_name(model->matrix_dtype());

    EngineOptions eo;
    eo.kv_cache_bytes = f.kv_cache_bytes;
    eo.kv_cache_fraction = f.kv_cache_fraction;
    eo.kv_block_size = f.kv_block_size;
    MOE_ASSIGN_OR_RETURN(eo.kv_dtype, kv_cache_dtype_from_name(f.kv_cache_dtype, model->matrix_dtype()));
    eo.prefix_caching = !f.no_prefix_caching;
    eo.max_pending = f.max_pending;
    eo.scheduler.max_batched_tokens = f.max_batched_tokens;
    eo.scheduler.max_seqs = f.max_seqs;
    eo.scheduler.max_model_len = f.max_model_len;
    eo.limits.max_prompt_text_bytes = static_cast<size_t>(f.max_prompt_bytes);
    eo.metrics_model_name = metrics_model_name(f.model);

    server::ServerOptions so;
    so.host = f.host;
    // Expert parallelism: every rank serves its own requests on --port + rank (data-parallel
    // front ends behind any load balancer).
    so.port = f.port == 0 ? 0 : f.port + group.rank();
    if (group.comm) {
        so.expert_parallel.rank = group.rank();
        so.expert_parallel.world_size = group.size();
        so.expert_parallel.comm = group.comm->kind();
        for (int64_t l = 0; l < model->config().num_layers; ++l)
            if (model->config().layer_is_moe[static_cast<size_t>(l)])
                so.expert_parallel.layer_experts.emplace_back(l, model->local_experts(l));
    }
    so.model_name = f.model.empty() ? "built-in demo model" : f.model;
    so.dtype = matrix_dtype;
    so.backend = backend->name();
    so.threads = backend->num_threads();
    so.config = effective_config(f, eo);
    so.tls_cert_file = f.tls_cert;
    so.tls_key_file = f.tls_key;
    so.tls_client_ca_file = f.tls_client_ca;
    so.admin_token = f.admin_token;
    so.max_message_bytes = static_cast<int>(f.max_message_bytes);
    auto ms = [](double seconds) { return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)); };
    so.keepalive_time = ms(f.keepalive_time_seconds);
    so.keepalive_timeout = ms(f.keepalive_timeout_seconds);
    so.max_connection_idle = ms(f.max_connection_idle_seconds);
    so.stream_buffer_bytes = f.stream_buffer_bytes;
    if (!f.model.empty()) {
        // Loaded once here: a template outside the supported subset is reported now, naming the
        // construct, and the server serves text and token-id input without it.
        StatusOr<tmpl::ChatTemplate> chat = tmpl::ChatTemplate::load(f.model);
        if (chat.ok()) {
            so.chat_template = std::make_shared<const tmpl::ChatTemplate>(std::move(chat).value());
            logger.info("chat template: loaded from {}", f.model);
        } else if (chat.status().code() == StatusCode::kNotFound) {
            logger.info("{}: chat input (GenerateRequest.chat) is refused", chat.status().message());
        } else {
            so.chat_template_error = chat.status().message();
            logger.error("chat template not usable, chat input is refused: {}", chat.status().message());
        }
    }
    so.total_stream_buffer_bytes = f.total_stream_buffer_bytes;
    if (f.role != "aggregated" || f.internal_port >= 0) {
        if (f.internal_port < 0)
            return invalid_argument("--role " + f.role + " needs --internal-port (0: pick a free one)");
        if (group.comm) return invalid_argument("--role and --internal-port are not supported with --expert-parallel");
        so.worker.enabled = true;
        so.worker.role = f.role;
        so.worker.host = f.internal_host;
        so.worker.port = f.internal_port;
        so.worker.secret = f.internal_secret;
        so.worker.kv_transport = f.kv_transport;
        so.worker.lease = std::chrono::milliseconds(static_cast<int64_t>(f.handoff_lease_seconds * 1000));
        so.worker.architecture = model->config().model_type;
        MOE_ASSIGN_OR_RETURN(so.worker.weights_fingerprint, weights_fingerprint(f.model));
        // Prefix-cache events for the router (moe.v1.WorkerEvents, beside moe.v1.Worker).
        eo.kv_events = std::make_shared<KvEventHub>();
        so.worker.kv_events = eo.kv_events;
    }
    std::string line;
    for (const auto& [k, v] : so.config) line += (line.empty() ? "" : " ") + k + "=" + v;
    logger.info("config: {}", line);

    MOE_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(std::move(model), std::move(tokenizer), eo));
    MOE_RETURN_IF_ERROR(engine->start());
    const EngineLoad load = engine->load();
    logger.info("engine: max_model_len {}, KV cache {} blocks of {} tokens, backend {} with {} threads",
                engine->max_model_len(), load.kv_blocks_total, load.kv_block_size, so.backend, so.threads);
    StatusOr<std::unique_ptr<server::Server>> server_or = server::Server::start(*engine, so);
    if (!server_or.ok()) {
        engine->stop();
        return server_or.status();
    }
    std::unique_ptr<server::Server> server = std::move(server_or).value();
    std::printf("moeserve listening on %s\n", server->address().c_str());
    if (!server->internal_address().empty())
        std::printf("moeserve internal listening on %s\n", server->internal_address().c_str());
    // ---- the OpenAI-compatible HTTP API (off unless --http-port), same engine and limits
    StatusOr<std::unique_ptr<http::HttpServer>> http_or =
        http::start_http_from_flags(f.http,
                                    {.host = f.host,
                                     .model_dir = f.model,
                                     .max_body_bytes = f.max_message_bytes,
                                     .stream_buffer_bytes = f.stream_buffer_bytes,
                                     .admin_token = f.admin_token},
                                    *engine);
    if (!http_or.ok()) {
        server->shutdown(std::chrono::milliseconds(0));
        engine->stop();
        return http_or.status();
    }
    std::unique_ptr<http::HttpServer> http_server = std::move(http_or).value();
    if (http_server) std::printf("moeserve http listening on %s\n", http_server->address().c_str());
    std::fflush(stdout);

    const int sig = wait_for_shutdown_signal();
    logger.info("{}: draining (grace {} s)", sig == SIGTERM ? "SIGTERM" : "SIGINT", f.drain_grace_seconds);
    auto grace = std::chrono::milliseconds(static_cast<int64_t>(f.drain_grace_seconds * 1000));
    if (http_server) {
        // Both APIs stop admitting and their requests share one grace period; then each cancels
        // what is left of its own (HTTP first, so gRPC's shutdown does not wait on HTTP requests).
        http_server->drain();
        server->drain();
        engine->wait_idle(grace);
        http_server->shutdown(std::chrono::milliseconds(0));
        http_server.reset();
        grace = std::chrono::milliseconds(0);  // spent
    }
    server->shutdown(grace);
    server.reset();
    engine->stop();
    logger.info("exiting");
    return ok_status();
}

const Registrar kRegistrar("serve", [](CLI::App& app, int& exit_code) {
    auto f = std::make_shared<ServeFlags>();
    CLI::App* cmd = app.add_subcommand("serve", "Serve a model over gRPC (moe.v1.Inference, moe.v1.Control, health)");
    auto opt = [&](const char* name, auto& value, const char* help, const char* env) {
        return cmd->add_option(name, value, help)->capture_default_str()->envname(env);
    };
    opt("--model", f->model, "Hugging Face model directory (default: the built-in demo model)", "MOESERVE_MODEL");
    opt("--host", f->host, "address to listen on", "MOESERVE_HOST");
    opt("--port", f->port, "port to listen on (0: pick a free one and print it)", "MOESERVE_PORT")
        ->check(CLI::Range(0, 65535));
    opt("--threads", f->threads, "CPU threads (0: the affinity mask and cgroup CPU quota allow)", "MOESERVE_THREADS");
    opt("--device", f->device, "cpu, cuda or cuda:N", "MOESERVE_DEVICE");
    opt("--dtype", f->dtype, "weight dtype: auto, f32, bf16", "MOESERVE_DTYPE");
    opt("--kv-cache-bytes", f->kv_cache_bytes, "KV cache size in bytes (0: --kv-cache-fraction of free memory)",
        "MOESERVE_KV_CACHE_BYTES")
        ->check(CLI::NonNegativeNumber);
    opt("--kv-cache-fraction", f->kv_cache_fraction, "fraction of available memory for the KV cache",
        "MOESERVE_KV_CACHE_FRACTION")
        ->check(CLI::Range(0.0, 1.0));
    opt("--kv-block-size", f->kv_block_size, "tokens per KV block", "MOESERVE_KV_BLOCK_SIZE")
        ->check(CLI::Range(1, 1024));
    opt("--kv-cache-dtype", f->kv_cache_dtype,
        "KV cache dtype: auto (bf16 for a model served in bf16, else f32), f32 or bf16", "MOESERVE_KV_CACHE_DTYPE")
        ->check(CLI::IsMember({"auto", "f32", "bf16"}));
    opt("--compress-weights,--compress-experts", f->compress_weights, kCompressWeightsHelp,
        "MOESERVE_COMPRESS_WEIGHTS");
    opt("--cpu-matmul", f->cpu_matmul, kCpuMatmulHelp, "MOESERVE_CPU_MATMUL")->check(CLI::IsMember(kCpuMatmulValues));
    opt("--max-batched-tokens", f->max_batched_tokens, "tokens per engine step (prefill chunks + decodes)",
        "MOESERVE_MAX_BATCHED_TOKENS")
        ->check(CLI::PositiveNumber);
    opt("--max-seqs", f->max_seqs, "sequences per engine step", "MOESERVE_MAX_SEQS")->check(CLI::PositiveNumber);
    opt("--max-model-len", f->max_model_len, "longest prompt + output (0: the model's context length)",
        "MOESERVE_MAX_MODEL_LEN")
        ->check(CLI::NonNegativeNumber);
    opt("--max-pending", f->max_pending, "accepted, unfinished requests; beyond: RESOURCE_EXHAUSTED",
        "MOESERVE_MAX_PENDING")
        ->check(CLI::PositiveNumber);
    cmd->add_flag("--no-prefix-caching", f->no_prefix_caching, "disable automatic prefix caching")
        ->envname("MOESERVE_NO_PREFIX_CACHING");
    opt("--drain-grace-seconds", f->drain_grace_seconds,
        "on SIGTERM/SIGINT, how long in-flight requests may run before they are cancelled",
        "MOESERVE_DRAIN_GRACE_SECONDS")
        ->check(CLI::NonNegativeNumber);
    opt("--tls-cert", f->tls_cert, "PEM certificate chain: serve over TLS (with --tls-key)", "MOESERVE_TLS_CERT");
    opt("--tls-key", f->tls_key, "PEM private key for --tls-cert", "MOESERVE_TLS_KEY");
    opt("--tls-client-ca", f->tls_client_ca, "PEM CA bundle: require client certificates signed by it (mTLS)",
        "MOESERVE_TLS_CLIENT_CA");
    // NOTE: prefer MOESERVE_ADMIN_TOKEN to the flag: a flag shows in the process list.
    cmd->add_option("--admin-token", f->admin_token,
                    "admin credential, sent as metadata 'authorization: Bearer <token>'; needed for Control.Drain "
                    "and aborting other clients' requests (empty: loopback peers are admin)")
        ->envname("MOESERVE_ADMIN_TOKEN");
    opt("--max-message-bytes", f->max_message_bytes, "largest request message accepted (bytes)",
        "MOESERVE_MAX_MESSAGE_BYTES")
        ->check(CLI::Range(int64_t{1024}, int64_t{1} << 30));
    opt("--max-prompt-bytes", f->max_prompt_bytes, "longest text prompt accepted, checked before tokenizing (bytes)",
        "MOESERVE_MAX_PROMPT_BYTES")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
    opt("--keepalive-time-seconds", f->keepalive_time_seconds, "ping a connection after this long without traffic",
        "MOESERVE_KEEPALIVE_TIME_SECONDS")
        ->check(CLI::Range(1.0, 86400.0));
    opt("--keepalive-timeout-seconds", f->keepalive_timeout_seconds, "close a connection whose ping goes unanswered",
        "MOESERVE_KEEPALIVE_TIMEOUT_SECONDS")
        ->check(CLI::Range(1.0, 3600.0));
    opt("--max-connection-idle-seconds", f->max_connection_idle_seconds,
        "close a connection that has had no call for this long", "MOESERVE_MAX_CONNECTION_IDLE_SECONDS")
        ->check(CLI::Range(1.0, 86400.0 * 30));
    opt("--stream-buffer-bytes", f->stream_buffer_bytes,
        "output one stream may hold for a client that does not read; beyond: the request ends RESOURCE_EXHAUSTED",
        "MOESERVE_STREAM_BUFFER_BYTES")
        ->check(CLI::Range(int64_t{1024}, int64_t{1} << 40));
    opt("--total-stream-buffer-bytes", f->total_stream_buffer_bytes,
        "output all streams together may hold unsent (>= --stream-buffer-bytes)", "MOESERVE_TOTAL_STREAM_BUFFER_BYTES")
        ->check(CLI::Range(int64_t{1024}, int64_t{1} << 40));
    opt("--role", f->role,
        "disaggregated serving: prefill (run prompts, hand the KV off), decode (continue handed-off requests) or "
        "aggregated (both, today's serving)",
        "MOESERVE_ROLE")
        ->check(CLI::IsMember({"aggregated", "prefill", "decode"}));
    opt("--internal-port", f->internal_port,
        "port of the internal worker API (moe.v1.Worker: prefill/decode handoff); -1: none, 0: pick a free one",
        "MOESERVE_INTERNAL_PORT")
        ->check(CLI::Range(-1, 65535));
    opt("--internal-host", f->internal_host, "address the internal worker API listens on", "MOESERVE_INTERNAL_HOST");
    // NOTE: prefer the environment to the flag: a flag shows in the process list.
    cmd->add_option("--internal-secret", f->internal_secret,
                    "shared secret of the internal worker API (metadata 'authorization: Bearer <secret>'), required "
                    "with --internal-port")
        ->envname("MOE_INTERNAL_SECRET");
    opt("--handoff-lease-seconds", f->handoff_lease_seconds,
        "how long a prefill worker holds a handed-off request's KV blocks for the decode worker to claim",
        "MOESERVE_HANDOFF_LEASE_SECONDS")
        ->check(CLI::Range(0.001, 600.0));
    opt("--kv-transport", f->kv_transport,
        "how KV blocks move between workers: ucx (shared memory or TCP) or inproc (in-process peers only)",
        "MOESERVE_KV_TRANSPORT")
        ->check(CLI::IsMember({"ucx", "inproc"}));
    add_ep_flags(cmd, f->ep);
    http::add_http_flags(*cmd, f->http);
    cmd->callback([f, &exit_code] {
        StatusOr<EpGroup> group = start_ep_group(f->ep);
        Status s = group.ok() ? serve(*f, *group) : group.status();
        if (!s.ok()) {
            const std::string rank = group.ok() && group->comm ? " (rank " + std::to_string(group->rank()) + ")" : "";
            std::fprintf(stderr, "moeserve serve%s: %s\n", rank.c_str(), s.to_string().c_str());
            exit_code = 1;
        }
        if (group.ok()) finish_ep_group(*group, exit_code);
    });
});

}  // namespace
}  // namespace moe::cli
