// The grouped expert MLP (ops::moe_experts) on the CPU backend, alone: one layer's experts with
// bf16 weights drawn like a checkpoint's (normal, std 0.02), packed as plain column panels and
// as the lossless 12-bit panels (bf16_panels.h), the two layouts alternated in one run.
//
//   moe_experts_bench [--threads 2] [--hidden 2048] [--inter 768] [--experts 128] [--top-k 8]
//       [--tokens 512,16] [--layers 4] [--repeats 7]
//
// Each pass routes `tokens` tokens to top-k experts (uniform, no expert twice for a token) and
// runs `layers` distinct copies of the layer's weights one after another, so that a pass reads
// them from DRAM as a model's forward does. Prints per token count the median tok/s of each
// layout in ms per layer, GFLOP/s, and GB/s of expert weights read (the bytes of the layout: the 12-bit form
// reads 3/4 of the plain bytes), and their ratio. The defaults are qwen3-a3b's experts: 512
// tokens is the prefill of cpu_vs_llamacpp, 16 its 16-sequence decode step. Also prints the time
// each layout takes to pack one layer (what the model load pays).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/bf16_panels.h"
#include "backend/cpu/bf16_tiles.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_features.h"
#include "bench_args.h"
#include "moe/dtype.h"
#include "ops/ops.h"

using namespace moe;

namespace {

struct Layer {
    std::vector<std::unique_ptr<PreparedWeight>> buffers;  // the packed matrices
    std::vector<WeightView> gate, up, down;                // views over them
    int64_t bytes = 0;                                     // of every expert's three matrices
    int64_t exceptions = 0;                                // values the 12-bit form keeps aside
};

}  // namespace

int main(int argc, char** argv) {
    int threads = 2, repeats = 7;
    int64_t hidden = 2048, inter = 768, experts = 128, top_k = 8, layers = 4;
    std::vector<int64_t> token_counts = {512, 16};
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i], v = argv[i + 1];
        if (a == "--threads")
            threads = std::stoi(v);
        else if (a == "--hidden")
            hidden = std::stoll(v);
        else if (a == "--inter")
            inter = std::stoll(v);
        else if (a == "--experts")
            experts = std::stoll(v);
        else if (a == "--top-k")
            top_k = std::stoll(v);
        else if (a == "--tokens")
            token_counts = bench::parse_int_list(v);
        else if (a == "--layers")
            layers = std::stoll(v);
        else if (a == "--repeats")
            repeats = std::stoi(v);
        else {
            std::fprintf(stderr, "unknown flag %s\n", a.c_str());
            return 2;
        }
    }
    if (threads < 1 || repeats < 1 || hidden < 1 || inter < 1 || experts < 1 || top_k < 1 || top_k > experts ||
        layers < 1 || token_counts.empty()) {
        std::fprintf(stderr, "every count must be positive, --top-k at most --experts\n");
        return 2;
    }
    auto be = make_cpu_backend({.num_threads = threads});
    if (!cpu::bf16_tiles_available()) {
        std::fprintf(stderr, "no AVX512-BF16 on this CPU: the backend packs no panels\n");
        return 1;
    }

    // Weights: one expert's three matrices drawn once, reused (shifted) for every expert so the
    // set is built fast; every (layer, expert, layout) still gets its own packed copy in memory.
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    const int64_t per = inter * hidden;
    std::vector<uint16_t> base(static_cast<size_t>(4 * per));
    for (auto& b : base) b = f32_to_bf16(normal(rng));
    Layer layouts[2][64];  // [0]: plain panels, [1]: 12-bit
    if (layers > 64) {
        std::fprintf(stderr, "--layers must be at most 64\n");
        return 2;
    }
    double pack_s[2] = {0, 0};
    for (int lay = 0; lay < 2; ++lay) {
        const auto t_pack = std::chrono::steady_clock::now();
        for (int64_t l = 0; l < layers; ++l) {
            Layer& L = layouts[lay][l];
            for (int64_t e = 0; e < experts; ++e) {
                for (int mat = 0; mat < 3; ++mat) {
                    const int64_t shift = ((l * experts + e) * 3 + mat) * 4099 % (3 * per);
                    uint16_t* w = base.data() + shift;
                    const TensorView src = mat < 2 ? TensorView::make(w, DType::kBF16, {inter, hidden})
                                                   : TensorView::make(w, DType::kBF16, {hidden, inter});
                    auto p =
                        be->prepare_weight("expert", src, lay == 0 ? WeightUse::kMatmul : WeightUse::kStreamedMatmul);
                    const cpu::CpuLayout want = lay == 0 ? cpu::CpuLayout::kPanels : cpu::CpuLayout::kPanels12;
                    if (!p.ok() || static_cast<const cpu::CpuWeight&>(*p.value()).matrix().layout != want) {
                        std::fprintf(stderr, "packing failed\n");
                        return 1;
                    }
                    const cpu::CpuMatrix& m = static_cast<const cpu::CpuWeight&>(*p.value()).matrix();
                    L.bytes += static_cast<int64_t>(p.value()->bytes());
                    if (lay == 1) L.exceptions += cpu::bf16_panels12_exceptions(static_cast<const uint8_t*>(m.data));
                    L.buffers.push_back(std::move(p.value()));
                    (mat == 0 ? L.gate : mat == 1 ? L.up : L.down).push_back(WeightView(*L.buffers.back()));
                }
            }
        }
        pack_s[lay] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_pack).count();
    }
    std::printf(
        "cpu: %s, %d threads; %lld layers x %lld experts of [%lld, %lld], top-%lld; "
        "plain %.0f MB, 12-bit %.0f MB per layer (%.4f%% exceptions)\n",
        cpu::cpu_features().to_string().c_str(), threads, static_cast<long long>(layers),
        static_cast<long long>(experts), static_cast<long long>(inter), static_cast<long long>(hidden),
        static_cast<long long>(top_k), layouts[0][0].bytes / 1e6, layouts[1][0].bytes / 1e6,
        100.0 * static_cast<double>(layouts[1][0].exceptions) / static_cast<double>(3 * experts * per));
    // What the loader pays per layer (page faults of the fresh buffers included).
    std::printf("packing per layer: plain %.2f s, 12-bit %.2f s\n", pack_s[0] / static_cast<double>(layers),
                pack_s[1] / static_cast<double>(layers));

    for (int64_t tokens : token_counts) {
        // Routing: each token picks top_k distinct experts uniformly.
        std::vector<int64_t> rows(static_cast<size_t>(experts), 0);
        std::vector<int64_t> pick(static_cast<size_t>(experts));
        for (int64_t t = 0; t < tokens; ++t) {
            for (int64_t e = 0; e < experts; ++e) pick[static_cast<size_t>(e)] = e;
            std::shuffle(pick.begin(), pick.end(), rng);
            for (int64_t j = 0; j < top_k; ++j) ++rows[static_cast<size_t>(pick[static_cast<size_t>(j)])];
        }
        std::vector<int32_t> offsets(static_cast<size_t>(experts + 1), 0);
        int64_t active = 0;
        for (int64_t e = 0; e < experts; ++e) {
            offsets[static_cast<size_t>(e + 1)] =
                offsets[static_cast<size_t>(e)] + static_cast<int32_t>(rows[static_cast<size_t>(e)]);
            active += rows[static_cast<size_t>(e)] > 0;
        }
        const int64_t r = tokens * top_k;
        std::vector<float> x(static_cast<size_t>(r * hidden)), out(static_cast<size_t>(r * hidden));
        for (auto& v : x) v = normal(rng) * 50.0f;
        std::vector<double> secs[2];
        for (int rep = 0; rep < repeats + 1; ++rep) {
            for (int lay = 0; lay < 2; ++lay) {
                const auto t0 = std::chrono::steady_clock::now();
                for (int64_t l = 0; l < layers; ++l) {
                    const Layer& L = layouts[lay][l];
                    MoeExpertsArgs a{.x_permuted = TensorView::make(x.data(), DType::kF32, {r, hidden}),
                                     .expert_offsets = TensorView::make(offsets.data(), DType::kI32, {experts + 1}),
                                     .w_gate = L.gate,
                                     .w_up = L.up,
                                     .w_down = L.down,
                                     .out_permuted = TensorView::make(out.data(), DType::kF32, {r, hidden})};
                    if (Status st = ops::run(*be, a); !st.ok()) {
                        std::fprintf(stderr, "moe_experts: %s\n", st.to_string().c_str());
                        return 1;
                    }
                }
                const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                if (rep > 0) secs[lay].push_back(s);  // the first pass warms up
            }
        }
        double med[2];
        for (int lay = 0; lay < 2; ++lay) {
            std::sort(secs[lay].begin(), secs[lay].end());
            med[lay] = secs[lay][secs[lay].size() / 2];
        }
        const double flops = 2.0 * 3.0 * static_cast<double>(r * per * layers);
        const double read_frac = static_cast<double>(active) / static_cast<double>(experts);
        std::printf("tokens %lld (%lld active experts, %.1f rows each):", static_cast<long long>(tokens),
                    static_cast<long long>(active), static_cast<double>(r) / static_cast<double>(active));
        for (int lay = 0; lay < 2; ++lay)
            std::printf(" %s %.2f ms/layer %.0f GFLOP/s %.1f GB/s;", lay == 0 ? "plain" : "12-bit",
                        med[lay] * 1e3 / static_cast<double>(layers), flops / med[lay] / 1e9,
                        read_frac * static_cast<double>(layouts[lay][0].bytes * layers) / med[lay] / 1e9);
        std::printf(" 12-bit/plain %.3fx (median of %d)\n", med[0] / med[1], repeats);
    }
    return 0;
}
