// moeserve bench: a load generator against a running server.
//
//   moeserve bench --server ADDR --num-requests 64 --concurrency 8 --input-len 32 --output-len 64
//   moeserve bench --server ADDR --num-requests 64 --request-rate 4 --seed 1 ...   (Poisson arrivals)
//   moeserve bench --server ADDR --dataset prompts.jsonl --output timings.json
//   moeserve bench ... --request-rate 2 --slo-ttft 0.5 --slo-itl 0.05   (goodput under an SLO)
//
// Synthetic prompts are random token ids valid for the served vocabulary (GetModelInfo), sent
// with ignore_eos so that every request generates exactly its output length. Times are measured
// on the client: TTFT = call start -> first delta; inter-token latency = gap between deltas
// divided over the tokens of the later delta (one sample per token). Goodput: requests that
// completed without error and met both SLOs (--slo-ttft, --slo-itl; an SLO of 0 is not
// checked), per second of the run's wall time.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "cli/bench_workload.h"
#include "cli/command.h"
#include "cli/grpc_client_util.h"
#include "moe/v1/control.grpc.pb.h"
#include "moe/v1/inference.grpc.pb.h"

namespace moe::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchFlags {
    std::string server = "127.0.0.1:50051";
    int num_requests = 32;
    int concurrency = 0;
    double request_rate = 0;
    int input_len = 32;
    int input_len_max = 0;
    int output_len = 32;
    int output_len_max = 0;
    std::string dataset;
    std::string output;
    uint64_t seed = 0;
    double timeout_seconds = 600;
    // Service-level objectives (0: not checked): a request meets them when its TTFT is at most
    // slo_ttft and its mean inter-token latency at most slo_itl (DistServe's per-request TPOT).
    double slo_ttft = 0;
    double slo_itl = 0;
};

struct Job {
    std::string text;          // dataset "prompt"
    std::vector<int32_t> ids;  // synthetic or dataset "prompt_ids"
    int max_tokens = 0;
};

struct Result {
    int index = 0;
    std::string request_id;
    double start_s = 0;  // since the benchmark began
    double ttft_s = -1;
    double e2e_s = 0;
    int64_t prompt_tokens = 0;
    int64_t output_tokens = 0;
    std::vector<double> itl_s;  // per token after the first
    std::string finish_reason;
    std::string error;
};

double mean_of(const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return v.empty() ? 0.0 : sum / static_cast<double>(v.size());
}

StatusOr<std::vector<Job>> load_dataset(const std::string& path) {
    std::ifstream in(path);
    if (!in) return not_found("--dataset: cannot open " + path);
    std::vector<Job> jobs;
    std::string line;
    int line_no = 0;
    while (std::getline(in, line)) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = path + ":" + std::to_string(line_no);
        nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded() || !j.is_object()) return invalid_argument(where + ": not a JSON object");
        Job job;
        try {
            if (j.contains("prompt"))
                job.text = j.at("prompt").get<std::string>();
            else if (j.contains("prompt_ids"))
                job.ids = j.at("prompt_ids").get<std::vector<int32_t>>();
            else
                return invalid_argument(where + ": needs \"prompt\" or \"prompt_ids\"");
            job.max_tokens = j.value("max_tokens", 0);
        } catch (const nlohmann::json::exception& e) {
            return invalid_argument(where + ": " + e.what());
        }
        if (job.max_tokens < 0) return invalid_argument(where + ": max_tokens must be >= 0");
        jobs.push_back(std::move(job));
    }
    if (jobs.empty()) return invalid_argument("--dataset: " + path + " has no requests");
    return jobs;
}

Result run_one(v1::Inference::Stub& stub, const Job& job, int index, Clock::time_point t0, double timeout_s) {
    Result r;
    r.index = index;
    v1::GenerateRequest req;
    if (!job.text.empty())
        req.set_text(job.text);
    else
        for (int32_t id : job.ids) req.mutable_token_ids()->add_ids(id);
    if (job.max_tokens > 0) req.mutable_stopping()->set_max_tokens(job.max_tokens);
    req.mutable_stopping()->set_ignore_eos(true);
    req.mutable_sampling()->set_temperature(0.0f);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6)));
    const auto start = Clock::now();
    r.start_s = std::chrono::duration<double>(start - t0).count();
    auto reader = stub.Generate(&ctx, req);
    v1::GenerateResponse msg;
    auto last = start;
    while (reader->Read(&msg)) {
        const auto now = Clock::now();
        if (msg.has_delta()) {
            const int n = msg.delta().token_ids_size();
            if (n == 0) continue;
            if (r.ttft_s < 0) {
                r.ttft_s = std::chrono::duration<double>(now - start).count();
                for (int i = 1; i < n; ++i) r.itl_s.push_back(0.0);  // tokens that came with the first
            } else {
                const double gap = std::chrono::duration<double>(now - last).count() / n;
                for (int i = 0; i < n; ++i) r.itl_s.push_back(gap);
            }
            r.output_tokens += n;
            last = now;
            if (r.request_id.empty()) r.request_id = msg.request_id();
        } else if (msg.has_final()) {
            r.request_id = msg.request_id();
            r.prompt_tokens = msg.final().usage().prompt_tokens();
            switch (msg.final().finish_reason()) {
                case v1::FINISH_REASON_STOP:
                    r.finish_reason = "stop";
                    break;
                case v1::FINISH_REASON_LENGTH:
                    r.finish_reason = "length";
                    break;
                case v1::FINISH_REASON_CANCELLED:
                    r.finish_reason = "cancelled";
                    break;
                case v1::FINISH_REASON_ERROR:
                    r.finish_reason = "error";
                    r.error = msg.final().error();
                    break;
                default:
                    r.finish_reason = "unspecified";
                    break;
            }
        }
    }
    const grpc::Status status = reader->Finish();
    r.e2e_s = std::chrono::duration<double>(Clock::now() - start).count();
    if (!status.ok()) r.error = grpc_status_string(status);
    return r;
}

int bench(const BenchFlags& f) {
    auto fail = [](const std::string& msg) {
        std::fprintf(stderr, "moeserve bench: %s\n", msg.c_str());
        return 2;
    };
    if (f.num_requests < 1) return fail("--num-requests must be >= 1");
    if ((f.concurrency > 0) == (f.request_rate > 0))
        return fail("give exactly one of --concurrency and --request-rate");
    if (f.slo_ttft < 0 || f.slo_itl < 0) return fail("--slo-ttft and --slo-itl must be >= 0 (0: not checked)");
    if (f.input_len < 1 || f.output_len < 1) return fail("--input-len and --output-len must be >= 1");
    if (f.input_len_max != 0 && f.input_len_max < f.input_len) return fail("--input-len-max must be >= --input-len");
    if (f.output_len_max != 0 && f.output_len_max < f.output_len)
        return fail("--output-len-max must be >= --output-len");

    auto channel = make_channel(f.server);
    auto control = v1::Control::NewStub(channel);
    v1::ModelInfo info;
    {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        const grpc::Status s = control->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
        if (!s.ok()) return fail("GetModelInfo on " + f.server + ": " + grpc_status_string(s));
    }
    std::mt19937_64 rng(f.seed);
    std::vector<Job> jobs;
    if (!f.dataset.empty()) {
        StatusOr<std::vector<Job>> ds = load_dataset(f.dataset);
        if (!ds.ok()) return fail(ds.status().message());
        for (int i = 0; i < f.num_requests; ++i) jobs.push_back(ds.value()[static_cast<size_t>(i) % ds.value().size()]);
    } else {
        append_synthetic_jobs(rng, f.num_requests, info.vocab_size(), f.input_len, f.input_len_max, f.output_len,
                              f.output_len_max, jobs);
    }

    auto stub = v1::Inference::NewStub(channel);
    std::vector<Result> results(jobs.size());
    const auto t0 = Clock::now();
    if (f.concurrency > 0) {
        std::atomic<size_t> next{0};
        std::vector<std::thread> workers;
        for (int w = 0; w < std::min<int>(f.concurrency, f.num_requests); ++w) {
            workers.emplace_back([&] {
                for (size_t i; (i = next.fetch_add(1)) < jobs.size();)
                    results[i] = run_one(*stub, jobs[i], static_cast<int>(i), t0, f.timeout_seconds);
            });
        }
        for (auto& t : workers) t.join();
    } else {
        // Poisson arrivals: exponential gaps at the given rate, from the seeded generator.
        std::exponential_distribution<double> gap(f.request_rate);
        std::vector<std::thread> inflight;
        auto when = t0;
        for (size_t i = 0; i < jobs.size(); ++i) {
            std::this_thread::sleep_until(when);
            inflight.emplace_back(
                [&, i] { results[i] = run_one(*stub, jobs[i], static_cast<int>(i), t0, f.timeout_seconds); });
            when += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
        }
        for (auto& t : inflight) t.join();
    }
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();

    std::vector<double> ttft, itl, e2e;
    int64_t out_tokens = 0, in_tokens = 0;
    int errors = 0;
    for (const Result& r : results) {
        if (!r.error.empty()) {
            ++errors;
            continue;
        }
        if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
        itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
        e2e.push_back(r.e2e_s);
        out_tokens += r.output_tokens;
        in_tokens += r.prompt_tokens;
    }
    const int ok = static_cast<int>(results.size()) - errors;
    int met_slo = 0;
    for (const Result& r : results) {
        if (!r.error.empty() || r.ttft_s < 0) continue;
        if (f.slo_ttft > 0 && r.ttft_s > f.slo_ttft) continue;
        if (f.slo_itl > 0 && mean_of(r.itl_s) > f.slo_itl) continue;
        ++met_slo;
    }
    nlohmann::json summary = {
        {"requests", results.size()},
        {"completed", ok},
        {"errors", errors},
        {"wall_seconds", wall},
        {"request_throughput", ok / wall},
        {"output_tokens_per_second", static_cast<double>(out_tokens) / wall},
        {"prompt_tokens", in_tokens},
        {"output_tokens", out_tokens},
        {"slo_ttft_seconds", f.slo_ttft},
        {"slo_itl_seconds", f.slo_itl},
        {"slo_met", met_slo},
        {"slo_attainment", static_cast<double>(met_slo) / static_cast<double>(results.size())},
        {"goodput_requests_per_second", met_slo / wall},
    };
    for (auto [name, v] : {std::pair{"ttft", &ttft}, {"itl", &itl}, {"e2e", &e2e}})
        for (int p : {50, 90, 99}) {
            const double x = percentile(*v, p);
            summary[std::string(name) + "_p" + std::to_string(p) + "_seconds"] =
                std::isnan(x) ? nlohmann::json() : nlohmann::json(x);
        }

    std::printf("moeserve bench: %s, model %s (%s)\n", f.server.c_str(), info.name().c_str(),
                info.architecture().c_str());
    std::printf("  mode               %s\n", f.concurrency > 0
                                                 ? ("concurrency " + std::to_string(f.concurrency)).c_str()
                                                 : ("Poisson rate " + std::to_string(f.request_rate) + "/s").c_str());
    std::printf("  requests           %zu (%d ok, %d errors) in %.2f s\n", results.size(), ok, errors, wall);
    std::printf("  request throughput %.3f req/s\n", ok / wall);
    std::printf("  output tokens/s    %.1f (%lld tokens)\n", static_cast<double>(out_tokens) / wall,
                static_cast<long long>(out_tokens));
    if (f.slo_ttft > 0 || f.slo_itl > 0)
        std::printf("  goodput            %.3f req/s (%d of %zu met TTFT <= %g s and mean ITL <= %g s)\n",
                    met_slo / wall, met_slo, results.size(), f.slo_ttft, f.slo_itl);
    std::printf("  TTFT      p50 %8.4f s  p90 %8.4f s  p99 %8.4f s\n", percentile(ttft, 50), percentile(ttft, 90),
                percentile(ttft, 99));
    std::printf("  ITL       p50 %8.4f s  p90 %8.4f s  p99 %8.4f s\n", percentile(itl, 50), percentile(itl, 90),
                percentile(itl, 99));
    std::printf("  latency   p50 %8.4f s  p90 %8.4f s  p99 %8.4f s\n", percentile(e2e, 50), percentile(e2e, 90),
                percentile(e2e, 99));
    for (const Result& r : results)
        if (!r.error.empty()) {
            std::printf("  first error: request %d: %s\n", r.index, r.error.c_str());
            break;
        }

    if (!f.output.empty()) {
        nlohmann::json j;
        j["config"] = {{"server", f.server},           {"num_requests", f.num_requests},
                       {"concurrency", f.concurrency}, {"request_rate", f.request_rate},
                       {"input_len", f.input_len},     {"input_len_max", f.input_len_max},
                       {"output_len", f.output_len},   {"output_len_max", f.output_len_max},
                       {"dataset", f.dataset},         {"seed", f.seed},
                       {"slo_ttft", f.slo_ttft},       {"slo_itl", f.slo_itl},
                       {"model", info.name()}};
        j["summary"] = summary;
        j["requests"] = nlohmann::json::array();
        for (const Result& r : results) {
            const double itl_mean = mean_of(r.itl_s);
            j["requests"].push_back({{"index", r.index},
                                     {"request_id", r.request_id},
                                     {"start_seconds", r.start_s},
                                     {"ttft_seconds", r.ttft_s < 0 ? nlohmann::json() : nlohmann::json(r.ttft_s)},
                                     {"mean_itl_seconds", itl_mean},
                                     {"e2e_seconds", r.e2e_s},
                                     {"prompt_tokens", r.prompt_tokens},
                                     {"output_tokens", r.output_tokens},
                                     {"finish_reason", r.finish_reason},
                                     {"error", r.error}});
        }
        std::ofstream out(f.output);
        out << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        if (!out) return fail("cannot write " + f.output);
        std::printf("  per-request timings written to %s\n", f.output.c_str());
    }
    return errors == 0 ? 0 : 1;
}

const Registrar kRegistrar("bench", [](CLI::App& app, int& exit_code) {
    auto f = std::make_shared<BenchFlags>();
    CLI::App* cmd = app.add_subcommand("bench", "Load generator: throughput, TTFT and inter-token latency percentiles");
    auto opt = [&](const char* name, auto& value, const char* help, const char* env) {
        return cmd->add_option(name, value, help)->capture_default_str()->envname(env);
    };
    opt("--server", f->server, "server address HOST:PORT", "MOESERVE_SERVER");
    opt("--num-requests", f->num_requests, "requests to send", "MOESERVE_BENCH_NUM_REQUESTS");
    opt("--concurrency", f->concurrency, "requests in flight at once (closed loop)", "MOESERVE_BENCH_CONCURRENCY");
    opt("--request-rate", f->request_rate, "Poisson arrival rate, requests/s (open loop)",
        "MOESERVE_BENCH_REQUEST_RATE");
    opt("--input-len", f->input_len, "prompt tokens (or the minimum, with --input-len-max)",
        "MOESERVE_BENCH_INPUT_LEN");
    opt("--input-len-max", f->input_len_max, "uniform prompt lengths in [input-len, this]",
        "MOESERVE_BENCH_INPUT_LEN_MAX");
    opt("--output-len", f->output_len, "generated tokens (or the minimum)", "MOESERVE_BENCH_OUTPUT_LEN");
    opt("--output-len-max", f->output_len_max, "uniform output lengths in [output-len, this]",
        "MOESERVE_BENCH_OUTPUT_LEN_MAX");
    opt("--dataset", f->dataset, "JSONL: {\"prompt\": text | \"prompt_ids\": [...], \"max_tokens\": n} per line",
        "MOESERVE_BENCH_DATASET");
    opt("--output", f->output, "write every request's timings to this JSON file", "MOESERVE_BENCH_OUTPUT");
    opt("--seed", f->seed, "seed for prompts, lengths and arrivals", "MOESERVE_BENCH_SEED");
    opt("--slo-ttft", f->slo_ttft, "SLO: time to first token at most this, seconds (0: not checked)",
        "MOESERVE_BENCH_SLO_TTFT");
    opt("--slo-itl", f->slo_itl, "SLO: a request's mean inter-token latency at most this, seconds (0: not checked)",
        "MOESERVE_BENCH_SLO_ITL");
    opt("--timeout", f->timeout_seconds, "per-request deadline, seconds", "MOESERVE_BENCH_TIMEOUT");
    cmd->callback([f, &exit_code] { exit_code = bench(*f); });
});

}  // namespace
}  // namespace moe::cli
