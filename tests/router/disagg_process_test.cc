// Disaggregated serving end to end with real processes on 127.0.0.1: `moeserve serve --role
// prefill|decode|aggregated` workers (--threads 1, free ports) behind `moeserve router`, on the
// Hugging Face fixture models (tests/reference/fixtures), talked to with the public gRPC API.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "moe/v1/control.grpc.pb.h"
#include "moe/v1/inference.grpc.pb.h"
#include "process_util.h"

namespace moe::router::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr const char* kSecret = "e2e-secret";
constexpr auto kStartTimeout = seconds(120);  // a loaded 2-core machine

std::string fixture(const std::string& name) {
    return std::string(MOE_SOURCE_DIR) + "/tests/reference/fixtures/" + name;
}

struct Worker {
    std::unique_ptr<Process> proc;
    std::string public_addr, internal_addr;
    std::unique_ptr<v1::Control::Stub> control;
    std::unique_ptr<v1::Inference::Stub> inference;
};

std::unique_ptr<Worker> start_worker(const std::string& role, const std::string& model,
                                     std::vector<std::string> extra = {}, int block_size = 4) {
    auto w = std::make_unique<Worker>();
    std::vector<std::string> args = {MOESERVE_BIN,       "serve",
                                     "--model",          fixture(model),
                                     "--role",           role,
                                     "--host",           "127.0.0.1",
                                     "--port",           "0",
                                     "--threads",        "1",
                                     "--kv-cache-bytes", std::to_string(8 << 20),
                                     "--kv-block-size",  std::to_string(block_size)};
    const bool internal =
        role != "aggregated" || std::find(extra.begin(), extra.end(), "--internal-port") != extra.end();
    if (role != "aggregated") args.insert(args.end(), {"--internal-port", "0"});
    if (internal) args.insert(args.end(), {"--internal-secret", kSecret});
    args.insert(args.end(), extra.begin(), extra.end());
    w->proc = std::make_unique<Process>(args);
    auto pub = w->proc->wait_for(R"(moeserve listening on (\S+))", kStartTimeout);
    EXPECT_TRUE(pub) << "no listening line from the " << role << " worker:\n" << w->proc->output();
    if (!pub) return nullptr;
    w->public_addr = *pub;
    if (internal) {
        auto internal = w->proc->wait_for(R"(internal[^\n]*listening on (\S+))", kStartTimeout);
        EXPECT_TRUE(internal) << "no internal listening line from the " << role << " worker:\n" << w->proc->output();
        if (!internal) return nullptr;
        w->internal_addr = *internal;
    }
    auto ch = grpc::CreateChannel(w->public_addr, grpc::InsecureChannelCredentials());
    w->control = v1::Control::NewStub(ch);
    w->inference = v1::Inference::NewStub(ch);
    return w;
}

struct RouterProc {
    std::unique_ptr<Process> proc;
    std::string addr;
    std::unique_ptr<v1::Inference::Stub> inference;
    std::unique_ptr<v1::Control::Stub> control;
};

std::string join(const std::vector<Worker*>& ws) {
    std::string s;
    for (auto* w : ws) s += (s.empty() ? "" : ",") + w->internal_addr;
    return s;
}

// Aggregated workers (--workers) when `decode` is empty.
std::unique_ptr<RouterProc> start_router(const std::string& model, const std::vector<Worker*>& prefill,
                                         const std::vector<Worker*>& decode) {
    auto r = std::make_unique<RouterProc>();
    std::vector<std::string> args = {MOESERVE_BIN, "router", "--model", fixture(model)};
    if (decode.empty())
        args.insert(args.end(), {"--workers", join(prefill)});
    else
        args.insert(args.end(), {"--prefill", join(prefill), "--decode", join(decode)});
    args.insert(args.end(),
                {"--host", "127.0.0.1", "--port", "0", "--internal-secret", kSecret, "--connect-timeout", "120"});
    r->proc = std::make_unique<Process>(args);
    auto a = r->proc->wait_for(R"(moeserve router listening on (\S+))", kStartTimeout);
    EXPECT_TRUE(a) << "router did not start:\n" << r->proc->output();
    if (!a) return nullptr;
    r->addr = *a;
    auto ch = grpc::CreateChannel(r->addr, grpc::InsecureChannelCredentials());
    r->inference = v1::Inference::NewStub(ch);
    r->control = v1::Control::NewStub(ch);
    return r;
}

v1::GenerateRequest request_of(const std::vector<int32_t>& ids, int max_tokens) {
    v1::GenerateRequest r;
    for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
    r.mutable_stopping()->set_max_tokens(max_tokens);
    r.mutable_stopping()->set_ignore_eos(true);
    r.mutable_sampling()->set_temperature(0.0f);
    return r;
}

struct Outcome {
    std::vector<int32_t> tokens;
    grpc::Status status;
    int64_t cached_prompt_tokens = -1;
};

Outcome generate(v1::Inference::Stub& stub, const v1::GenerateRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(120));
    Outcome o;
    auto reader = stub.Generate(&ctx, req);
    v1::GenerateResponse m;
    while (reader->Read(&m)) {
        if (m.has_delta()) o.tokens.insert(o.tokens.end(), m.delta().token_ids().begin(), m.delta().token_ids().end());
        if (m.has_final()) o.cached_prompt_tokens = m.final().usage().cached_prompt_tokens();
    }
    o.status = reader->Finish();
    return o;
}

// `moeserve run`'s greedy tokens for one prompt.
std::vector<int32_t> run_reference(const std::string& model, const std::vector<int32_t>& ids, int max_tokens) {
    std::string list;
    for (int32_t id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
    Process p({MOESERVE_BIN, "run", "--model", fixture(model), "--prompt-ids", list, "--max-tokens",
               std::to_string(max_tokens), "--ignore-eos", "--threads", "1", "--kv-block-size", "4", "--json"});
    auto line = p.wait_for(R"((\{"decode_tokens_per_second[^\n]*\}))", kStartTimeout);
    EXPECT_TRUE(line) << p.output();
    if (!line) return {};
    return nlohmann::json::parse(*line).at("ids").get<std::vector<int32_t>>();
}

v1::Load load_of(v1::Control::Stub& control) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(30));
    v1::Load l;
    EXPECT_TRUE(control.GetLoad(&ctx, v1::GetLoadRequest(), &l).ok());
    return l;
}

// Waits until the worker's KV pool is idle (every block allocatable) and nothing is pending.
bool wait_idle(v1::Control::Stub& control, seconds timeout = seconds(60)) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
        const v1::Load l = load_of(control);
        if (l.kv_blocks_total() > 0 && l.kv_blocks_free() == l.kv_blocks_total() && l.num_pending() == 0 &&
            l.num_running() == 0)
            return true;
        std::this_thread::sleep_for(milliseconds(20));
    }
    return false;
}

// The worker roles come from `moeserve serve --role` (issue 21's worker side); a build without
// them skips these tests visibly rather than failing on a flag it does not know.
bool roles_built() {
    static const bool built = [] {
        Process help({MOESERVE_BIN, "serve", "--help"});
        help.wait_exit(kStartTimeout);
        return help.output().find("--role") != std::string::npos &&
               help.output().find("--internal-port") != std::string::npos;
    }();
    return built;
}
#define SKIP_WITHOUT_ROLES() \
    if (!roles_built()) GTEST_SKIP() << "moeserve serve has no --role/--internal-port in this build"

const std::vector<int32_t> kPrompt = {11, 22, 33, 44, 55, 66, 77, 88, 99, 100, 111, 122, 133};

class Disagg : public ::testing::Test {
protected:
    void SetUp() override {
        SKIP_WITHOUT_ROLES();
        p_ = start_worker("prefill", "qwen3_moe");
        ASSERT_TRUE(p_);
        d_ = start_worker("decode", "qwen3_moe");
        ASSERT_TRUE(d_);
        r_ = start_router("qwen3_moe", {p_.get()}, {d_.get()});
        ASSERT_TRUE(r_);
    }
    std::unique_ptr<Worker> p_, d_;
    std::unique_ptr<RouterProc> r_;
};

TEST_F(Disagg, GreedyTokensEqualMoeserveRun) {
    const std::vector<int32_t> want = run_reference("qwen3_moe", kPrompt, 12);
    ASSERT_EQ(want.size(), 12u);
    const Outcome o = generate(*r_->inference, request_of(kPrompt, 12));
    ASSERT_TRUE(o.status.ok()) << o.status.error_message() << "\nprefill:\n"
                               << p_->proc->output() << "\ndecode:\n"
                               << d_->proc->output();
    EXPECT_EQ(o.tokens, want);
    // max_tokens 1: ends on the prefill worker.
    const Outcome one = generate(*r_->inference, request_of(kPrompt, 1));
    ASSERT_TRUE(one.status.ok()) << one.status.error_message();
    EXPECT_EQ(one.tokens, std::vector<int32_t>{want[0]});
    EXPECT_TRUE(wait_idle(*p_->control));
    EXPECT_TRUE(wait_idle(*d_->control));
}

TEST_F(Disagg, SameSeedSameTokensAsAggregated) {
    auto agg = start_worker("aggregated", "qwen3_moe");
    ASSERT_TRUE(agg);
    auto req = request_of(kPrompt, 10);
    req.mutable_sampling()->set_temperature(1.0f);
    req.mutable_sampling()->set_top_p(0.9f);
    req.mutable_sampling()->set_seed(1234);
    const Outcome a = generate(*agg->inference, req);
    ASSERT_TRUE(a.status.ok()) << a.status.error_message();
    const Outcome b = generate(*r_->inference, req);
    ASSERT_TRUE(b.status.ok()) << b.status.error_message();
    EXPECT_EQ(a.tokens, b.tokens);
    req.mutable_sampling()->set_seed(99);
    const Outcome c = generate(*r_->inference, req);
    ASSERT_TRUE(c.status.ok());
    EXPECT_EQ(c.tokens.size(), 10u);
}

TEST_F(Disagg, ThreeConcurrentRequests) {
    std::vector<std::vector<int32_t>> prompts = {
        kPrompt, {5, 6, 7, 8, 9}, {200, 201, 202, 203, 204, 205, 206, 207, 208}};
    std::vector<std::vector<int32_t>> want;
    for (const auto& p : prompts) want.push_back(generate(*r_->inference, request_of(p, 8)).tokens);
    std::vector<Outcome> got(3);
    std::vector<std::thread> ts;
    for (int i = 0; i < 3; ++i)
        ts.emplace_back([&, i] {
            got[static_cast<size_t>(i)] = generate(*r_->inference, request_of(prompts[static_cast<size_t>(i)], 8));
        });
    for (auto& t : ts) t.join();
    for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(got[static_cast<size_t>(i)].status.ok()) << got[static_cast<size_t>(i)].status.error_message();
        EXPECT_EQ(got[static_cast<size_t>(i)].tokens, want[static_cast<size_t>(i)]) << "request " << i;
        EXPECT_EQ(want[static_cast<size_t>(i)].size(), 8u);
    }
}

TEST_F(Disagg, DecodeWorkerKilledMidStreamEndsUnavailable) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(120));
    auto req = request_of(kPrompt, 256 - static_cast<int>(kPrompt.size()));
    req.mutable_output()->set_stream_interval(1);
    auto reader = r_->inference->Generate(&ctx, req);
    v1::GenerateResponse m;
    ASSERT_TRUE(reader->Read(&m));
    d_->proc->kill_now();
    const auto t0 = std::chrono::steady_clock::now();
    bool final_seen = false;
    while (reader->Read(&m))
        if (m.has_final()) final_seen = true;
    const grpc::Status s = reader->Finish();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(30));
    EXPECT_FALSE(final_seen);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
    // The prefill worker's handoff was released: its pool is idle.
    EXPECT_TRUE(wait_idle(*p_->control));
}

TEST_F(Disagg, CancelDuringTheHandoffLeavesBothWorkersIdle) {
    const v1::Load p0 = load_of(*p_->control), d0 = load_of(*d_->control);
    for (int delay_ms : {0, 2, 5, 10, 20, 40}) {
        grpc::ClientContext ctx;
        auto reader = r_->inference->Generate(&ctx, request_of(kPrompt, 64));
        std::this_thread::sleep_for(milliseconds(delay_ms));
        ctx.TryCancel();
        v1::GenerateResponse m;
        while (reader->Read(&m)) {
        }
        reader->Finish();
    }
    EXPECT_TRUE(wait_idle(*p_->control)) << load_of(*p_->control).DebugString();
    EXPECT_TRUE(wait_idle(*d_->control)) << load_of(*d_->control).DebugString();
    EXPECT_EQ(load_of(*p_->control).kv_blocks_free(), p0.kv_blocks_free());
    EXPECT_EQ(load_of(*d_->control).kv_blocks_free(), d0.kv_blocks_free());
    // And the pair still serves.
    EXPECT_TRUE(generate(*r_->inference, request_of(kPrompt, 4)).status.ok());
}

// `moeserve bench` through the router: Poisson arrivals, and goodput under an SLO that every
// request meets and one that none can.
TEST_F(Disagg, BenchReportsGoodputUnderAnSlo) {
    const std::string out = ::testing::TempDir() + "router_bench_" + std::to_string(getpid()) + ".json";
    auto run_bench = [&](const std::string& slo_ttft) {
        Process b({MOESERVE_BIN,  "bench", "--server",     r_->addr, "--num-requests", "4", "--request-rate", "20",
                   "--input-len", "8",     "--output-len", "4",      "--seed",         "3", "--slo-ttft",     slo_ttft,
                   "--slo-itl",   "60",    "--output",     out});
        EXPECT_EQ(b.wait_exit(kStartTimeout), 0) << b.output();
        std::ifstream in(out);
        return nlohmann::json::parse(in);
    };
    nlohmann::json all = run_bench("60");
    EXPECT_EQ(all["summary"]["completed"], 4);
    EXPECT_EQ(all["summary"]["slo_met"], 4);
    EXPECT_NEAR(all["summary"]["goodput_requests_per_second"].get<double>(),
                all["summary"]["request_throughput"].get<double>(), 1e-9);
    nlohmann::json none = run_bench("0.000000001");
    EXPECT_EQ(none["summary"]["slo_met"], 0);
    EXPECT_EQ(none["summary"]["goodput_requests_per_second"].get<double>(), 0.0);
    EXPECT_EQ(none["config"]["slo_ttft"].get<double>(), 1e-9);
    std::remove(out.c_str());
}

TEST(DisaggRouting, CachedPrefixGoesToTheWorkerHoldingIt) {
    SKIP_WITHOUT_ROLES();
    auto p0 = start_worker("prefill", "qwen3_moe");
    ASSERT_TRUE(p0);
    auto p1 = start_worker("prefill", "qwen3_moe");
    ASSERT_TRUE(p1);
    auto d = start_worker("decode", "qwen3_moe");
    ASSERT_TRUE(d);
    {
        // Warm p1's prefix cache through a router that knows p1 only.
        auto only1 = start_router("qwen3_moe", {p1.get()}, {d.get()});
        ASSERT_TRUE(only1);
        ASSERT_TRUE(generate(*only1->inference, request_of(kPrompt, 2)).status.ok());
    }
    auto r = start_router("qwen3_moe", {p0.get(), p1.get()}, {d.get()});
    ASSERT_TRUE(r);
    const int64_t steps0 = load_of(*p0->control).num_steps();
    const int64_t steps1 = load_of(*p1->control).num_steps();
    // Idle and equal, p0 would win the tie; p1 holds the prompt's prefix.
    const Outcome o = generate(*r->inference, request_of(kPrompt, 3));
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ(load_of(*p0->control).num_steps(), steps0);
    EXPECT_GT(load_of(*p1->control).num_steps(), steps1);
    EXPECT_GT(o.cached_prompt_tokens, 0);
    // Another prompt goes to p0 (the tie).
    ASSERT_TRUE(generate(*r->inference, request_of({3, 1, 4, 1, 5, 9, 2, 6}, 3)).status.ok());
    EXPECT_GT(load_of(*p0->control).num_steps(), steps0);
}

TEST(DisaggRouting, AggregatedWorkersBehindTheRouter) {
    SKIP_WITHOUT_ROLES();
    auto a0 = start_worker("aggregated", "qwen3_moe", {"--internal-port", "0"});
    ASSERT_TRUE(a0);
    auto a1 = start_worker("aggregated", "qwen3_moe", {"--internal-port", "0"});
    ASSERT_TRUE(a1);
    auto r = start_router("qwen3_moe", {a0.get(), a1.get()}, {});
    ASSERT_TRUE(r);
    const Outcome direct = generate(*a1->inference, request_of(kPrompt, 6));
    ASSERT_TRUE(direct.status.ok()) << direct.status.error_message();
    // a1 holds the prompt's prefix now: the router sends the prompt there.
    const int64_t steps0 = load_of(*a0->control).num_steps();
    const Outcome o = generate(*r->inference, request_of(kPrompt, 6));
    ASSERT_TRUE(o.status.ok()) << o.status.error_message() << "\n" << r->proc->output();
    EXPECT_EQ(o.tokens, direct.tokens);
    EXPECT_GT(o.cached_prompt_tokens, 0);
    EXPECT_EQ(load_of(*a0->control).num_steps(), steps0);
    // The router's GetLoad lists both workers.
    const v1::Load l = load_of(*r->control);
    ASSERT_EQ(l.workers_size(), 2);
    EXPECT_EQ(l.workers(0).role(), "aggregated");
    EXPECT_TRUE(l.workers(0).healthy());
    EXPECT_EQ(l.kv_blocks_total(), l.workers(0).load().kv_blocks_total() + l.workers(1).load().kv_blocks_total());
}

TEST(DisaggRouting, KilledPrefillWorkerIsRetriedElsewhere) {
    SKIP_WITHOUT_ROLES();
    auto p0 = start_worker("prefill", "qwen3_moe");
    ASSERT_TRUE(p0);
    auto p1 = start_worker("prefill", "qwen3_moe");
    ASSERT_TRUE(p1);
    auto d = start_worker("decode", "qwen3_moe");
    ASSERT_TRUE(d);
    auto r = start_router("qwen3_moe", {p0.get(), p1.get()}, {d.get()});
    ASSERT_TRUE(r);
    const std::vector<int32_t> want = generate(*r->inference, request_of(kPrompt, 6)).tokens;
    ASSERT_EQ(want.size(), 6u);
    // Killed with no warning: the router either sees the event stream break first or the prefill
    // call fail and retries on p1; the client sees neither.
    p0->proc->kill_now();
    for (int i = 0; i < 3; ++i) {
        const Outcome o = generate(*r->inference, request_of(kPrompt, 6));
        ASSERT_TRUE(o.status.ok()) << o.status.error_message() << "\n" << r->proc->output();
        EXPECT_EQ(o.tokens, want);
    }
}

TEST(DisaggRouting, WorkerOfAnotherModelOrBlockSizeIsRefused) {
    SKIP_WITHOUT_ROLES();
    auto p = start_worker("prefill", "qwen3_moe");
    ASSERT_TRUE(p);
    auto d_other = start_worker("decode", "qwen3_moe", {}, 8);
    ASSERT_TRUE(d_other);
    {
        Process r({MOESERVE_BIN, "router", "--model", fixture("qwen3_moe"), "--prefill", p->internal_addr, "--decode",
                   d_other->internal_addr, "--port", "0", "--internal-secret", kSecret, "--connect-timeout", "60"});
        EXPECT_NE(r.wait_exit(kStartTimeout), 0);
        EXPECT_NE(r.output().find("block_size"), std::string::npos) << r.output();
    }
    auto mixtral = start_worker("decode", "mixtral");
    ASSERT_TRUE(mixtral);
    Process r({MOESERVE_BIN, "router", "--model", fixture("qwen3_moe"), "--prefill", p->internal_addr, "--decode",
               mixtral->internal_addr, "--port", "0", "--internal-secret", kSecret, "--connect-timeout", "60"});
    EXPECT_NE(r.wait_exit(kStartTimeout), 0);
    EXPECT_NE(r.output().find("different model"), std::string::npos) << r.output();
}

}  // namespace
}  // namespace moe::router::testing
