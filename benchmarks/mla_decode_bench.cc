// MLA decode on the CPU backend: the absorbed path (attention over the latent rows) against the
// expanded path (kv_b_proj over every cached row, then per-head attention) on one DeepSeek-shaped
// model directory (bf16 or f32 safetensors; benchmarks/make_mla_bench_model.py writes one).
// --seqs sequences of --ctx prompt tokens are prefilled once per path, then --steps decode steps
// are timed; the two paths alternate over --repeats rounds in one run. Prints the median
// decode step time per path and the latent cache's bytes per token.
//
//   mla_decode_bench --model DIR [--threads 2] [--seqs 1] [--ctx 512] [--steps 8] [--repeats 3]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "model/moe_transformer.h"
#include "moe/cpu_backend.h"

using namespace moe;

namespace {

int fail(const std::string& what) {
    std::fprintf(stderr, "mla_decode_bench: %s\n", what.c_str());
    return 1;
}

// Median seconds of one decode step over `steps` steps after a prefill of every sequence.
StatusOr<double> decode_step_seconds(MoeTransformer& m, int64_t seqs, int64_t ctx, int64_t steps) {
    const int64_t bs = 16, blocks_per_seq = (ctx + steps + bs - 1) / bs;
    MOE_ASSIGN_OR_RETURN(
        KvCache cache,
        KvCache::create(m.backend(), m.config(),
                        {.num_blocks = blocks_per_seq * seqs, .block_size = bs, .dtype = m.matrix_dtype()}));
    std::vector<std::vector<int32_t>> tables(static_cast<size_t>(seqs)), prompts(static_cast<size_t>(seqs));
    for (int64_t s = 0; s < seqs; ++s) {
        for (int64_t b = 0; b < blocks_per_seq; ++b)
            tables[static_cast<size_t>(s)].push_back(static_cast<int32_t>(b * seqs + s));
        for (int64_t t = 0; t < ctx; ++t)
            prompts[static_cast<size_t>(s)].push_back(static_cast<int32_t>((t * 131 + s * 7) % m.config().vocab_size));
    }
    BatchView prefill;
    for (int64_t s = 0; s < seqs; ++s)
        prefill.sequences.push_back({.token_ids = prompts[static_cast<size_t>(s)],
                                     .num_cached = 0,
                                     .block_table = tables[static_cast<size_t>(s)]});
    MOE_ASSIGN_OR_RETURN(ForwardOutput out, m.forward(prefill, cache));
    std::vector<int32_t> last(static_cast<size_t>(seqs), 1);
    std::vector<double> times;
    for (int64_t step = 0; step < steps; ++step) {
        BatchView b;
        for (int64_t s = 0; s < seqs; ++s)
            b.sequences.push_back({.token_ids = std::span<const int32_t>(&last[static_cast<size_t>(s)], 1),
                                   .num_cached = ctx + step,
                                   .block_table = tables[static_cast<size_t>(s)]});
        const auto t0 = std::chrono::steady_clock::now();
        MOE_ASSIGN_OR_RETURN(out, m.forward(b, cache));
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    std::string model;
    int threads = 2, repeats = 3;
    int64_t seqs = 1, ctx = 512, steps = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i], v = argv[i + 1];
        if (a == "--model")
            model = v;
        else if (a == "--threads")
            threads = std::stoi(v);
        else if (a == "--seqs")
            seqs = std::stoll(v);
        else if (a == "--ctx")
            ctx = std::stoll(v);
        else if (a == "--steps")
            steps = std::stoll(v);
        else if (a == "--repeats")
            repeats = std::stoi(v);
        else
            return fail("unknown flag " + a);
    }
    if (model.empty() || seqs < 1 || ctx < 1 || steps < 1 || repeats < 1)
        return fail("--model DIR required; counts >= 1");
    auto be = make_cpu_backend({.num_threads = threads});
    auto absorbed = MoeTransformer::load(model, *be, {.mla_path = MlaPath::kAbsorbed});
    auto expanded = MoeTransformer::load(model, *be, {.mla_path = MlaPath::kExpanded});
    if (!absorbed.ok()) return fail(absorbed.status().to_string());
    if (!expanded.ok()) return fail(expanded.status().to_string());
    if (!(*absorbed)->config().is_mla()) return fail("not an MLA model");
    std::vector<double> t_abs, t_exp;
    for (int r = 0; r < repeats; ++r) {
        auto a = decode_step_seconds(**absorbed, seqs, ctx, steps);
        auto e = decode_step_seconds(**expanded, seqs, ctx, steps);
        if (!a.ok()) return fail(a.status().to_string());
        if (!e.ok()) return fail(e.status().to_string());
        t_abs.push_back(*a);
        t_exp.push_back(*e);
    }
    std::sort(t_abs.begin(), t_abs.end());
    std::sort(t_exp.begin(), t_exp.end());
    const double a = t_abs[t_abs.size() / 2], e = t_exp[t_exp.size() / 2];
    const ModelConfig& c = (*absorbed)->config();
    std::printf("%s, %d threads, %lld seqs x ctx %lld, matrices %s\n", model.c_str(), threads,
                static_cast<long long>(seqs), static_cast<long long>(ctx), dtype_name((*absorbed)->matrix_dtype()));
    std::printf("kv cache: %lld B/token (latent %lld + rope %lld, %lld layers)\n",
                static_cast<long long>(KvCache::bytes_per_block(c, 1, (*absorbed)->matrix_dtype())),
                static_cast<long long>(c.mla.kv_lora_rank), static_cast<long long>(c.mla.qk_rope_head_dim),
                static_cast<long long>(c.num_layers));
    std::printf(
        "decode step, median of %d rounds: absorbed %.2f ms (%.1f tok/s), expanded %.2f ms (%.1f tok/s), "
        "expanded/absorbed %.2fx\n",
        repeats, a * 1e3, static_cast<double>(seqs) / a, e * 1e3, static_cast<double>(seqs) / e, e / a);
    return 0;
}
