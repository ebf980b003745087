// The server's call counter (grpc_server_handled_total) and the engine's metrics after calls
// through the real gRPC server: what a Prometheus scrape of this process would read.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/metrics.h"
#include "metrics/exposition_parser.h"
#include "server_harness.h"

namespace moe::server::testing {
namespace {

using metrics::testing::Exposition;
using metrics::testing::parse_exposition;

std::map<std::string, std::string> call(const char* service, const char* method, const char* type, const char* code) {
    return {{"grpc_type", type}, {"grpc_service", service}, {"grpc_method", method}, {"grpc_code", code}};
}

TEST(ServerMetrics, EveryCallIsCountedByItsStatusAndRequestsReachTheEngineMetrics) {
    auto h = Harness::start("");
    ASSERT_NE(h, nullptr);
    // Two good calls and one refused by validation (max_tokens 0); GetLoad calls (below) for the
    // unary path.
    for (int i = 0; i < 2; ++i) {
        const StreamResult r = collect(*h->inference, greedy_ids({1, 2, 3}, 4));
        ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    }
    v1::GenerateRequest bad = greedy_ids({1, 2, 3}, 4);
    bad.mutable_stopping()->set_max_tokens(0);
    EXPECT_EQ(collect(*h->inference, bad).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    ASSERT_TRUE(h->wait_kv_idle(std::chrono::seconds(10)));

    auto parsed = parse_exposition(metrics::render_text(h->engine->metrics()));
    ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
    const Exposition& e = *parsed;
    EXPECT_EQ(e.value("grpc_server_handled_total", call("moe.v1.Inference", "Generate", "server_stream", "OK")), 2);
    EXPECT_EQ(
        e.value("grpc_server_handled_total", call("moe.v1.Inference", "Generate", "server_stream", "InvalidArgument")),
        1);
    // wait_kv_idle() called GetLoad at least once, every call OK.
    EXPECT_GE(e.value("grpc_server_handled_total", call("moe.v1.Control", "GetLoad", "unary", "OK")), 1);
    EXPECT_EQ(e.sum("grpc_server_handled_total", {{"grpc_method", "GetLoad"}}),
              e.value("grpc_server_handled_total", call("moe.v1.Control", "GetLoad", "unary", "OK")));
    // The engine saw the two requests, not the refused one.
    EXPECT_EQ(e.sum("vllm:request_success_total", {{"finished_reason", "length"}}), 2);
    EXPECT_EQ(e.sum("vllm:generation_tokens_total"), 8);
    EXPECT_EQ(e.sum("vllm:prompt_tokens_total"), 6);

    // The same registry over gRPC (Control.GetMetrics): strict text, the same engine counters,
    // and the call itself counted.
    grpc::ClientContext ctx;
    v1::MetricsText text;
    ASSERT_TRUE(h->control->GetMetrics(&ctx, v1::GetMetricsRequest(), &text).ok());
    EXPECT_EQ(text.content_type(), metrics::kTextContentType);
    auto remote = parse_exposition(text.text());
    ASSERT_TRUE(remote.ok()) << remote.status().to_string();
    EXPECT_EQ(remote->sum("vllm:generation_tokens_total"), 8);
    auto after = parse_exposition(metrics::render_text(h->engine->metrics()));
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after->value("grpc_server_handled_total", call("moe.v1.Control", "GetMetrics", "unary", "OK")), 1);
}

// Every metric the Grafana dashboard (deploy/grafana) queries is one this server exposes, so the
// dashboard cannot drift from the names.
TEST(ServerMetrics, TheDashboardQueriesOnlyMetricsTheServerExposes) {
    auto h = Harness::start("");
    ASSERT_NE(h, nullptr);
    auto parsed = parse_exposition(metrics::render_text(h->engine->metrics()));
    ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
    std::ifstream in(std::string(MOE_SOURCE_DIR) + "/deploy/grafana/moeserve-dashboard.json");
    ASSERT_TRUE(in.good());
    const auto dash = nlohmann::json::parse(in);
    const std::regex name_re("(vllm:|moe:)[a-zA-Z0-9_:]+|grpc_server_handled_total");
    int checked = 0;
    for (const auto& panel : dash.at("panels"))
        for (const auto& target : panel.at("targets")) {
            const std::string expr = target.at("expr").get<std::string>();
            for (std::sregex_iterator it(expr.begin(), expr.end(), name_re), end; it != end; ++it) {
                std::string name = it->str();
                for (const char* suffix : {"_bucket", "_sum", "_count"}) {
                    const std::string suf(suffix);
                    if (name.size() > suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0 &&
                        parsed->type.count(name.substr(0, name.size() - suf.size())))
                        name = name.substr(0, name.size() - suf.size());
                }
                EXPECT_TRUE(parsed->type.count(name)) << "panel \"" << panel.at("title").get<std::string>()
                                                      << "\" queries " << name << ", which the server does not expose";
                ++checked;
            }
        }
    EXPECT_GT(checked, 20);
}

}  // namespace
}  // namespace moe::server::testing
