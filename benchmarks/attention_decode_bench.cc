// Decode attention on the CPU backend: one query token for each of --seqs sequences with --ctx
// cached positions, over --layers separate paged caches (so that, as in a model, each call
// reads its cache from DRAM, not from the last-level cache). The cache dtypes of --dtypes are
// alternated in one run. Prints, per dtype, the median time of one call (one layer) and the
// K+V bytes it reads per second.
//
//   attention_decode_bench [--threads 2] [--seqs 16] [--ctx 512] [--q-heads 16] [--kv-heads 4]
//                          [--head-dim 64] [--block-size 16] [--layers 16] [--repeats 9]
//                          [--dtypes f32,bf16]
//
// Defaults: moe-s (benchmarks/cpu_vs_llamacpp) at 16 sequences of 512 tokens.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "ops/ops.h"

using namespace moe;

namespace {

int fail(const std::string& what) {
    std::fprintf(stderr, "attention_decode_bench: %s\n", what.c_str());
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    int threads = 2, repeats = 9;
    int64_t seqs = 16, ctx = 512, q_heads = 16, kv_heads = 4, head_dim = 64, block_size = 16, layers = 16;
    std::string dtypes_arg = "f32,bf16";
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i], v = argv[i + 1];
        if (a == "--threads")
            threads = std::stoi(v);
        else if (a == "--repeats")
            repeats = std::stoi(v);
        else if (a == "--seqs")
            seqs = std::stoll(v);
        else if (a == "--ctx")
            ctx = std::stoll(v);
        else if (a == "--q-heads")
            q_heads = std::stoll(v);
        else if (a == "--kv-heads")
            kv_heads = std::stoll(v);
        else if (a == "--head-dim")
            head_dim = std::stoll(v);
        else if (a == "--block-size")
            block_size = std::stoll(v);
        else if (a == "--layers")
            layers = std::stoll(v);
        else if (a == "--dtypes")
            dtypes_arg = v;
        else
            return fail("unknown flag " + a);
    }
    if (seqs < 1 || ctx < 1 || kv_heads < 1 || q_heads % kv_heads != 0 || head_dim < 1 || block_size < 1 ||
        layers < 1 || repeats < 1)
        return fail("flags out of range");
    std::vector<DType> dtypes;
    for (size_t pos = 0; pos < dtypes_arg.size();) {
        const size_t comma = dtypes_arg.find(',', pos);
        const std::string name = dtypes_arg.substr(pos, comma - pos);
        auto d = parse_dtype(name);
        if (!d || (*d != DType::kF32 && *d != DType::kBF16)) return fail("--dtypes: f32 and/or bf16, got " + name);
        dtypes.push_back(*d);
        pos = comma == std::string::npos ? dtypes_arg.size() : comma + 1;
    }

    auto be = make_cpu_backend({.num_threads = threads});
    const int64_t blocks_per_seq = (ctx + 1 + block_size - 1) / block_size;
    const int64_t num_blocks = blocks_per_seq * seqs;
    const int64_t cache_elems = num_blocks * block_size * kv_heads * head_dim;
    // Block tables: the sequences' blocks interleaved (as sequences that grew together get them
    // from the engine's free list), the same for every layer.
    std::vector<int32_t> tables(static_cast<size_t>(seqs * blocks_per_seq));
    for (int64_t s = 0; s < seqs; ++s)
        for (int64_t b = 0; b < blocks_per_seq; ++b)
            tables[static_cast<size_t>(s * blocks_per_seq + b)] = static_cast<int32_t>(b * seqs + s);
    std::vector<int32_t> query_start(static_cast<size_t>(seqs + 1)),
        kv_lens(static_cast<size_t>(seqs), static_cast<int32_t>(ctx + 1));
    std::iota(query_start.begin(), query_start.end(), 0);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    std::vector<float> q(static_cast<size_t>(seqs * q_heads * head_dim)), out(q.size());
    for (auto& x : q) x = uni(rng);

    struct Caches {
        std::vector<DeviceBuffer> k, v;
    };
    std::vector<Caches> caches(dtypes.size());
    for (size_t d = 0; d < dtypes.size(); ++d) {
        const size_t bytes = static_cast<size_t>(cache_elems) * dtype_size(dtypes[d]);
        for (int64_t l = 0; l < layers; ++l) {
            for (auto* list : {&caches[d].k, &caches[d].v}) {
                auto buf = DeviceBuffer::allocate(*be, bytes);
                if (!buf.ok()) return fail(buf.status().to_string());
                // Any finite values: bf16 0x3c00..0x3fff / the same bits as f32 halves.
                auto* p = static_cast<uint16_t*>(buf.value().data());
                for (size_t i = 0; i < bytes / 2; ++i)
                    p[i] = static_cast<uint16_t>(0x3c00 + (i * 2654435761u >> 22) % 0x400);
                list->push_back(std::move(buf.value()));
            }
        }
    }
    const std::initializer_list<int64_t> cache_shape = {num_blocks, block_size, kv_heads, head_dim};
    std::vector<std::vector<double>> us(dtypes.size());
    for (int r = 0; r < repeats + 1; ++r) {  // the first pass warms up
        for (size_t d = 0; d < dtypes.size(); ++d) {
            const auto t0 = std::chrono::steady_clock::now();
            for (int64_t l = 0; l < layers; ++l) {
                AttentionArgs a;
                a.q = TensorView::make(q.data(), DType::kF32, {seqs, q_heads, head_dim});
                a.k_cache = TensorView::make(caches[d].k[static_cast<size_t>(l)].data(), dtypes[d], cache_shape);
                a.v_cache = TensorView::make(caches[d].v[static_cast<size_t>(l)].data(), dtypes[d], cache_shape);
                a.block_tables = TensorView::make(tables.data(), DType::kI32, {seqs, blocks_per_seq});
                a.query_start = TensorView::make(query_start.data(), DType::kI32, {seqs + 1});
                a.kv_lens = TensorView::make(kv_lens.data(), DType::kI32, {seqs});
                a.out = TensorView::make(out.data(), DType::kF32, {seqs, q_heads, head_dim});
                a.scale = 0.125f;
                if (Status s = ops::run(*be, a); !s.ok()) return fail(s.to_string());
            }
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (r > 0) us[d].push_back(s * 1e6 / static_cast<double>(layers));
        }
    }
    std::printf(
        "attention decode: %lld seqs x %lld cached, %lld/%lld heads, head_dim %lld, pages of %lld, %lld layers, "
        "%d threads\n",
        static_cast<long long>(seqs), static_cast<long long>(ctx + 1), static_cast<long long>(q_heads),
        static_cast<long long>(kv_heads), static_cast<long long>(head_dim), static_cast<long long>(block_size),
        static_cast<long long>(layers), threads);
    for (size_t d = 0; d < dtypes.size(); ++d) {
        std::sort(us[d].begin(), us[d].end());
        const double med = us[d][us[d].size() / 2];
        const double bytes = 2.0 * static_cast<double>(seqs * (ctx + 1) * kv_heads * head_dim) *
                             static_cast<double>(dtype_size(dtypes[d]));
        std::printf("%-4s cache: %.1f us per layer (median of %d), K+V read at %.1f GB/s\n", dtype_name(dtypes[d]), med,
                    repeats, bytes / med * 1e-3);
    }
    return 0;
}
