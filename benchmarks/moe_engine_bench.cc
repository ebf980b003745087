// moeserve's side of benchmarks/cpu_vs_llamacpp (issue 6): one process per measurement, JSON on
// stdout, so that run.py can alternate it with llama.cpp and read each engine's peak RSS.
//
//   moe_engine_bench bench --model DIR [--threads 2] [--prompt 512] [--ctx 64] [--decode 32]
//                          [--batches 1,4,16,64] [--kv-cache-dtype auto|f32|bf16] [--compress-weights 1]
//                          [--matmul auto|own|onednn|onednn-prefill]
//                          [--bs1-probe-gib 0.5]
//       prefill tokens/s of one --prompt-token prompt (one forward step), then for each batch N:
//       N sequences each prefilled with --ctx tokens, then --decode steps of one token per
//       sequence (a ragged batch of N decode rows per forward, as the engine runs it). With
//       --bs1-probe-gib, the bandwidth probe (below) also runs right before and right after batch
//       1's timed steps ("bs1_bandwidth": before_gbs, after_gbs), for its roofline.
//   moe_engine_bench logits --model DIR --prompt-ids 1,2,3 [--threads 2]
//       logits of every prompt position (for checking the GGUF against the safetensors).
//   moe_engine_bench bandwidth [--threads 2] [--gib 1] [--passes 5]
//       DRAM read bandwidth: each thread streams its slice of one --gib GiB array with many
//       independent accumulators (one plain stream per core gets much less than the DRAM can give).
//   moe_engine_bench engine --model DIR [--threads 2] --num-requests N --concurrency C
//                           --input-len L --output-len O [--input-len-max L2] [--output-len-max O2]
//                           [--seed S] [--kv-cache-bytes B] [--kv-cache-dtype auto|f32|bf16]
//                           [--warmup-requests W] [--bare-loop 1]
//       `moeserve bench`'s closed-loop workload (the same prompt ids for the same seed, temperature
//       0, ignore_eos, C requests in flight) on an in-process Engine built as `moeserve serve`
//       builds it, without gRPC: benchmarks/served_vs_engine compares the two. With --bare-loop 1
//       (default) the same requests are then run again through the engine's Executor stepping its
//       own Scheduler with no engine thread, with the forward passes timed, to split the
//       engine's time into model forward and everything around it.
//
// bench and engine step through the engine's Executor (engine/executor.h): bench with its run()
// over batches placed as llama.cpp's worker places them, engine and its bare loop with step().
// logits is one forward returning every row (no step: nothing is sampled).
//
// Every mode ends its JSON with "vm_hwm_kib": the process's peak resident set (/proc/self/status).
#include <immintrin.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "bandwidth_probe.h"
#include "cli/bench_workload.h"
#include "core/allocator.h"
#include "core/thread_pool.h"
#include "engine/engine.h"
#include "engine/executor.h"
#include "model/moe_transformer.h"

using namespace moe;
using bench::bandwidth_passes;
using bench::median_of;
using bench::probe_kernel;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int64_t vm_hwm_kib() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10);
    return -1;
}

int fail(const std::string& what) {
    std::fprintf(stderr, "moe_engine_bench: %s\n", what.c_str());
    return 1;
}

std::vector<int> parse_ints(const std::string& s) {
    std::vector<int> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
    return out;
}

struct Flags {
    std::string mode, model;
    std::string prompt_ids = "1,2,3";
    std::string batches = "1,4,16,64";
    int threads = 2, prompt = 512, ctx = 64, decode = 32, passes = 5;
    double gib = 1.0;
    // engine mode: `moeserve bench`'s flags and defaults.
    int num_requests = 32, concurrency = 1, input_len = 32, input_len_max = 0, output_len = 32, output_len_max = 0;
    int warmup_requests = 0, bare_loop = 1;
    uint64_t seed = 0;
    int64_t kv_cache_bytes = 0;
    std::string kv_cache_dtype = "auto";  // as `moeserve serve --kv-cache-dtype`
    // 0: matrices in the plain bf16 panels instead of their 12-bit form (for A/B runs;
    // CpuBackendOptions::compress_streamed; --compress-experts is its earlier name). Every mode
    // that loads a model.
    bool compress_weights = true;
    // CpuBackendOptions::matmul: auto, own, onednn or onednn-prefill (oneDNN over the same panels).
    std::string matmul = "auto";
    double bs1_probe_gib = 0;  // bench: bandwidth probes of this size around batch 1 (0: none)
};

// --matmul: parse_cpu_matmul, its error thrown (the flag parser reports it).
CpuMatmul cpu_matmul(const std::string& v) {
    auto m = parse_cpu_matmul(v);
    if (!m.ok()) throw std::invalid_argument(m.status().message());
    return *m;
}

// ---- bandwidth probe ------------------------------------------------------------------------

// bandwidth_passes, median_of, probe_kernel: bandwidth_probe.h.

int run_bandwidth(const Flags& f) {
    if (f.gib < 0.25 || f.gib > 64) return fail("--gib must be in [0.25, 64]");
    if (f.threads < 1 || f.threads > 256) return fail("--threads must be in [1, 256]");
    const size_t bytes = static_cast<size_t>(f.gib * (1ull << 30));
    const std::vector<double> gbs = bandwidth_passes(f.threads, bytes, f.passes);
    if (gbs.empty()) return fail("cannot allocate the --gib array");
    std::vector<double> sorted = gbs;
    std::sort(sorted.begin(), sorted.end());
    nlohmann::json j;
    j["mode"] = "bandwidth";
    j["threads"] = f.threads;
    j["bytes"] = bytes / sizeof(float) / 1024 * 1024 * sizeof(float);
    j["kernel"] = probe_kernel();
    j["memory"] = "CpuAllocator (2 MiB-aligned, MADV_HUGEPAGE)";
    j["passes_gbs"] = gbs;
    j["median_gbs"] = sorted[sorted.size() / 2];
    j["best_gbs"] = sorted.back();
    j["vm_hwm_kib"] = vm_hwm_kib();
    std::printf("%s\n", j.dump().c_str());
    return 0;
}

// ---- the engine -----------------------------------------------------------------------------

struct LoadedModel {
    std::unique_ptr<Backend> backend;
    std::unique_ptr<MoeTransformer> model;
};

StatusOr<LoadedModel> load_engine(const Flags& f) {
    LoadedModel e;
    e.backend = make_cpu_backend(
        {.num_threads = f.threads, .compress_streamed = f.compress_weights, .matmul = cpu_matmul(f.matmul)});
    MOE_ASSIGN_OR_RETURN(e.model, MoeTransformer::load(f.model, *e.backend, {.weight_dtype = WeightDType::kBF16}));
    return e;
}

int run_logits(const Flags& f) {
    auto e = load_engine(f);
    if (!e.ok()) return fail(e.status().to_string());
    std::vector<int32_t> ids;
    for (int v : parse_ints(f.prompt_ids)) ids.push_back(v);
    const ModelConfig& c = e->model->config();
    const int64_t bs = 16, blocks = (static_cast<int64_t>(ids.size()) + bs - 1) / bs;
    auto cache = KvCache::create(*e->backend, c, {.num_blocks = blocks, .block_size = bs});
    if (!cache.ok()) return fail(cache.status().to_string());
    std::vector<int32_t> table(static_cast<size_t>(blocks));
    for (int64_t b = 0; b < blocks; ++b) table[static_cast<size_t>(b)] = static_cast<int32_t>(b);
    BatchView b;
    b.sequences.push_back({.token_ids = ids, .num_cached = 0, .block_table = table, .all_logits = true});
    auto out = e->model->forward(b, *cache);
    if (!out.ok()) return fail(out.status().to_string());
    nlohmann::json j;
    j["mode"] = "logits";
    j["vocab_size"] = out->vocab_size;
    j["logits"] = nlohmann::json::array();
    for (size_t r = 0; r < ids.size(); ++r)
        j["logits"].push_back(
            std::vector<float>(out->row(static_cast<int64_t>(r)), out->row(static_cast<int64_t>(r)) + out->vocab_size));
    j["vm_hwm_kib"] = vm_hwm_kib();
    std::printf("%s\n", j.dump().c_str());
    return 0;
}

int run_bench(const Flags& f) {
    const auto t_load = std::chrono::steady_clock::now();
    auto e = load_engine(f);
    if (!e.ok()) return fail(e.status().to_string());
    const double load_s = seconds_since(t_load);
    MoeTransformer& model = *e->model;
    const ModelConfig& c = model.config();
    const std::vector<int> batches = parse_ints(f.batches);
    if (batches.empty() || f.prompt < 1 || f.ctx < 1 || f.decode < 1)
        return fail("--prompt, --ctx, --decode, --batches must be positive");
    if (f.bs1_probe_gib != 0 && (f.bs1_probe_gib < 0.25 || f.bs1_probe_gib > 64))
        return fail("--bs1-probe-gib must be 0 (no probe) or in [0.25, 64]");
    const int max_batch = *std::max_element(batches.begin(), batches.end());
    const int64_t bs = 16;
    const int64_t seq_blocks = (f.ctx + f.decode + 1 + bs - 1) / bs;  // + the warm-up step
    const int64_t prompt_blocks = (f.prompt + bs - 1) / bs;
    const int64_t num_blocks = std::max<int64_t>(seq_blocks * max_batch, prompt_blocks);
    auto kv_dtype = kv_cache_dtype_from_name(f.kv_cache_dtype, model.matrix_dtype());
    if (!kv_dtype.ok()) return fail(kv_dtype.status().to_string());
    auto cache_or = KvCache::create(*e->backend, c, {.num_blocks = num_blocks, .block_size = bs, .dtype = *kv_dtype});
    if (!cache_or.ok()) return fail(cache_or.status().to_string());
    KvCache cache = std::move(cache_or).value();
    auto token = [&](int64_t i) { return static_cast<int32_t>((i * 7919 + 13) % c.vocab_size); };
    // Every forward goes through the engine's Executor (run(): forward, then each sampled row
    // through a greedy SequenceSampler as the engine samples it). The blocks are placed here, not
    // by a scheduler, so that the sequences are laid out as run.py's llama.cpp worker lays out
    // its own.
    Executor executor(model, cache);
    SamplingParams greedy;
    greedy.temperature = 0.0f;

    nlohmann::json j;
    j["mode"] = "bench";
    j["engine"] = "moeserve";
    j["threads"] = f.threads;
    j["load_s"] = load_s;
    j["matrix_dtype"] = dtype_name(model.matrix_dtype());
    j["kv_dtype"] = dtype_name(cache.dtype());
    // Over all layers: the MLA latent row for DeepSeek-V3-shaped models, K and V otherwise.
    j["kv_bytes_per_token"] = KvCache::bytes_per_block(c, 1, cache.dtype());
    j["kv_layout"] = cache.layout().describe();
    j["compress_weights"] = f.compress_weights;
    j["matmul"] = cpu::as_cpu(*e->backend).matmul();
    // The pool's counters over a timed section (thread_pool.h): jobs, units the workers took, waits
    // that ran out of spin and slept, preemptions of the pool's threads (the contended-mode signal).
    ThreadPool& pool = cpu::as_cpu(*e->backend).pool();
    auto pool_delta = [](const ThreadPool::Stats& a, const ThreadPool::Stats& b, int steps) {
        nlohmann::json p;
        p["jobs_per_step"] = static_cast<double>(b.jobs - a.jobs) / steps;
        p["units_by_workers"] = b.units_by_workers - a.units_by_workers;
        p["phase_sleeps"] = b.phase_sleeps - a.phase_sleeps;
        p["idle_sleeps"] = b.idle_sleeps - a.idle_sleeps;
        p["preemptions"] = b.preemptions - a.preemptions;
        return p;
    };
    nlohmann::json pool_json = nlohmann::json::object();

    // Prefill: one prompt in one step; the first step warms up (first-touch of the weights,
    // packing), the second is timed.
    {
        std::vector<int32_t> prompt(static_cast<size_t>(f.prompt));
        for (int i = 0; i < f.prompt; ++i) prompt[static_cast<size_t>(i)] = token(i);
        std::vector<int32_t> table(static_cast<size_t>(prompt_blocks));
        for (int64_t b = 0; b < prompt_blocks; ++b) table[static_cast<size_t>(b)] = static_cast<int32_t>(b);
        std::vector<double> tps;
        for (int rep = 0; rep < 2; ++rep) {
            SequenceSampler sampler(greedy, {});
            const ExecSeq seq{.id = 0, .token_ids = prompt, .num_cached = 0, .block_table = table, .sampler = &sampler};
            const ThreadPool::Stats before = pool.stats();
            const auto t0 = std::chrono::steady_clock::now();
            const std::vector<SeqResult> r = executor.run(std::span<const ExecSeq>(&seq, 1));
            const double s = seconds_since(t0);
            pool_json["prefill"] = pool_delta(before, pool.stats(), 1);
            if (r[0].outcome == SeqOutcome::kFailed) return fail(r[0].status.to_string());
            tps.push_back(f.prompt / s);
        }
        j["prefill_tokens"] = f.prompt;
        j["prefill_tps"] = tps.back();
        j["prefill_tps_cold"] = tps.front();
        std::fprintf(stderr, "moe_engine_bench: prefill %d tokens: %.1f tok/s\n", f.prompt, tps.back());
    }

    // Decode: N sequences, each with --ctx cached tokens, one new token per sequence per step.
    std::vector<std::vector<int32_t>> tables(static_cast<size_t>(max_batch));
    for (int s = 0; s < max_batch; ++s)
        for (int64_t b = 0; b < seq_blocks; ++b)
            tables[static_cast<size_t>(s)].push_back(static_cast<int32_t>(s * seq_blocks + b));
    nlohmann::json dec = nlohmann::json::object();
    nlohmann::json bs1_probe = nlohmann::json::object();
    int64_t hwm_before_probe = 0;
    const size_t probe_bytes = static_cast<size_t>(f.bs1_probe_gib * (1ull << 30));
    for (int n : batches) {
        // The cached context, prefilled kCtxGroup sequences per step (untimed; only sets up the cache).
        constexpr int kCtxGroup = 16;
        std::vector<std::vector<int32_t>> ctx(static_cast<size_t>(n), std::vector<int32_t>(static_cast<size_t>(f.ctx)));
        for (int s0 = 0; s0 < n; s0 += kCtxGroup) {
            std::vector<ExecSeq> group;
            for (int s = s0; s < std::min(n, s0 + kCtxGroup); ++s) {
                for (int i = 0; i < f.ctx; ++i) ctx[static_cast<size_t>(s)][static_cast<size_t>(i)] = token(i + 31 * s);
                group.push_back({.id = static_cast<SeqId>(s),
                                 .token_ids = ctx[static_cast<size_t>(s)],
                                 .num_cached = 0,
                                 .block_table = tables[static_cast<size_t>(s)],
                                 .sampler = nullptr});
            }
            const std::vector<SeqResult> r = executor.run(group);
            if (r[0].outcome == SeqOutcome::kFailed) return fail(r[0].status.to_string());
        }
        std::vector<int32_t> last(static_cast<size_t>(n));
        for (int s = 0; s < n; ++s) last[static_cast<size_t>(s)] = token(1000 + s);
        // One greedy sampler per sequence, as the engine keeps one per request.
        std::vector<SequenceSampler> samplers;
        samplers.reserve(static_cast<size_t>(n));
        for (int s = 0; s < n; ++s) samplers.emplace_back(greedy, std::span<const int32_t>{});
        std::vector<ExecSeq> batch(static_cast<size_t>(n));
        // Step 0 is a warm-up (first decode shapes); steps 1..decode are timed.
        const bool probe_after = n == 1 && f.bs1_probe_gib > 0;
        std::chrono::steady_clock::time_point t0;
        ThreadPool::Stats pool_before;
        for (int step = 0; step <= f.decode; ++step) {
            if (step == 1 && probe_after) {
                // The host's DRAM bandwidth swings by 1.5x within minutes; the roofline of batch 1
                // is honest only against a probe taken next to it: right before and right after
                // its timed steps. The peak RSS before the probes is kept (hwm_before_probe).
                hwm_before_probe = vm_hwm_kib();
                bs1_probe["before_gbs"] = median_of(bandwidth_passes(f.threads, probe_bytes, 3));
                bs1_probe["bytes"] = probe_bytes;
                bs1_probe["kernel"] = probe_kernel();
            }
            if (step == 1) {
                t0 = std::chrono::steady_clock::now();
                pool_before = pool.stats();
            }
            for (int s = 0; s < n; ++s)
                batch[static_cast<size_t>(s)] = {
                    .id = static_cast<SeqId>(s),
                    .token_ids = std::span<const int32_t>(&last[static_cast<size_t>(s)], 1),
                    .num_cached = f.ctx + step,
                    .block_table = tables[static_cast<size_t>(s)],
                    .sampler = &samplers[static_cast<size_t>(s)]};
            const std::vector<SeqResult> r = executor.run(batch);
            // Feed back the greedy token, as a server would (keeps routing input-dependent).
            for (int s = 0; s < n; ++s) {
                const SeqResult& sr = r[static_cast<size_t>(s)];
                if (sr.outcome == SeqOutcome::kFailed) return fail(sr.status.to_string());
                last[static_cast<size_t>(s)] = sr.sample.token;
            }
        }
        const double s = seconds_since(t0);
        pool_json["decode" + std::to_string(n)] = pool_delta(pool_before, pool.stats(), f.decode);
        if (n == 1 && probe_after) {
            // The probe right after batch 1's decode (see probe_before).
            bs1_probe["after_gbs"] = median_of(bandwidth_passes(f.threads, probe_bytes, 3));
            // The probe's array is freed; keep it out of the reported peak RSS.
            std::ofstream clear("/proc/self/clear_refs");
            clear << "5";
            clear.close();
            bs1_probe["rss_reset"] = static_cast<bool>(clear);
        }
        dec[std::to_string(n)] = static_cast<double>(n) * (f.decode) / s;
        std::fprintf(stderr, "moe_engine_bench: decode %d sequences: %.1f tok/s\n", n,
                     static_cast<double>(n) * f.decode / s);
    }
    j["ctx_tokens"] = f.ctx;
    j["decode_steps"] = f.decode;
    j["decode_tps"] = dec;
    j["pool"] = pool_json;
    if (!bs1_probe.empty()) j["bs1_bandwidth"] = bs1_probe;
    // Peak RSS: with the batch-1 probes, the larger of the peak before them and the peak since
    // the reset after them (the probes' own array left out).
    j["vm_hwm_kib"] = std::max(hwm_before_probe, vm_hwm_kib());
    std::printf("%s\n", j.dump().c_str());
    return 0;
}

// ---- engine: `moeserve bench`'s workload on an in-process Engine -----------------------------
//
// Mirrors src/cli/cmd_bench.cc (synthetic prompts, closed loop) and src/cli/cmd_serve.cc (how the
// model, backend and EngineOptions are built), so that the only difference from
// `moeserve bench` against `moeserve serve` is gRPC: serialization, the server's handler and
// reactor threads, the client's threads, and the network round trip between one request's end
// and the next one's start in a closed loop.

using Clock = std::chrono::steady_clock;

struct Job {
    std::vector<int32_t> ids;
    int max_tokens = 0;
};

// `moeserve bench`'s own generator (cli/bench_workload.h): a seed gives the same prompts and
// lengths there and here.
std::vector<Job> make_jobs(const Flags& f, uint64_t seed, int num_requests, int64_t vocab_size) {
    std::mt19937_64 rng(seed);
    std::vector<Job> jobs;
    cli::append_synthetic_jobs(rng, num_requests, vocab_size, f.input_len, f.input_len_max, f.output_len,
                               f.output_len_max, jobs);
    return jobs;
}

struct RequestResult {
    double ttft_s = -1;         // submit -> first delta, seen by the submitting thread's sink
    double e2e_s = 0;           // submit -> the submitting thread woke up on the final
    std::vector<double> itl_s;  // per token after the first, as `moeserve bench` counts them
    std::vector<int32_t> tokens;
    int64_t prompt_tokens = 0;
    FinalEvent final_event;
    std::string error;
};

// Records a request's deltas as `moeserve bench` does with its stream (one ITL sample per token:
// the gap between deltas divided over the later delta's tokens), and wakes the submitter on the
// final event. on_delta / on_final run on the engine thread; the submitter reads only after
// wait(), whose mutex orders those writes before its reads.
class TimingSink final : public RequestSink {
public:
    explicit TimingSink(Clock::time_point start) : start_(start), last_(start) {}

    void on_delta(DeltaEvent&& delta) override {
        const auto now = Clock::now();
        const size_t n = delta.tokens.size();
        if (n == 0) return;
        if (r_.ttft_s < 0) {
            r_.ttft_s = std::chrono::duration<double>(now - start_).count();
            for (size_t i = 1; i < n; ++i) r_.itl_s.push_back(0.0);
        } else {
            const double gap = std::chrono::duration<double>(now - last_).count() / static_cast<double>(n);
            for (size_t i = 0; i < n; ++i) r_.itl_s.push_back(gap);
        }
        for (const TokenEvent& t : delta.tokens) r_.tokens.push_back(t.token);
        last_ = now;
    }

    void on_final(FinalEvent&& final_event) override {
        {
            std::lock_guard<std::mutex> lock(mu_);
            r_.final_event = std::move(final_event);
            done_ = true;
        }
        cv_.notify_one();
    }

    RequestResult wait() {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return done_; });
        r_.e2e_s = std::chrono::duration<double>(Clock::now() - start_).count();
        return std::move(r_);
    }

private:
    Clock::time_point start_, last_;
    RequestResult r_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false;
};

RequestResult run_request(Engine& engine, const Job& job) {
    GenerateParams p;
    p.prompt_ids = job.ids;
    p.sampling.temperature = 0.0f;  // what `moeserve bench` asks for
    p.stopping.max_tokens = job.max_tokens;
    p.stopping.ignore_eos = true;
    const auto start = Clock::now();
    p.deadline = start + std::chrono::seconds(600);  // `moeserve bench`'s default --timeout
    auto sink = std::make_shared<TimingSink>(start);
    StatusOr<std::string> id = engine.submit(std::move(p), sink);
    if (!id.ok()) {
        RequestResult r;
        r.error = id.status().to_string();
        return r;
    }
    RequestResult r = sink->wait();
    r.prompt_tokens = r.final_event.prompt_tokens;
    if (r.final_event.reason == FinishReason::kError || r.final_event.reason == FinishReason::kCancelled)
        r.error = std::string(finish_reason_name(r.final_event.reason)) + ": " + r.final_event.error.to_string();
    return r;
}

// Closed loop as in `moeserve bench --concurrency C`: C threads, each submits its next request
// when its previous one has ended. Returns the wall time from the first submit to the last final.
double run_closed_loop(Engine& engine, const std::vector<Job>& jobs, int concurrency,
                       std::vector<RequestResult>& results) {
    results.assign(jobs.size(), RequestResult{});
    std::atomic<size_t> next{0};
    const auto t0 = Clock::now();
    std::vector<std::thread> workers;
    for (int w = 0; w < std::min<int>(concurrency, static_cast<int>(jobs.size())); ++w) {
        workers.emplace_back([&] {
            for (size_t i; (i = next.fetch_add(1)) < jobs.size();) results[i] = run_request(engine, jobs[i]);
        });
    }
    for (auto& t : workers) t.join();
    return seconds_since(t0);
}

double mean(const std::vector<double>& v) {
    if (v.empty()) return NAN;
    double s = 0;
    for (double x : v) s += x;
    return s / static_cast<double>(v.size());
}

nlohmann::json num(double x) {
    return std::isnan(x) ? nlohmann::json() : nlohmann::json(x);
}

// User + system CPU seconds of the whole process so far (every thread). Less sensitive than wall
// time to other tenants of a shared host (what it adds is the work done, not the waiting).
double process_cpu_s() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto s = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6; };
    return s(ru.ru_utime) + s(ru.ru_stime);
}

// The bare loop: the engine's own Executor, Scheduler and KV block manager (same options and
// block count) step the model directly, with no engine thread, inbox, sinks, stop checker or
// client threads. Finished requests are replaced before the next step (an ideal closed loop with
// zero client latency). Times the forward passes, the sampling and the scheduler calls separately
// (the Executor's StepTimes; scheduler_s also holds this loop's finish/admit bookkeeping).
struct BareLoopTimes {
    double wall_s = 0, cpu_s = 0, forward_s = 0, sample_s = 0, scheduler_s = 0;
    int64_t steps = 0, output_tokens = 0, preemptions = 0;
};

Status bare_loop(Executor& executor, const std::vector<Job>& jobs, int concurrency, SeqId& next_seq, BareLoopTimes& t,
                 std::vector<std::vector<int32_t>>& tokens) {
    struct Live {
        size_t job_idx = 0;
        int64_t generated = 0;
    };
    tokens.assign(jobs.size(), {});
    std::unordered_map<SeqId, Live> live;
    size_t next_job = 0;
    SamplingParams sampling;
    sampling.temperature = 0.0f;
    auto admit = [&]() -> Status {
        const Job& job = jobs[next_job];
        const SeqId seq = next_seq++;
        MOE_RETURN_IF_ERROR(
            executor.add(NewRequest{.id = seq, .prompt = job.ids, .max_tokens = job.max_tokens}, sampling));
        live[seq] = Live{.job_idx = next_job};
        ++next_job;
        return ok_status();
    };
    const auto t0 = Clock::now();
    const double cpu0 = process_cpu_s();
    while (next_job < jobs.size() && static_cast<int>(live.size()) < concurrency) MOE_RETURN_IF_ERROR(admit());
    while (!live.empty()) {
        // The engine's step (Executor::step), timed per stage.
        StepResult r = executor.step();
        t.scheduler_s += r.times.schedule_s + r.times.update_s;
        t.forward_s += r.times.forward_s;
        t.sample_s += r.times.sample_s;
        if (r.empty()) return internal_error("bare loop: the scheduler planned nothing with work pending");
        t.preemptions += static_cast<int64_t>(r.preempted.size());
        ++t.steps;
        const auto ts = Clock::now();
        for (const SeqResult& s : r.seqs) {
            if (s.outcome == SeqOutcome::kFailed) return s.status;
            if (s.outcome != SeqOutcome::kSampled) continue;
            Live& l = live.at(s.id);
            tokens[l.job_idx].push_back(s.sample.token);
            ++t.output_tokens;
            if (++l.generated < jobs[l.job_idx].max_tokens) continue;
            executor.finish(s.id);
            live.erase(s.id);
            if (next_job < jobs.size()) MOE_RETURN_IF_ERROR(admit());
        }
        t.scheduler_s += seconds_since(ts);
    }
    t.wall_s = seconds_since(t0);
    t.cpu_s = process_cpu_s() - cpu0;
    return ok_status();
}

int run_engine(const Flags& f) {
    if (f.num_requests < 1 || f.concurrency < 1 || f.input_len < 1 || f.output_len < 1 || f.warmup_requests < 0)
        return fail("--num-requests, --concurrency, --input-len, --output-len must be >= 1, --warmup-requests >= 0");
    if ((f.input_len_max != 0 && f.input_len_max < f.input_len) ||
        (f.output_len_max != 0 && f.output_len_max < f.output_len))
        return fail("--input-len-max / --output-len-max must be >= --input-len / --output-len");
    if (f.kv_cache_bytes < 0) return fail("--kv-cache-bytes must be >= 0");

    // As `moeserve serve --model DIR --threads N` builds it (default flags otherwise).
    const auto t_load = std::chrono::steady_clock::now();
    auto backend = make_cpu_backend(
        {.num_threads = f.threads, .compress_streamed = f.compress_weights, .matmul = cpu_matmul(f.matmul)});
    auto model_or = MoeTransformer::load(f.model, *backend, {.weight_dtype = WeightDType::kAuto});
    if (!model_or.ok()) return fail(model_or.status().to_string());
    const ModelConfig config = (*model_or)->config();
    const std::string matrix_dtype = dtype_name((*model_or)->matrix_dtype());
    EngineOptions eo;
    eo.kv_cache_bytes = f.kv_cache_bytes;
    auto kv_dtype = kv_cache_dtype_from_name(f.kv_cache_dtype, (*model_or)->matrix_dtype());
    if (!kv_dtype.ok()) return fail(kv_dtype.status().to_string());
    eo.kv_dtype = *kv_dtype;
    eo.scheduler.max_model_len = 0;  // serve's --max-model-len default: the model's context length
    auto engine_or = Engine::create(std::move(model_or).value(), nullptr, eo);
    if (!engine_or.ok()) return fail(engine_or.status().to_string());
    std::unique_ptr<Engine> engine = std::move(engine_or).value();
    if (Status s = engine->start(); !s.ok()) return fail(s.to_string());
    const double load_s = seconds_since(t_load);

    const std::vector<Job> warmup = make_jobs(f, f.seed + 1, f.warmup_requests, config.vocab_size);
    const std::vector<Job> jobs = make_jobs(f, f.seed, f.num_requests, config.vocab_size);
    std::vector<RequestResult> results;
    if (!warmup.empty()) {
        run_closed_loop(*engine, warmup, std::min(f.concurrency, f.warmup_requests), results);
        for (const RequestResult& r : results)
            if (!r.error.empty()) return fail("warm-up request failed: " + r.error);
    }
    const EngineLoad before = engine->load();
    const double cpu0 = process_cpu_s();
    const double wall = run_closed_loop(*engine, jobs, f.concurrency, results);
    const double cpu_s = process_cpu_s() - cpu0;
    const EngineLoad after = engine->load();
    const int64_t hwm = vm_hwm_kib();

    std::vector<double> ttft, itl, e2e, engine_ttft, engine_queue;
    int64_t out_tokens = 0, in_tokens = 0;
    int errors = 0;
    std::string first_error;
    for (const RequestResult& r : results) {
        if (!r.error.empty()) {
            if (errors++ == 0) first_error = r.error;
            continue;
        }
        if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
        itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
        e2e.push_back(r.e2e_s);
        engine_ttft.push_back(r.final_event.ttft_seconds);
        engine_queue.push_back(r.final_event.queue_seconds);
        out_tokens += static_cast<int64_t>(r.tokens.size());
        in_tokens += r.prompt_tokens;
    }
    const int ok = static_cast<int>(results.size()) - errors;
    const int64_t steps = after.steps - before.steps;

    nlohmann::json j;
    j["mode"] = "engine";
    j["engine"] = "moeserve Engine in-process (scheduler + sampler + model, no gRPC)";
    j["model"] = f.model;
    j["threads"] = f.threads;
    j["load_s"] = load_s;
    j["matrix_dtype"] = matrix_dtype;
    j["kv_blocks_total"] = after.kv_blocks_total;
    j["kv_block_size"] = after.kv_block_size;
    j["max_model_len"] = engine->max_model_len();
    j["config"] = {{"num_requests", f.num_requests},
                   {"concurrency", f.concurrency},
                   {"input_len", f.input_len},
                   {"input_len_max", f.input_len_max},
                   {"output_len", f.output_len},
                   {"output_len_max", f.output_len_max},
                   {"seed", f.seed},
                   {"kv_cache_bytes", f.kv_cache_bytes},
                   {"kv_cache_dtype", dtype_name(eo.kv_dtype)},
                   {"warmup_requests", f.warmup_requests}};
    j["requests"] = results.size();
    j["completed"] = ok;
    j["errors"] = errors;
    j["first_error"] = first_error;
    j["wall_s"] = wall;
    j["cpu_s"] = cpu_s;
    j["request_throughput"] = ok / wall;
    j["output_tokens_per_second"] = static_cast<double>(out_tokens) / wall;
    j["prompt_tokens"] = in_tokens;
    j["output_tokens"] = out_tokens;
    j["ttft_mean_s"] = num(mean(ttft));
    j["itl_mean_s"] = num(mean(itl));
    j["e2e_mean_s"] = num(mean(e2e));
    for (auto [name, v] : {std::pair{"ttft", &ttft}, {"itl", &itl}, {"e2e", &e2e}})
        for (int p : {50, 90, 99}) j[std::string(name) + "_p" + std::to_string(p) + "_s"] = num(cli::percentile(*v, p));
    j["engine_ttft_mean_s"] = num(mean(engine_ttft));  // the engine's own FinalEvent figures
    j["engine_queue_mean_s"] = num(mean(engine_queue));
    j["engine_steps"] = steps;
    j["engine_generated_tokens"] = after.generated_tokens - before.generated_tokens;
    j["engine_preemptions"] = after.num_preemptions - before.num_preemptions;
    j["vm_hwm_kib"] = hwm;
    std::fprintf(stderr, "moe_engine_bench: engine, concurrency %d: %.1f output tok/s, %d errors, %lld steps\n",
                 f.concurrency, static_cast<double>(out_tokens) / wall, errors, static_cast<long long>(steps));
    const int64_t num_blocks = after.kv_blocks_total, max_model_len = engine->max_model_len();
    engine->stop();
    engine.reset();  // frees the model and the KV cache before the bare loop loads its own

    if (f.bare_loop == 0) {
        j["bare_loop"] = nullptr;
    } else {
        auto model = MoeTransformer::load(f.model, *backend, {.weight_dtype = WeightDType::kAuto});
        if (!model.ok()) return fail(model.status().to_string());
        auto cache = KvCache::create(*backend, config,
                                     {.num_blocks = num_blocks, .block_size = eo.kv_block_size, .dtype = eo.kv_dtype});
        if (!cache.ok()) return fail(cache.status().to_string());
        KvBlockManager kv(
            {.num_blocks = num_blocks, .block_size = eo.kv_block_size, .prefix_caching = eo.prefix_caching});
        SchedulerOptions so = eo.scheduler;  // as Engine::create sets it up
        so.max_model_len = max_model_len;
        so.max_waiting = std::max<int64_t>(so.max_waiting, eo.max_pending);
        Scheduler scheduler(so, kv);
        Executor executor(**model, *cache, scheduler);
        SeqId next_seq = 1;
        std::vector<std::vector<int32_t>> tokens;
        BareLoopTimes t;
        if (!warmup.empty()) {
            Status s = bare_loop(executor, warmup, std::min(f.concurrency, f.warmup_requests), next_seq, t, tokens);
            if (!s.ok()) return fail(s.to_string());
            t = BareLoopTimes{};
        }
        Status s = bare_loop(executor, jobs, f.concurrency, next_seq, t, tokens);
        if (!s.ok()) return fail(s.to_string());
        int same = 0;
        for (size_t i = 0; i < jobs.size(); ++i) same += tokens[i] == results[i].tokens ? 1 : 0;
        const double other = t.wall_s - t.forward_s - t.sample_s - t.scheduler_s;
        j["bare_loop"] = {
            {"what",
             "the engine's Executor stepping its own Scheduler directly (no engine thread, sinks or client "
             "threads), finished requests replaced before the next step; forward passes timed"},
            {"wall_s", t.wall_s},
            {"cpu_s", t.cpu_s},
            {"forward_s", t.forward_s},
            {"sample_s", t.sample_s},
            {"scheduler_s", t.scheduler_s},
            {"other_s", other},
            {"steps", t.steps},
            {"preemptions", t.preemptions},
            {"output_tokens", t.output_tokens},
            {"output_tokens_per_second", static_cast<double>(t.output_tokens) / t.wall_s},
            {"forward_only_output_tokens_per_second", static_cast<double>(t.output_tokens) / t.forward_s},
            {"forward_fraction", t.forward_s / t.wall_s},
            {"requests_with_engine_tokens", same},
        };
        std::fprintf(stderr, "moe_engine_bench: bare loop: %.1f output tok/s, forward %.1f%% of its wall time\n",
                     static_cast<double>(t.output_tokens) / t.wall_s, 100.0 * t.forward_s / t.wall_s);
    }
    std::printf("%s\n", j.dump().c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Flags f;
    if (argc < 2) return fail("usage: moe_engine_bench bench|logits|bandwidth|engine [flags] (see the file's comment)");
    f.mode = argv[1];
    try {
        for (int i = 2; i < argc; ++i) {
            const std::string a = argv[i];
            if (i + 1 >= argc) return fail(a + " needs a value");
            const std::string v = argv[++i];
            if (a == "--model")
                f.model = v;
            else if (a == "--threads")
                f.threads = std::stoi(v);
            else if (a == "--prompt")
                f.prompt = std::stoi(v);
            else if (a == "--ctx")
                f.ctx = std::stoi(v);
            else if (a == "--decode")
                f.decode = std::stoi(v);
            else if (a == "--batches")
                f.batches = v;
            else if (a == "--prompt-ids")
                f.prompt_ids = v;
            else if (a == "--gib")
                f.gib = std::stod(v);
            else if (a == "--passes")
                f.passes = std::stoi(v);
            else if (a == "--num-requests")
                f.num_requests = std::stoi(v);
            else if (a == "--concurrency")
                f.concurrency = std::stoi(v);
            else if (a == "--input-len")
                f.input_len = std::stoi(v);
            else if (a == "--input-len-max")
                f.input_len_max = std::stoi(v);
            else if (a == "--output-len")
                f.output_len = std::stoi(v);
            else if (a == "--output-len-max")
                f.output_len_max = std::stoi(v);
            else if (a == "--seed")
                f.seed = std::stoull(v);
            else if (a == "--kv-cache-bytes")
                f.kv_cache_bytes = std::stoll(v);
            else if (a == "--kv-cache-dtype")
                f.kv_cache_dtype = v;
            else if (a == "--compress-weights" || a == "--compress-experts")
                f.compress_weights = v != "0";
            else if (a == "--matmul") {
                cpu_matmul(v);  // a bad name throws here, where flag errors are reported
                f.matmul = v;
            } else if (a == "--bs1-probe-gib")
                f.bs1_probe_gib = std::stod(v);
            else if (a == "--warmup-requests")
                f.warmup_requests = std::stoi(v);
            else if (a == "--bare-loop")
                f.bare_loop = std::stoi(v);
            else
                return fail("unknown flag " + a);
        }
    } catch (const std::exception& ex) {
        return fail(std::string("bad flag value: ") + ex.what());
    }
    if (f.mode == "bandwidth") return run_bandwidth(f);
    if (f.model.empty()) return fail("--model DIR is needed");
    if (f.mode == "logits") return run_logits(f);
    if (f.mode == "bench") return run_bench(f);
    if (f.mode == "engine") return run_engine(f);
    return fail("unknown mode " + f.mode + " (bench, logits, bandwidth, engine)");
}
