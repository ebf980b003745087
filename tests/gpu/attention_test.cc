// attention on the CUDA backend against moe::ref::attention: the cases and tolerances of
// tests/ops/attention_test.cc, plus long decodes that take the split-KV path, and bad metadata
// reported with the reference's message.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "cuda_op_fixture.h"

namespace moe::testing {
namespace {

using CudaAttentionTest = CudaOpTest;

struct AttnCase {
    std::string name;
    std::vector<int32_t> q_lens, kv_lens;
    int64_t q_heads, kv_heads, head_dim, block_size;
    int window;
    DType cache_dtype;
    float q_amp = 1.0f;
};

struct AttnInputs {
    std::vector<int32_t> query_start, tables, kv_lens;
    std::vector<float> q, k_f, v_f;
    std::vector<uint16_t> k_b, v_b;
    int64_t num_seqs = 0, tokens = 0, max_blocks = 0, num_blocks = 0;
};

AttnInputs make_inputs(const AttnCase& c, uint32_t seed) {
    Rng rng(seed);
    AttnInputs in;
    in.num_seqs = static_cast<int64_t>(c.kv_lens.size());
    in.kv_lens = c.kv_lens;
    in.query_start.assign(static_cast<size_t>(in.num_seqs) + 1, 0);
    for (size_t s = 0; s < c.q_lens.size(); ++s) in.query_start[s + 1] = in.query_start[s] + c.q_lens[s];
    in.tokens = in.query_start.back();
    int64_t used = 0;
    in.max_blocks = 1;
    for (int32_t len : c.kv_lens) {
        in.max_blocks = std::max<int64_t>(in.max_blocks, (len + c.block_size - 1) / c.block_size);
        used += (len + c.block_size - 1) / c.block_size;
    }
    in.max_blocks += 1;  // a spare column left at -1: never read
    in.num_blocks = used + 3;
    std::vector<int32_t> perm(static_cast<size_t>(in.num_blocks));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng.gen());
    in.tables.assign(static_cast<size_t>(in.num_seqs * in.max_blocks), -1);
    size_t next = 0;
    for (int64_t s = 0; s < in.num_seqs; ++s) {
        const int64_t kv_len = c.kv_lens[static_cast<size_t>(s)];
        const int64_t q_len = c.q_lens[static_cast<size_t>(s)];
        const int64_t first_visible = c.window > 0 ? std::max<int64_t>(0, kv_len - q_len - c.window + 1) : 0;
        for (int64_t b = 0; b < (kv_len + c.block_size - 1) / c.block_size; ++b) {
            const int32_t block = perm[next++];
            in.tables[static_cast<size_t>(s * in.max_blocks + b)] =
                (b + 1) * c.block_size <= first_visible ? -1 : block;
        }
    }
    const size_t cache_elems = static_cast<size_t>(in.num_blocks * c.block_size * c.kv_heads * c.head_dim);
    in.k_f = rng.uniform(cache_elems, -1, 1);
    in.v_f = rng.uniform(cache_elems, -1, 1);
    in.k_b = to_bf16(in.k_f);
    in.v_b = to_bf16(in.v_f);
    in.q = rng.uniform(static_cast<size_t>(in.tokens * c.q_heads * c.head_dim), -c.q_amp, c.q_amp);
    return in;
}

// The args over `in` placed in `arena` (device) or over the host vectors (arena == nullptr).
AttentionArgs make_args(const AttnCase& c, AttnInputs& in, DeviceArena* arena, std::vector<float>* host_out) {
    const bool bf16 = c.cache_dtype == DType::kBF16;
    const std::initializer_list<int64_t> cache_shape = {in.num_blocks, c.block_size, c.kv_heads, c.head_dim};
    AttentionArgs a;
    a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    a.sliding_window = c.window;
    if (arena == nullptr) {
        a.q = host_view(in.q.data(), DType::kF32, {in.tokens, c.q_heads, c.head_dim});
        a.k_cache = host_view(bf16 ? static_cast<void*>(in.k_b.data()) : in.k_f.data(), c.cache_dtype, cache_shape);
        a.v_cache = host_view(bf16 ? static_cast<void*>(in.v_b.data()) : in.v_f.data(), c.cache_dtype, cache_shape);
        a.block_tables = host_view(in.tables.data(), DType::kI32, {in.num_seqs, in.max_blocks});
        a.query_start = host_view(in.query_start.data(), DType::kI32, {in.num_seqs + 1});
        a.kv_lens = host_view(in.kv_lens.data(), DType::kI32, {in.num_seqs});
        a.out = host_view(host_out->data(), DType::kF32, {in.tokens, c.q_heads, c.head_dim});
        return a;
    }
    a.q = arena->put(in.q, DType::kF32, {in.tokens, c.q_heads, c.head_dim});
    a.k_cache = bf16 ? arena->put(in.k_b, c.cache_dtype, cache_shape) : arena->put(in.k_f, c.cache_dtype, cache_shape);
    a.v_cache = bf16 ? arena->put(in.v_b, c.cache_dtype, cache_shape) : arena->put(in.v_f, c.cache_dtype, cache_shape);
    a.block_tables = arena->put(in.tables, DType::kI32, {in.num_seqs, in.max_blocks});
    a.query_start = arena->put(in.query_start, DType::kI32, {in.num_seqs + 1});
    a.kv_lens = arena->put(in.kv_lens, DType::kI32, {in.num_seqs});
    a.out = arena->alloc(DType::kF32, {in.tokens, c.q_heads, c.head_dim});
    return a;
}

void run_case(Backend& be, const AttnCase& c, uint32_t seed) {
    SCOPED_TRACE(c.name + " seed=" + std::to_string(seed));
    AttnInputs in = make_inputs(c, seed);
    std::vector<float> ref(in.q.size());
    MOE_ASSERT_OK(ref::attention(make_args(c, in, nullptr, &ref)));
    std::vector<float> runs[2];
    for (auto& out : runs) {
        DeviceArena arena(be);
        const AttentionArgs a = make_args(c, in, &arena, nullptr);
        MOE_ASSERT_OK(ops::run(be, a));
        out = arena.get<float>(a.out);
    }
    expect_close(runs[0], ref, 2e-5, 1e-4, "out");
    expect_bitwise_equal(runs[0], runs[1], "out");
}

TEST_F(CudaAttentionTest, MatchesReference) {
    const AttnCase cases[] = {
        {"decode gqa4", {1, 1, 1}, {1, 17, 40}, 8, 2, 64, 16, 0, DType::kF32},
        {"prefill mha", {19, 5}, {19, 5}, 4, 4, 32, 4, 0, DType::kF32},
        {"prefill after cached prefix gqa3", {7, 3}, {30, 3}, 6, 2, 16, 8, 0, DType::kF32, 8.0f},
        {"mixed batch mqa bf16", {1, 11, 0, 1}, {9, 20, 5, 1}, 4, 1, 64, 16, 0, DType::kBF16},
        {"sliding window 5", {12, 1}, {40, 33}, 4, 2, 32, 4, 5, DType::kF32},
        {"sliding window 16 bf16", {19, 1, 2}, {19, 50, 111}, 2, 1, 19, 8, 16, DType::kBF16},
        {"single token head_dim 1", {1}, {1}, 1, 1, 1, 1, 0, DType::kF32},
    };
    uint32_t seed = 1000;
    for (const AttnCase& c : cases) run_case(be(), c, ++seed);
}

// Long single-sequence decodes: the plan splits the KV length (tests/unit/cuda_plan_test.cc pins
// that down), so these run the split kernel and the combine pass. Qwen3 shapes: 32 q / 4 KV heads,
// head_dim 128; and a sliding window that leaves early splits empty.
TEST_F(CudaAttentionTest, LongDecodeTakesTheSplitPath) {
    const AttnCase cases[] = {
        {"decode 3000 qwen3 heads", {1}, {3000}, 32, 4, 128, 16, 0, DType::kF32},
        {"decode 4100 bf16 two seqs", {1, 1}, {4100, 700}, 8, 2, 128, 16, 0, DType::kBF16},
        {"decode 5000 window 600", {1}, {5000}, 4, 1, 64, 16, 600, DType::kF32},
        {"prefill 300 after 2000 cached, head_dim 256", {300}, {2300}, 4, 2, 256, 16, 0, DType::kBF16},
    };
    uint32_t seed = 2000;
    for (const AttnCase& c : cases) run_case(be(), c, ++seed);
}

TEST_F(CudaAttentionTest, BadMetadataGetsTheReferenceMessage) {
    const AttnCase c{"bad", {3, 1}, {10, 6}, 4, 2, 32, 4, 0, DType::kF32};
    for (int which = 0; which < 3; ++which) {
        SCOPED_TRACE(which);
        AttnInputs in = make_inputs(c, 77);
        if (which == 0) in.tables[1] = static_cast<int32_t>(in.num_blocks);  // visible block past the cache
        if (which == 1) in.kv_lens[1] = static_cast<int32_t>(in.max_blocks * c.block_size + 1);
        if (which == 2) in.query_start[1] = 5;  // decreasing: query_start[2] = 4 < 5
        std::vector<float> ref(in.q.size());
        const Status want = ref::attention(make_args(c, in, nullptr, &ref));
        ASSERT_EQ(want.code(), StatusCode::kOutOfRange) << want.to_string();
        DeviceArena arena(be());
        const Status got = ops::run(be(), make_args(c, in, &arena, nullptr));
        EXPECT_EQ(got.code(), StatusCode::kOutOfRange) << got.to_string();
        EXPECT_EQ(got.message(), want.message());
    }
}

}  // namespace
}  // namespace moe::testing
