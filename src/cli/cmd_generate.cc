// moeserve generate: one streaming request to a running server; text goes to stdout as it
// arrives, the summary (finish reason, usage, timing) to stderr.
//
//   moeserve generate --server 127.0.0.1:50051 --prompt "Hello" --max-tokens 32
//   moeserve generate --prompt-ids 1,2,3 --json      # one JSON line per event
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/grpc_client_util.h"
#include "moe/v1/inference.grpc.pb.h"

namespace moe::cli {
namespace {

struct GenerateFlags {
    std::string server = "127.0.0.1:50051";
    std::string prompt;
    std::string prompt_ids;
    std::string request_id;
    int max_tokens = 0;
    float temperature = 1.0f;
    float top_p = 1.0f;
    int top_k = -1;
    uint64_t seed = 0;
    std::vector<std::string> stop;
    bool ignore_eos = false;
    int logprobs = 0;
    double timeout_seconds = 0;
    bool json = false;
    std::string tls_ca;
    std::string tls_cert;
    std::string tls_key;
    std::string admin_token;
};

const char* finish_name(v1::FinishReason r) {
    switch (r) {
        case v1::FINISH_REASON_STOP:
            return "stop";
        case v1::FINISH_REASON_LENGTH:
            return "length";
        case v1::FINISH_REASON_CANCELLED:
            return "cancelled";
        case v1::FINISH_REASON_ERROR:
            return "error";
        case v1::FINISH_REASON_DEADLINE:
            return "deadline";
        default:
            return "unspecified";
    }
}

std::string dump(const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json delta_json(const v1::GenerateResponse& m) {
    nlohmann::json j;
    j["request_id"] = m.request_id();
    j["token_ids"] = std::vector<int32_t>(m.delta().token_ids().begin(), m.delta().token_ids().end());
    j["text"] = m.delta().text();
    std::vector<float> lp;
    for (const auto& t : m.delta().tokens()) lp.push_back(t.logprob());
    j["logprobs"] = lp;
    bool any_top = false;
    nlohmann::json tops = nlohmann::json::array();
    for (const auto& t : m.delta().tokens()) {
        nlohmann::json alts = nlohmann::json::array();
        for (const auto& a : t.top()) alts.push_back({{"token_id", a.token_id()}, {"logprob", a.logprob()}});
        any_top |= !alts.empty();
        tops.push_back(alts);
    }
    if (any_top) j["top_logprobs"] = tops;
    return j;
}

nlohmann::json final_json(const v1::GenerateResponse& m) {
    const v1::Final& f = m.final();
    nlohmann::json j;
    j["request_id"] = m.request_id();
    j["finish_reason"] = finish_name(f.finish_reason());
    if (f.has_matched_stop()) j["matched_stop"] = f.matched_stop();
    if (f.has_matched_token_id()) j["matched_token_id"] = f.matched_token_id();
    j["usage"] = {{"prompt_tokens", f.usage().prompt_tokens()},
                  {"completion_tokens", f.usage().completion_tokens()},
                  {"cached_prompt_tokens", f.usage().cached_prompt_tokens()}};
    j["timing"] = {{"queue_seconds", f.timing().queue_seconds()},
                   {"ttft_seconds", f.timing().ttft_seconds()},
                   {"mean_inter_token_seconds", f.timing().mean_inter_token_seconds()},
                   {"total_seconds", f.timing().total_seconds()}};
    if (!f.error().empty()) j["error"] = f.error();
    return j;
}

int generate(const GenerateFlags& f, const CLI::App& cmd) {
    v1::GenerateRequest req;
    req.set_request_id(f.request_id);
    if (!f.prompt.empty() == !f.prompt_ids.empty()) {
        std::fprintf(stderr, "moeserve generate: give exactly one of --prompt and --prompt-ids\n");
        return 2;
    }
    if (!f.prompt.empty()) {
        req.set_text(f.prompt);
    } else {
        StatusOr<std::vector<int32_t>> ids = parse_id_list(f.prompt_ids, "--prompt-ids");
        if (!ids.ok()) {
            std::fprintf(stderr, "moeserve generate: %s\n", ids.status().message().c_str());
            return 2;
        }
        for (int32_t id : ids.value()) req.mutable_token_ids()->add_ids(id);
    }
    // Only what the user gave is sent, so the server's documented defaults apply otherwise.
    if (cmd.count("--max-tokens")) req.mutable_stopping()->set_max_tokens(f.max_tokens);
    if (cmd.count("--temperature")) req.mutable_sampling()->set_temperature(f.temperature);
    if (cmd.count("--top-p")) req.mutable_sampling()->set_top_p(f.top_p);
    if (cmd.count("--top-k")) req.mutable_sampling()->set_top_k(f.top_k);
    if (cmd.count("--seed")) req.mutable_sampling()->set_seed(f.seed);
    for (const std::string& s : f.stop) req.mutable_stopping()->add_stop(s);
    if (f.ignore_eos) req.mutable_stopping()->set_ignore_eos(true);
    if (cmd.count("--logprobs")) req.mutable_output()->set_logprobs(f.logprobs);

    StatusOr<std::shared_ptr<grpc::Channel>> channel =
        make_channel(f.server, {.tls_ca = f.tls_ca, .tls_cert = f.tls_cert, .tls_key = f.tls_key});
    if (!channel.ok()) {
        std::fprintf(stderr, "moeserve generate: %s\n", channel.status().message().c_str());
        return 2;
    }
    auto stub = v1::Inference::NewStub(*channel);
    grpc::ClientContext ctx;
    add_admin_token(ctx, f.admin_token);
    if (f.timeout_seconds > 0)
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(f.timeout_seconds * 1e6)));
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub->Generate(&ctx, req);
    v1::GenerateResponse msg;
    std::vector<int32_t> all_ids;
    bool any_text = false;
    bool failed = false;
    while (reader->Read(&msg)) {
        if (msg.has_delta()) {
            all_ids.insert(all_ids.end(), msg.delta().token_ids().begin(), msg.delta().token_ids().end());
            if (f.json) {
                std::printf("%s\n", dump({{"delta", delta_json(msg)}}).c_str());
            } else if (!msg.delta().text().empty()) {
                any_text = true;
                std::fwrite(msg.delta().text().data(), 1, msg.delta().text().size(), stdout);
            }
            std::fflush(stdout);
        } else if (msg.has_final()) {
            const v1::Final& fin = msg.final();
            failed = fin.finish_reason() == v1::FINISH_REASON_ERROR;
            if (f.json) {
                std::printf("%s\n", dump({{"final", final_json(msg)}}).c_str());
            } else {
                if (!any_text && !all_ids.empty()) {
                    // A model without a tokenizer streams ids only.
                    std::string line;
                    for (size_t i = 0; i < all_ids.size(); ++i) line += (i ? "," : "") + std::to_string(all_ids[i]);
                    std::printf("%s", line.c_str());
                }
                std::printf("\n");
                std::fprintf(stderr,
                             "[%s] finish: %s, %lld prompt + %lld generated tokens (%lld cached), ttft %.3f s, "
                             "mean inter-token %.4f s, total %.3f s%s%s\n",
                             msg.request_id().c_str(), finish_name(fin.finish_reason()),
                             static_cast<long long>(fin.usage().prompt_tokens()),
                             static_cast<long long>(fin.usage().completion_tokens()),
                             static_cast<long long>(fin.usage().cached_prompt_tokens()), fin.timing().ttft_seconds(),
                             fin.timing().mean_inter_token_seconds(), fin.timing().total_seconds(),
                             fin.error().empty() ? "" : ", error: ", fin.error().c_str());
            }
            std::fflush(stdout);
        }
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) {
        if (f.json) std::printf("%s\n", dump({{"error", grpc_status_string(status)}}).c_str());
        std::fprintf(stderr, "moeserve generate: %s\n", grpc_status_string(status).c_str());
        return 1;
    }
    return failed ? 1 : 0;
}

const Registrar kRegistrar("generate", [](CLI::App& app, int& exit_code) {
    auto f = std::make_shared<GenerateFlags>();
    CLI::App* cmd = app.add_subcommand("generate", "Stream one generation from a running server to stdout");
    cmd->add_option("--server", f->server, "server address HOST:PORT")
        ->capture_default_str()
        ->envname("MOESERVE_SERVER");
    cmd->add_option("--prompt", f->prompt, "prompt text (the server tokenizes it)");
    cmd->add_option("--prompt-ids", f->prompt_ids, "prompt as comma-separated token ids");
    cmd->add_option("--request-id", f->request_id, "request id (default: assigned by the server)");
    cmd->add_option("--max-tokens", f->max_tokens, "tokens to generate (server default: 16)");
    cmd->add_option("--temperature", f->temperature, "0 = greedy (server default: 1)");
    cmd->add_option("--top-p", f->top_p, "nucleus sampling in (0, 1]");
    cmd->add_option("--top-k", f->top_k, "-1 = all");
    cmd->add_option("--seed", f->seed, "per-request RNG seed");
    cmd->add_option("--stop", f->stop, "stop string (repeatable)");
    cmd->add_flag("--ignore-eos", f->ignore_eos, "do not stop at EOS");
    cmd->add_option("--logprobs", f->logprobs, "top-n alternatives per token (0..20)");
    cmd->add_option("--timeout", f->timeout_seconds, "deadline in seconds (0: none)")->envname("MOESERVE_TIMEOUT");
    cmd->add_flag("--json", f->json, "one JSON line per event instead of text");
    cmd->add_option("--tls-ca", f->tls_ca, "PEM CA bundle: connect over TLS, trusting it")->envname("MOESERVE_TLS_CA");
    cmd->add_option("--tls-cert", f->tls_cert, "PEM client certificate (mTLS; with --tls-key)")
        ->envname("MOESERVE_TLS_CLIENT_CERT");
    cmd->add_option("--tls-key", f->tls_key, "PEM client key for --tls-cert")->envname("MOESERVE_TLS_CLIENT_KEY");
    cmd->add_option("--admin-token", f->admin_token, "sent as 'authorization: Bearer <token>'")
        ->envname("MOESERVE_ADMIN_TOKEN");
    cmd->callback([f, cmd, &exit_code] { exit_code = generate(*f, *cmd); });
});

}  // namespace
}  // namespace moe::cli
