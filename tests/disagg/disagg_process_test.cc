// `moeserve serve --role prefill|decode` as real processes on 127.0.0.1 (free ports, --threads
// 1), driven through the generated moe.v1.Worker stubs the way a router drives them:
// P.Prefill, then D.Decode with P's result; D pulls the KV from P over UCX and releases it.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "disagg/kv_transport.h"
#include "moe/v1/worker.grpc.pb.h"

namespace moe {
namespace {

using namespace std::chrono_literals;

constexpr const char* kSecret = "test-secret-7f3a";

std::string fixture(const std::string& name) {
    return std::string(MOE_SOURCE_DIR) + "/tests/reference/fixtures/" + name;
}

// One `moeserve serve` child: its addresses from the lines it prints, its stderr in a file.
class Worker {
public:
    Worker(const std::string& role, std::vector<std::string> extra = {}) {
        log_path_ = ::testing::TempDir() + "moeserve_" + role + "_" + std::to_string(getpid()) + "_" +
                    std::to_string(counter_++) + ".log";
        int out[2];
        if (pipe(out) != 0) return;
        std::vector<std::string> args = {MOESERVE_BIN,
                                         "serve",
                                         "--model",
                                         fixture("qwen3_moe"),
                                         "--port",
                                         "0",
                                         "--internal-port",
                                         "0",
                                         "--role",
                                         role,
                                         "--threads",
                                         "1",
                                         "--kv-cache-bytes",
                                         std::to_string(2 << 20),
                                         "--kv-block-size",
                                         "4",
                                         "--drain-grace-seconds",
                                         "1"};
        args.insert(args.end(), extra.begin(), extra.end());
        pid_ = fork();
        if (pid_ == 0) {
            dup2(out[1], 1);
            const int err = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (err >= 0) dup2(err, 2);
            close(out[0]);
            setenv("MOE_INTERNAL_SECRET", kSecret, 1);
            setenv("OMP_NUM_THREADS", "1", 1);
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            execv(argv[0], argv.data());
            _exit(127);
        }
        close(out[1]);
        out_ = out[0];
        // Both addresses, within a generous bound (a loaded machine loads the model slowly).
        std::string buf;
        const auto end = std::chrono::steady_clock::now() + 120s;
        const std::regex pub("moeserve listening on (\\S+)"), internal("moeserve internal listening on (\\S+)");
        while (std::chrono::steady_clock::now() < end && (public_.empty() || internal_.empty())) {
            pollfd p{out_, POLLIN, 0};
            if (poll(&p, 1, 200) <= 0) continue;
            char chunk[512];
            const ssize_t n = read(out_, chunk, sizeof(chunk));
            if (n <= 0) break;
            buf.append(chunk, static_cast<size_t>(n));
            std::smatch m;
            if (public_.empty() && std::regex_search(buf, m, pub)) public_ = m[1];
            if (internal_.empty() && std::regex_search(buf, m, internal)) internal_ = m[1];
        }
    }
    ~Worker() { kill_now(); }
    void kill_now() {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
            pid_ = -1;
        }
        if (out_ >= 0) close(out_);
        out_ = -1;
    }
    bool ok() const { return !internal_.empty(); }
    const std::string& internal() const { return internal_; }
    std::string log() const {
        std::ifstream in(log_path_);
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    std::unique_ptr<v1::Worker::Stub> stub() const {
        return v1::Worker::NewStub(grpc::CreateChannel(internal_, grpc::InsecureChannelCredentials()));
    }

private:
    static inline int counter_ = 0;
    pid_t pid_ = -1;
    int out_ = -1;
    std::string log_path_, public_, internal_;
};

void auth(grpc::ClientContext& ctx, const std::string& secret = kSecret) {
    ctx.AddMetadata("authorization", "Bearer " + secret);
    ctx.set_deadline(std::chrono::system_clock::now() + 60s);
}

v1::GenerateRequest greedy_request(const std::vector<int32_t>& prompt, int max_tokens) {
    v1::GenerateRequest r;
    r.mutable_token_ids()->mutable_ids()->Assign(prompt.begin(), prompt.end());
    r.mutable_sampling()->set_temperature(0.0f);
    r.mutable_stopping()->set_max_tokens(max_tokens);
    r.mutable_stopping()->set_ignore_eos(true);
    return r;
}

struct DecodeOutcome {
    grpc::Status status;
    std::vector<int32_t> tokens;
    std::optional<v1::Final> final;
};

DecodeOutcome decode(v1::Worker::Stub& d, const v1::GenerateRequest& request, const v1::PrefillResult& prefill,
                     const std::string& prefill_worker, const std::string& secret = kSecret,
                     std::function<void()> after_first = nullptr) {
    grpc::ClientContext ctx;
    auth(ctx, secret);
    v1::DecodeRequest req;
    *req.mutable_request() = request;
    *req.mutable_prefill() = prefill;
    req.set_prefill_worker(prefill_worker);
    auto reader = d.Decode(&ctx, req);
    DecodeOutcome out;
    v1::GenerateResponse msg;
    bool first = true;
    while (reader->Read(&msg)) {
        if (msg.has_delta())
            out.tokens.insert(out.tokens.end(), msg.delta().token_ids().begin(), msg.delta().token_ids().end());
        if (msg.has_final()) out.final = msg.final();
        if (first && after_first) after_first();
        first = false;
    }
    out.status = reader->Finish();
    return out;
}

std::vector<int32_t> moeserve_run(const std::vector<int32_t>& prompt, int max_tokens) {
    std::string ids;
    for (size_t i = 0; i < prompt.size(); ++i) ids += (i ? "," : "") + std::to_string(prompt[i]);
    const std::string cmd = std::string(MOESERVE_BIN) + " run --model " + fixture("qwen3_moe") + " --prompt-ids " +
                            ids + " --max-tokens " + std::to_string(max_tokens) +
                            " --ignore-eos --threads 1 --json --log-level warn 2>/dev/null";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    pclose(p);
    return nlohmann::json::parse(out.substr(0, out.find('\n')))["ids"].get<std::vector<int32_t>>();
}

std::vector<std::vector<int32_t>> prompts() {
    std::ifstream in(fixture("qwen3_moe") + "/reference.json");
    return nlohmann::json::parse(in)["prompts"].get<std::vector<std::vector<int32_t>>>();
}

int64_t free_blocks(v1::Worker::Stub& w) {
    grpc::ClientContext ctx;
    auth(ctx);
    v1::WorkerInfo info;
    EXPECT_TRUE(w.Describe(&ctx, v1::DescribeRequest{}, &info).ok());
    return info.kv_blocks_free();
}

template <class F>
bool eventually(F f, std::chrono::milliseconds timeout = 20s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
        if (f()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return f();
}

class DisaggProcessTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!disagg::ucx_available()) GTEST_SKIP() << "built without UCX (MOE_UCX): no cross-process KV transport";
    }
};

v1::PrefillResult prefill(v1::Worker::Stub& p, const v1::GenerateRequest& request, const std::string& handoff_id,
                          double lease_seconds = 0, grpc::Status* status_out = nullptr) {
    grpc::ClientContext ctx;
    auth(ctx);
    v1::PrefillRequest req;
    *req.mutable_request() = request;
    req.set_handoff_id(handoff_id);
    req.set_lease_seconds(lease_seconds);
    v1::PrefillResult result;
    grpc::Status s = p.Prefill(&ctx, req, &result);
    if (status_out) *status_out = s;
    EXPECT_TRUE(s.ok() || status_out) << s.error_message();
    return result;
}

TEST_F(DisaggProcessTest, PrefillThenDecodeGivesTheTokensOfMoeserveRun) {
    Worker pw("prefill"), dw("decode");
    ASSERT_TRUE(pw.ok()) << pw.log();
    ASSERT_TRUE(dw.ok()) << dw.log();
    auto p = pw.stub();
    auto d = dw.stub();
    const int64_t idle_p = free_blocks(*p), idle_d = free_blocks(*d);
    {
        grpc::ClientContext ctx;
        auth(ctx);
        v1::WorkerInfo info;
        ASSERT_TRUE(p->Describe(&ctx, v1::DescribeRequest{}, &info).ok());
        EXPECT_EQ(info.role(), v1::WORKER_ROLE_PREFILL);
        EXPECT_EQ(info.model().num_layers(), 3);
        EXPECT_EQ(info.model().block_size(), 4);
        EXPECT_EQ(info.model().weights_fingerprint().size(), 64u);
        EXPECT_EQ(info.kv_transports(0), "ucx");
    }
    const auto all = prompts();
    for (size_t i = 0; i < all.size(); ++i) {
        const auto request = greedy_request(all[i], 16);
        v1::PrefillResult result = prefill(*p, request, "h" + std::to_string(i));
        ASSERT_FALSE(result.finished());
        EXPECT_EQ(result.kv().transport(), "ucx");
        EXPECT_EQ(result.kv().block_ids_size(), static_cast<int>((all[i].size() + 3) / 4));
        DecodeOutcome out = decode(*d, request, result, pw.internal());
        ASSERT_TRUE(out.status.ok()) << out.status.error_message() << "\n" << dw.log();
        ASSERT_TRUE(out.final.has_value());
        EXPECT_EQ(out.final->finish_reason(), v1::FINISH_REASON_LENGTH) << out.final->error();
        EXPECT_EQ(out.tokens, moeserve_run(all[i], 16)) << "prompt " << i;
    }
    // Leases released, decode sequences finished: both pools back to idle.
    EXPECT_TRUE(eventually([&] { return free_blocks(*p) == idle_p; }));
    EXPECT_TRUE(eventually([&] { return free_blocks(*d) == idle_d; }));
}

TEST_F(DisaggProcessTest, AWrongSecretIsRefused) {
    Worker pw("prefill");
    ASSERT_TRUE(pw.ok()) << pw.log();
    auto p = pw.stub();
    {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + 30s);
        v1::WorkerInfo info;
        EXPECT_EQ(p->Describe(&ctx, v1::DescribeRequest{}, &info).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    }
    {
        grpc::ClientContext ctx;
        auth(ctx, "not-the-secret");
        v1::WorkerInfo info;
        EXPECT_EQ(p->Describe(&ctx, v1::DescribeRequest{}, &info).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    }
    {
        grpc::ClientContext ctx;
        auth(ctx, "not-the-secret");
        v1::PrefillRequest req;
        *req.mutable_request() = greedy_request({1, 2, 3}, 4);
        req.set_handoff_id("x");
        v1::PrefillResult result;
        EXPECT_EQ(p->Prefill(&ctx, req, &result).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    }
    // A decode on the prefill worker: wrong role.
    v1::PrefillResult result = prefill(*p, greedy_request({1, 2, 3, 4, 5}, 4), "h-role");
    DecodeOutcome out = decode(*p, greedy_request({1, 2, 3, 4, 5}, 4), result, pw.internal());
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << out.status.error_message();
}

TEST_F(DisaggProcessTest, ALyingPrefillResultIsRefusedAndBothWorkersKeepServing) {
    Worker pw("prefill"), dw("decode");
    ASSERT_TRUE(pw.ok()) << pw.log();
    ASSERT_TRUE(dw.ok()) << dw.log();
    auto p = pw.stub();
    auto d = dw.stub();
    const int64_t idle_p = free_blocks(*p), idle_d = free_blocks(*d);
    const auto all = prompts();
    const auto request = greedy_request(all[2], 8);
    struct Lie {
        const char* expect;
        grpc::StatusCode code;  // OK: the stream's final carries the error
        std::function<void(v1::PrefillResult&)> edit;
    };
    const std::vector<Lie> lies = {
        {"kv.block_ids", grpc::StatusCode::OK, [](v1::PrefillResult& r) { r.mutable_kv()->set_block_ids(0, 1 << 20); }},
        {"kv.region_bytes", grpc::StatusCode::OK,
         [](v1::PrefillResult& r) { r.mutable_kv()->set_region_bytes(r.kv().region_bytes() + 8); }},
        {"kv.num_blocks", grpc::StatusCode::OK, [](v1::PrefillResult& r) { r.mutable_kv()->set_num_blocks(-1); }},
        {"kv.region_keys", grpc::StatusCode::OK,
         [](v1::PrefillResult& r) { r.mutable_kv()->mutable_region_keys()->RemoveLast(); }},
        {"prefill.model.num_layers", grpc::StatusCode::FAILED_PRECONDITION,
         [](v1::PrefillResult& r) { r.mutable_model()->set_num_layers(61); }},
        {"prefill.model.kv_dtype", grpc::StatusCode::FAILED_PRECONDITION,
         [](v1::PrefillResult& r) { r.mutable_model()->set_kv_dtype("bf16"); }},
        {"KV blocks", grpc::StatusCode::INVALID_ARGUMENT,
         [](v1::PrefillResult& r) { r.mutable_kv()->add_block_ids(0); }},
    };
    int n = 0;
    for (const Lie& lie : lies) {
        v1::PrefillResult result = prefill(*p, request, "lie" + std::to_string(n++));
        ASSERT_FALSE(result.finished());
        lie.edit(result);
        DecodeOutcome out = decode(*d, request, result, pw.internal());
        if (lie.code == grpc::StatusCode::OK) {
            ASSERT_TRUE(out.final.has_value()) << lie.expect << ": " << out.status.error_message();
            EXPECT_EQ(out.final->finish_reason(), v1::FINISH_REASON_ERROR) << lie.expect;
            EXPECT_NE(out.final->error().find(lie.expect), std::string::npos) << out.final->error();
        } else {
            EXPECT_EQ(out.status.error_code(), lie.code) << lie.expect << ": " << out.status.error_message();
            EXPECT_NE(out.status.error_message().find(lie.expect), std::string::npos) << out.status.error_message();
            // Refused before anything was admitted: the router releases the lease.
            grpc::ClientContext ctx;
            auth(ctx);
            v1::ReleaseHandoffRequest rel;
            rel.set_handoff_id(result.handoff_id());
            v1::ReleaseHandoffResponse resp;
            EXPECT_TRUE(p->ReleaseHandoff(&ctx, rel, &resp).ok());
        }
    }
    // Both still serve, and nothing leaked.
    v1::PrefillResult result = prefill(*p, request, "honest");
    DecodeOutcome out = decode(*d, request, result, pw.internal());
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    EXPECT_EQ(out.tokens, moeserve_run(all[2], 8));
    EXPECT_TRUE(eventually([&] { return free_blocks(*p) == idle_p; }));
    EXPECT_TRUE(eventually([&] { return free_blocks(*d) == idle_d; }));
}

TEST_F(DisaggProcessTest, ADecodeWorkerKilledMidStreamGivesUnavailableAndTheLeaseExpires) {
    Worker pw("prefill"), dw("decode");
    ASSERT_TRUE(pw.ok()) << pw.log();
    ASSERT_TRUE(dw.ok()) << dw.log();
    auto p = pw.stub();
    auto d = dw.stub();
    const int64_t idle_p = free_blocks(*p);
    const auto all = prompts();
    const auto request = greedy_request(all[0], 240);  // long enough to be cut
    // A short lease: whether D died before or after acknowledging, P's blocks come back.
    v1::PrefillResult result = prefill(*p, request, "killed", /*lease_seconds=*/2.0);
    DecodeOutcome out = decode(*d, request, result, pw.internal(), kSecret, [&] { dw.kill_now(); });
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAVAILABLE) << out.status.error_message();
    EXPECT_LT(out.tokens.size(), 240u);
    EXPECT_FALSE(out.final.has_value());
    // A handoff no decode worker claims (its decode worker is gone): the lease expires.
    v1::PrefillResult orphan = prefill(*p, greedy_request(all[2], 8), "orphan", /*lease_seconds=*/1.0);
    ASSERT_FALSE(orphan.finished());
    EXPECT_DOUBLE_EQ(orphan.lease_seconds(), 1.0);
    EXPECT_LT(free_blocks(*p), idle_p);
    EXPECT_TRUE(eventually([&] { return free_blocks(*p) == idle_p; }, 15s)) << pw.log();
}

// Misconfigurations fail the start with the flag named.
TEST(DisaggServeFlags, ARoleNeedsAnInternalPortAndASecret) {
    auto run = [](const std::string& args) {
        const std::string cmd = "env -u MOE_INTERNAL_SECRET " + std::string(MOESERVE_BIN) + " serve --model " +
                                fixture("qwen3_moe") + " --port 0 --threads 1 --kv-cache-bytes 1000000 " + args +
                                " 2>&1";
        FILE* p = popen(cmd.c_str(), "r");
        std::string out;
        std::array<char, 4096> buf;
        size_t n;
        while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
        const int status = pclose(p);
        return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, out);
    };
    auto [rc, out] = run("--role prefill");
    EXPECT_EQ(rc, 1) << out;
    EXPECT_NE(out.find("--internal-port"), std::string::npos) << out;
    std::tie(rc, out) = run("--role decode --internal-port 0");
    EXPECT_EQ(rc, 1) << out;
    EXPECT_NE(out.find("--internal-secret"), std::string::npos) << out;
    std::tie(rc, out) = run("--role both --internal-port 0");
    EXPECT_NE(rc, 0) << out;
    EXPECT_NE(out.find("--role"), std::string::npos) << out;
}

}  // namespace
}  // namespace moe
