// moeserve router: the public gRPC API in front of disaggregated (or aggregated) workers.
//
//   moeserve router --model DIR --prefill HOST:PORT[,...] --decode HOST:PORT[,...] [--port 50051]
//   moeserve router --model DIR --workers HOST:PORT[,...]            (aggregated workers)
//
// Worker addresses are their internal ports (`moeserve serve --role ... --internal-port`). DIR
// needs config.json and the tokenizer (and chat template) only: no weights are read.
#include <csignal>
#include <cstdio>
#include <sstream>

#include "cli/command.h"
#include "core/logging.h"
#include "router/router.h"

namespace moe::cli {
namespace {

struct RouterFlags {
    router::RouterOptions o;
    std::string prefill, decode, workers;
    double connect_timeout_seconds = 60;
    double drain_grace_seconds = 30;
};

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    std::string item;
    while (std::getline(in, item, ','))
        if (!item.empty()) out.push_back(item);
    return out;
}

int run_router(RouterFlags& f) {
    f.o.prefill = split_list(f.prefill);
    f.o.decode = split_list(f.decode);
    f.o.workers = split_list(f.workers);
    f.o.connect_timeout = std::chrono::milliseconds(static_cast<int64_t>(f.connect_timeout_seconds * 1000));
    // SIGTERM/SIGINT are taken by sigwait below: blocked before any thread starts, so every
    // thread inherits the mask and none is killed by them.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    StatusOr<std::unique_ptr<router::Router>> r = router::Router::start(f.o);
    if (!r.ok()) {
        std::fprintf(stderr, "moeserve router: %s\n", r.status().to_string().c_str());
        return 1;
    }
    std::printf("moeserve router listening on %s\n", (*r)->address().c_str());
    std::fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    log::get("router")->info("{}: draining (grace {} s)", sig == SIGTERM ? "SIGTERM" : "SIGINT", f.drain_grace_seconds);
    (*r)->shutdown(std::chrono::milliseconds(static_cast<int64_t>(f.drain_grace_seconds * 1000)));
    r->reset();
    return 0;
}

const Registrar kRegistrar("router", [](CLI::App& app, int& exit_code) {
    auto f = std::make_shared<RouterFlags>();
    CLI::App* cmd = app.add_subcommand(
        "router", "KV-aware router: the public API in front of prefill/decode (or aggregated) workers");
    cmd->add_option("--model", f->o.model_dir, "model directory: config.json + tokenizer (no weights needed)")
        ->required();
    cmd->add_option("--prefill", f->prefill, "prefill workers' internal addresses HOST:PORT[,...]");
    cmd->add_option("--decode", f->decode, "decode workers' internal addresses HOST:PORT[,...]");
    cmd->add_option("--workers", f->workers, "aggregated workers' internal addresses HOST:PORT[,...]");
    cmd->add_option("--host", f->o.host, "address to listen on")->capture_default_str();
    cmd->add_option("--port", f->o.port, "port to listen on (0: a free one)")->capture_default_str();
    cmd->add_option("--internal-secret", f->o.internal_secret, "shared secret for the workers' internal port")
        ->envname("MOE_INTERNAL_SECRET");
    cmd->add_option("--admin-token", f->o.admin_token, "admin bearer token (Drain, Abort of any request)")
        ->envname("MOESERVE_ADMIN_TOKEN");
    cmd->add_option("--served-model-name", f->o.served_model_name, "name in GetModelInfo (default: DIR's name)");
    cmd->add_option("--connect-timeout", f->connect_timeout_seconds,
                    "seconds to wait for every worker's Describe and first event snapshot")
        ->capture_default_str();
    cmd->add_option("--lease-seconds", f->o.lease_seconds, "handoff lease asked of prefill workers (0: theirs)");
    cmd->add_option("--max-message-bytes", f->o.max_message_bytes, "gRPC message limit")->capture_default_str();
    cmd->add_option("--max-prompt-bytes", f->o.max_prompt_bytes, "text prompt limit")->capture_default_str();
    cmd->add_option("--drain-grace-seconds", f->drain_grace_seconds, "SIGTERM: wait this long for requests")
        ->capture_default_str();
    cmd->callback([f, &exit_code] { exit_code = run_router(*f); });
});

}  // namespace
}  // namespace moe::cli
