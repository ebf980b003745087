// moeserve metrics: print a running server's Prometheus metrics (Control.GetMetrics), the same
// text GET /metrics serves over HTTP, for an operator or a script without the HTTP API.
//
//   moeserve metrics --server 127.0.0.1:50051 [--timeout 10] [--tls-ca ca.pem]
//
// Exit code 0 with the exposition on stdout; 1 with the gRPC status on stderr.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "cli/command.h"
#include "cli/grpc_client_util.h"
#include "moe/v1/control.grpc.pb.h"

namespace moe::cli {
namespace {

struct MetricsFlags {
    std::string server = "127.0.0.1:50051";
    double timeout_seconds = 10;
    std::string tls_ca, tls_cert, tls_key;
};

int print_metrics(const MetricsFlags& f) {
    StatusOr<std::shared_ptr<grpc::Channel>> channel =
        make_channel(f.server, {.tls_ca = f.tls_ca, .tls_cert = f.tls_cert, .tls_key = f.tls_key});
    if (!channel.ok()) {
        std::fprintf(stderr, "moeserve metrics: %s\n", channel.status().message().c_str());
        return 2;
    }
    auto stub = v1::Control::NewStub(*channel);
    grpc::ClientContext ctx;
    if (f.timeout_seconds > 0)
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(f.timeout_seconds * 1e6)));
    v1::MetricsText out;
    const grpc::Status s = stub->GetMetrics(&ctx, v1::GetMetricsRequest(), &out);
    if (!s.ok()) {
        std::fprintf(stderr, "moeserve metrics: %s\n", grpc_status_string(s).c_str());
        return 1;
    }
    std::fwrite(out.text().data(), 1, out.text().size(), stdout);
    return 0;
}

const Registrar kRegistrar("metrics", [](CLI::App& app, int& exit_code) {
    auto f = std::make_shared<MetricsFlags>();
    CLI::App* cmd =
        app.add_subcommand("metrics", "Print a running server's Prometheus metrics (text format 0.0.4) to stdout");
    cmd->add_option("--server", f->server, "server address HOST:PORT")
        ->capture_default_str()
        ->envname("MOESERVE_SERVER");
    cmd->add_option("--timeout", f->timeout_seconds, "deadline in seconds (0: none)")->capture_default_str();
    cmd->add_option("--tls-ca", f->tls_ca, "PEM CA bundle: connect over TLS, trusting it")->envname("MOESERVE_TLS_CA");
    cmd->add_option("--tls-cert", f->tls_cert, "PEM client certificate (mTLS; with --tls-key)")
        ->envname("MOESERVE_TLS_CLIENT_CERT");
    cmd->add_option("--tls-key", f->tls_key, "PEM client key for --tls-cert")->envname("MOESERVE_TLS_CLIENT_KEY");
    cmd->callback([f, &exit_code] { exit_code = print_metrics(*f); });
});

}  // namespace
}  // namespace moe::cli
