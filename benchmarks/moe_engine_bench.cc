// moeserve's side of benchmarks/cpu_vs_llamacpp (issue 6): one process per measurement, JSON on
// stdout, so that run.py can alternate it with llama.cpp and read each engine's peak RSS.
//
//   moe_engine_bench bench --model DIR [--threads 2] [--prompt 512] [--ctx 64] [--decode 32]
//                          [--batches 1,4,16,64]
//       prefill tokens/s of one --prompt-token prompt (one forward step), then for each batch N:
//       N sequences each prefilled with --ctx tokens, then --decode steps of one token per
//       sequence (a ragged batch of N decode rows per forward, as the engine runs it).
//   moe_engine_bench logits --model DIR --prompt-ids 1,2,3 [--threads 2]
//       logits of every prompt position (for checking the GGUF against the safetensors).
//   moe_engine_bench bandwidth [--threads 2] [--gib 1] [--passes 5]
//       DRAM read bandwidth: each thread streams its slice of one --gib GiB array with many
//       independent accumulators (one plain stream per core gets much less than the DRAM can give).
//
// Every mode ends its JSON with "vm_hwm_kib": the process's peak resident set (/proc/self/status).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "model/moe_transformer.h"

using namespace moe;

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
};

// ---- bandwidth probe ------------------------------------------------------------------------

__attribute__((target("avx512f"))) float sum_avx512(const float* p, size_t n) {
    // 8 independent accumulators: enough misses in flight per core to approach DRAM speed.
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
        a4 = _mm512_add_ps(a4, _mm512_load_ps(p + i + 64));
        a5 = _mm512_add_ps(a5, _mm512_load_ps(p + i + 80));
        a6 = _mm512_add_ps(a6, _mm512_load_ps(p + i + 96));
        a7 = _mm512_add_ps(a7, _mm512_load_ps(p + i + 112));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                                                 _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7))));
    for (; i < n; ++i) s += p[i];
    return s;
}

float sum_scalar(const float* p, size_t n) {
    float s[8] = {};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) s[k] += p[i + k];
    for (; i < n; ++i) s[0] += p[i];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

int run_bandwidth(const Flags& f) {
    if (f.gib < 0.25 || f.gib > 64) return fail("--gib must be in [0.25, 64]");
    if (f.threads < 1 || f.threads > 256) return fail("--threads must be in [1, 256]");
    const size_t n = static_cast<size_t>(f.gib * (1ull << 30)) / sizeof(float) / 1024 * 1024;
    auto* data = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
    if (data == nullptr) return fail("cannot allocate " + std::to_string(n * sizeof(float)) + " bytes");
    for (size_t i = 0; i < n; ++i) data[i] = static_cast<float>(i & 1023) * 1e-3f;  // touch every page
    const bool avx512 = __builtin_cpu_supports("avx512f");
    std::vector<double> gbs;
    volatile float sink = 0;
    for (int pass = 0; pass < f.passes + 1; ++pass) {  // pass 0 warms up
        std::vector<float> part(static_cast<size_t>(f.threads));
        std::vector<std::thread> ts;
        const size_t chunk = n / static_cast<size_t>(f.threads) / 128 * 128;
        const auto t0 = std::chrono::steady_clock::now();
        for (int t = 0; t < f.threads; ++t) {
            ts.emplace_back([&, t] {
                const size_t b = chunk * static_cast<size_t>(t);
                const size_t len = t == f.threads - 1 ? n - b : chunk;
                part[static_cast<size_t>(t)] = avx512 ? sum_avx512(data + b, len) : sum_scalar(data + b, len);
            });
        }
        for (auto& t : ts) t.join();
        const double s = seconds_since(t0);
        for (float p : part) sink = sink + p;
        if (pass > 0) gbs.push_back(static_cast<double>(n * sizeof(float)) / s / 1e9);
    }
    std::free(data);
    std::vector<double> sorted = gbs;
    std::sort(sorted.begin(), sorted.end());
    nlohmann::json j;
    j["mode"] = "bandwidth";
    j["threads"] = f.threads;
    j["bytes"] = n * sizeof(float);
    j["kernel"] = avx512 ? "avx512 f32 sum, 8 accumulators per thread" : "scalar f32 sum, 8 accumulators";
    j["passes_gbs"] = gbs;
    j["median_gbs"] = sorted[sorted.size() / 2];
    j["best_gbs"] = sorted.back();
    j["vm_hwm_kib"] = vm_hwm_kib();
    std::printf("%s\n", j.dump().c_str());
    return 0;
}

// ---- the engine -----------------------------------------------------------------------------

struct Engine {
    std::unique_ptr<Backend> backend;
    std::unique_ptr<MoeTransformer> model;
};

StatusOr<Engine> load_engine(const Flags& f) {
    Engine e;
    e.backend = make_cpu_backend({.num_threads = f.threads});
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
        j["logits"].push_back(std::vector<float>(out->row(static_cast<int64_t>(r)), out->row(static_cast<int64_t>(r)) + out->vocab_size));
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
    if (batches.empty() || f.prompt < 1 || f.ctx < 1 || f.decode < 1) return fail("--prompt, --ctx, --decode, --batches must be positive");
    const int max_batch = *std::max_element(batches.begin(), batches.end());
    const int64_t bs = 16;
    const int64_t seq_blocks = (f.ctx + f.decode + 1 + bs - 1) / bs;  // + the warm-up step
    const int64_t prompt_blocks = (f.prompt + bs - 1) / bs;
    const int64_t num_blocks = std::max<int64_t>(seq_blocks * max_batch, prompt_blocks);
    auto cache_or = KvCache::create(*e->backend, c, {.num_blocks = num_blocks, .block_size = bs});
    if (!cache_or.ok()) return fail(cache_or.status().to_string());
    KvCache cache = std::move(cache_or).value();
    auto token = [&](int64_t i) { return static_cast<int32_t>((i * 7919 + 13) % c.vocab_size); };

    nlohmann::json j;
    j["mode"] = "bench";
    j["engine"] = "moeserve";
    j["threads"] = f.threads;
    j["load_s"] = load_s;
    j["matrix_dtype"] = dtype_name(model.matrix_dtype());
    j["kv_dtype"] = dtype_name(cache.dtype());

    // Prefill: one prompt in one step; the first step warms up (first-touch of the weights,
    // packing), the second is timed.
    {
        std::vector<int32_t> prompt(static_cast<size_t>(f.prompt));
        for (int i = 0; i < f.prompt; ++i) prompt[static_cast<size_t>(i)] = token(i);
        std::vector<int32_t> table(static_cast<size_t>(prompt_blocks));
        for (int64_t b = 0; b < prompt_blocks; ++b) table[static_cast<size_t>(b)] = static_cast<int32_t>(b);
        std::vector<double> tps;
        for (int rep = 0; rep < 2; ++rep) {
            BatchView b;
            b.sequences.push_back({.token_ids = prompt, .num_cached = 0, .block_table = table});
            const auto t0 = std::chrono::steady_clock::now();
            auto out = model.forward(b, cache);
            const double s = seconds_since(t0);
            if (!out.ok()) return fail(out.status().to_string());
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
        for (int64_t b = 0; b < seq_blocks; ++b) tables[static_cast<size_t>(s)].push_back(static_cast<int32_t>(s * seq_blocks + b));
    nlohmann::json dec = nlohmann::json::object();
    for (int n : batches) {
        // The cached context, prefilled kCtxGroup sequences per step (untimed; only sets up the cache).
        constexpr int kCtxGroup = 16;
        std::vector<std::vector<int32_t>> ctx(static_cast<size_t>(n), std::vector<int32_t>(static_cast<size_t>(f.ctx)));
        for (int s0 = 0; s0 < n; s0 += kCtxGroup) {
            BatchView b;
            for (int s = s0; s < std::min(n, s0 + kCtxGroup); ++s) {
                for (int i = 0; i < f.ctx; ++i) ctx[static_cast<size_t>(s)][static_cast<size_t>(i)] = token(i + 31 * s);
                b.sequences.push_back({.token_ids = ctx[static_cast<size_t>(s)], .num_cached = 0,
                                       .block_table = tables[static_cast<size_t>(s)]});
            }
            auto out = model.forward(b, cache);
            if (!out.ok()) return fail(out.status().to_string());
        }
        std::vector<int32_t> last(static_cast<size_t>(n));
        for (int s = 0; s < n; ++s) last[static_cast<size_t>(s)] = token(1000 + s);
        // Step 0 is a warm-up (first decode shapes); steps 1..decode are timed.
        std::chrono::steady_clock::time_point t0;
        for (int step = 0; step <= f.decode; ++step) {
            if (step == 1) t0 = std::chrono::steady_clock::now();
            BatchView b;
            for (int s = 0; s < n; ++s)
                b.sequences.push_back({.token_ids = std::span<const int32_t>(&last[static_cast<size_t>(s)], 1),
                                       .num_cached = f.ctx + step, .block_table = tables[static_cast<size_t>(s)]});
            auto out = model.forward(b, cache);
            if (!out.ok()) return fail(out.status().to_string());
            // Feed back the greedy token, as a server would (keeps routing input-dependent).
            for (int s = 0; s < n; ++s) {
                const float* row = out->last_row(static_cast<size_t>(s));
                last[static_cast<size_t>(s)] = static_cast<int32_t>(std::max_element(row, row + out->vocab_size) - row);
            }
        }
        const double s = seconds_since(t0);
        dec[std::to_string(n)] = static_cast<double>(n) * (f.decode) / s;
        std::fprintf(stderr, "moe_engine_bench: decode %d sequences: %.1f tok/s\n", n, static_cast<double>(n) * f.decode / s);
    }
    j["ctx_tokens"] = f.ctx;
    j["decode_steps"] = f.decode;
    j["decode_tps"] = dec;
    j["vm_hwm_kib"] = vm_hwm_kib();
    std::printf("%s\n", j.dump().c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Flags f;
    if (argc < 2) return fail("usage: moe_engine_bench bench|logits|bandwidth [flags] (see the file's comment)");
    f.mode = argv[1];
    try {
        for (int i = 2; i < argc; ++i) {
            const std::string a = argv[i];
            if (i + 1 >= argc) return fail(a + " needs a value");
            const std::string v = argv[++i];
            if (a == "--model") f.model = v;
            else if (a == "--threads") f.threads = std::stoi(v);
            else if (a == "--prompt") f.prompt = std::stoi(v);
            else if (a == "--ctx") f.ctx = std::stoi(v);
            else if (a == "--decode") f.decode = std::stoi(v);
            else if (a == "--batches") f.batches = v;
            else if (a == "--prompt-ids") f.prompt_ids = v;
            else if (a == "--gib") f.gib = std::stod(v);
            else if (a == "--passes") f.passes = std::stoi(v);
            else return fail("unknown flag " + a);
        }
    } catch (const std::exception& ex) {
        return fail(std::string("bad flag value: ") + ex.what());
    }
    if (f.mode == "bandwidth") return run_bandwidth(f);
    if (f.model.empty()) return fail("--model DIR is needed");
    if (f.mode == "logits") return run_logits(f);
    if (f.mode == "bench") return run_bench(f);
    return fail("unknown mode " + f.mode + " (bench, logits, bandwidth)");
}
