// Forward-pass throughput on the CPU backend: prefill tokens/s for one prompt and decode
// tokens/s at batch 1 and at a few batch sizes, for a model directory or a random model shape.
//
//   forward_bench --model tests/reference/fixtures/qwen3_moe [--threads 2]
//   forward_bench --random moe-s --dtype bf16 --prompt 128 --decode 16 --batches 1,4,16 [--tiles-max-rows N] (0: every
//   bf16 GEMM on oneDNN; with --pack 0 only: packed panels have no row-major copy and always
//   take our kernels, or oneDNN over the panels on the CpuMatmul oneDNN routes)
//       [--pack 0|1] (1, the default: bf16 matrices packed into column panels at load)
//
// Forward passes only (nothing is sampled), each through the engine's Executor (run() over
// batches placed here, no sampler).
//
// Prints one line per figure plus the machine's CPU model and flags. Not a peer comparison:
// benchmarks/cpu_vs_llamacpp (issue 6) measures against llama.cpp in the same run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "engine/executor.h"
#include "model/moe_transformer.h"
#include "model/random_model.h"

using namespace moe;

namespace {

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown cpu";
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int fail(const Status& s) {
    std::fprintf(stderr, "forward_bench: %s\n", s.to_string().c_str());
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    std::string model_dir, random_shape, dtype_name_arg = "auto", batches_arg = "1,4,16";
    int threads = 2, prompt_len = 64, decode_steps = 16, repeats = 3;
    int64_t tiles_max_rows = cpu::GemmEngine::kDefaultTilesMaxRows;
    bool pack = true;
    for (int i = 1; i < argc; ++i) {
        auto next = [&](const char* flag) -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "%s needs a value\n", flag);
                std::exit(2);
            }
            return argv[++i];
        };
        const std::string a = argv[i];
        if (a == "--model")
            model_dir = next("--model");
        else if (a == "--random")
            random_shape = next("--random");
        else if (a == "--dtype")
            dtype_name_arg = next("--dtype");
        else if (a == "--threads")
            threads = std::stoi(next("--threads"));
        else if (a == "--prompt")
            prompt_len = std::stoi(next("--prompt"));
        else if (a == "--decode")
            decode_steps = std::stoi(next("--decode"));
        else if (a == "--batches")
            batches_arg = next("--batches");
        else if (a == "--repeats")
            repeats = std::stoi(next("--repeats"));
        else if (a == "--tiles-max-rows")
            tiles_max_rows = std::stoll(next("--tiles-max-rows"));
        else if (a == "--pack")
            pack = next("--pack") != "0";
        else {
            std::fprintf(stderr, "unknown flag %s\n", a.c_str());
            return 2;
        }
    }
    WeightDType wd = dtype_name_arg == "bf16"  ? WeightDType::kBF16
                     : dtype_name_arg == "f32" ? WeightDType::kF32
                                               : WeightDType::kAuto;
    auto backend = make_cpu_backend({.num_threads = threads, .pack_weights = pack});
    cpu::as_cpu(*backend).gemm_engine().set_bf16_tiles_max_rows(tiles_max_rows);
    std::unique_ptr<MoeTransformer> model;
    std::string what;
    if (!model_dir.empty()) {
        auto m = MoeTransformer::load(model_dir, *backend, {.weight_dtype = wd});
        if (!m.ok()) return fail(m.status());
        model = std::move(m).value();
        what = model_dir;
    } else {
        RandomModelShape shape;
        if (random_shape == "moe-s") {
            shape = {.vocab_size = 32000,
                     .hidden_size = 1024,
                     .num_layers = 16,
                     .num_heads = 16,
                     .num_kv_heads = 4,
                     .head_dim = 64,
                     .num_experts = 32,
                     .num_experts_per_tok = 4,
                     .moe_intermediate_size = 512};
        } else if (random_shape != "tiny" && !random_shape.empty()) {
            std::fprintf(stderr, "--random: tiny or moe-s\n");
            return 2;
        }
        auto cfg = parse_model_config(random_model_config_json(shape), "random " + random_shape);
        if (!cfg.ok()) return fail(cfg.status());
        const DType stored = wd == WeightDType::kF32 ? DType::kF32 : DType::kBF16;
        auto m = MoeTransformer::create(*cfg, make_random_weights(*cfg, 1234, stored), *backend, {.weight_dtype = wd});
        if (!m.ok()) return fail(m.status());
        model = std::move(m).value();
        what = "random " + (random_shape.empty() ? std::string("tiny") : random_shape);
    }
    const ModelConfig& c = model->config();
    std::vector<int> batches;
    {
        std::stringstream ss(batches_arg);
        std::string item;
        while (std::getline(ss, item, ',')) batches.push_back(std::stoi(item));
    }
    const int max_batch = *std::max_element(batches.begin(), batches.end());
    const int64_t bs = 16;
    const int64_t per_seq_blocks = (prompt_len + decode_steps + bs - 1) / bs;
    auto cache_or = KvCache::create(*backend, c, {.num_blocks = per_seq_blocks * max_batch, .block_size = bs});
    if (!cache_or.ok()) return fail(cache_or.status());
    KvCache cache = std::move(cache_or).value();
    std::printf(
        "machine: %s, %d threads\nmodel: %s (%s, %lld layers, %lld experts top-%lld, hidden %lld), matrices %s\n",
        cpu_model().c_str(), threads, what.c_str(), c.architecture.c_str(), static_cast<long long>(c.num_layers),
        static_cast<long long>(c.num_experts), static_cast<long long>(c.num_experts_per_tok),
        static_cast<long long>(c.hidden_size), dtype_name(model->matrix_dtype()));

    std::vector<std::vector<int32_t>> tables(static_cast<size_t>(max_batch));
    for (int s = 0; s < max_batch; ++s)
        for (int64_t b = 0; b < per_seq_blocks; ++b)
            tables[static_cast<size_t>(s)].push_back(static_cast<int32_t>(s * per_seq_blocks + b));
    std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
    for (int i = 0; i < prompt_len; ++i)
        prompt[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919 + 13) % c.vocab_size);

    Executor executor(*model, cache);
    auto run = [&](std::span<const ExecSeq> seqs) -> Status {
        const std::vector<SeqResult> r = executor.run(seqs);
        return r[0].outcome == SeqOutcome::kFailed ? r[0].status : ok_status();
    };
    for (int batch : batches) {
        std::vector<double> prefill_tps, decode_tps;
        for (int rep = 0; rep < repeats; ++rep) {
            // prefill every sequence (one at a time: a prompt per step, as a server would)
            double prefill_s = 0;
            for (int s = 0; s < batch; ++s) {
                const ExecSeq seq{.id = static_cast<SeqId>(s),
                                  .token_ids = prompt,
                                  .num_cached = 0,
                                  .block_table = tables[static_cast<size_t>(s)],
                                  .sampler = nullptr};
                const auto t0 = std::chrono::steady_clock::now();
                Status st = run(std::span<const ExecSeq>(&seq, 1));
                prefill_s += seconds_since(t0);
                if (!st.ok()) return fail(st);
            }
            std::vector<int32_t> last(static_cast<size_t>(batch), 1);
            const auto t0 = std::chrono::steady_clock::now();
            std::vector<ExecSeq> seqs(static_cast<size_t>(batch));
            for (int step = 0; step < decode_steps; ++step) {
                for (int s = 0; s < batch; ++s)
                    seqs[static_cast<size_t>(s)] = {
                        .id = static_cast<SeqId>(s),
                        .token_ids = std::span<const int32_t>(&last[static_cast<size_t>(s)], 1),
                        .num_cached = prompt_len + step,
                        .block_table = tables[static_cast<size_t>(s)],
                        .sampler = nullptr};
                if (Status st = run(seqs); !st.ok()) return fail(st);
            }
            const double decode_s = seconds_since(t0);
            prefill_tps.push_back(batch * prompt_len / prefill_s);
            decode_tps.push_back(batch * decode_steps / decode_s);
        }
        std::sort(prefill_tps.begin(), prefill_tps.end());
        std::sort(decode_tps.begin(), decode_tps.end());
        if (batch == batches.front())
            std::printf("prefill %d tokens: %.1f tok/s (median of %d)\n", prompt_len,
                        prefill_tps[prefill_tps.size() / 2], repeats);
        std::printf("decode batch %d: %.1f tok/s aggregate (median of %d)\n", batch, decode_tps[decode_tps.size() / 2],
                    repeats);
    }
    return 0;
}
