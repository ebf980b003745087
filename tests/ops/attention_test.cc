// kv_write and paged attention on every backend vs the reference: decode, prefill, prefill
// after a cached prefix, mixed batches, GQA ratios 1..4, sliding windows, f32 and bf16 caches.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "ops/op_test_util.h"

namespace moe::testing {
namespace {

MOE_BACKEND_TEST_SUITE(OpsKvWrite);

TEST_P(OpsKvWrite, CopiesEveryTokenToItsSlotExactly) {
    uint32_t seed = 900;
    for (DType dt : {DType::kF32, DType::kBF16}) {
        for (int64_t t : {1, 19}) {
            ++seed;
            SCOPED_TRACE(backend_name() + " " + dtype_name(dt) + " T=" + std::to_string(t) +
                         " seed=" + std::to_string(seed));
            Rng rng(seed);
            const int64_t blocks = 7, block_size = 4, heads = 2, head_dim = 19;
            const int64_t cache_elems = blocks * block_size * heads * head_dim;
            std::vector<int64_t> all_slots(static_cast<size_t>(blocks * block_size));
            std::iota(all_slots.begin(), all_slots.end(), 0);
            std::shuffle(all_slots.begin(), all_slots.end(), rng.gen());
            std::vector<int64_t> slots(all_slots.begin(), all_slots.begin() + t);
            if (t > 2) slots[1] = -1;  // skipped token
            auto k = rng.uniform(static_cast<size_t>(t * heads * head_dim), -2, 2);
            auto v = rng.uniform(static_cast<size_t>(t * heads * head_dim), -2, 2);
            auto k_cache0 = to_bf16(rng.uniform(static_cast<size_t>(cache_elems), -1, 1));
            auto v_cache0 = to_bf16(rng.uniform(static_cast<size_t>(cache_elems), -1, 1));
            std::vector<float> k_cache0_f(k_cache0.size()), v_cache0_f(v_cache0.size());
            convert_to_f32(k_cache0.data(), DType::kBF16, k_cache0_f.data(), k_cache0.size());
            convert_to_f32(v_cache0.data(), DType::kBF16, v_cache0_f.data(), v_cache0.size());

            auto run = [&](auto& kc, auto& vc,
                           bool on_backend) -> std::pair<std::vector<uint8_t>, std::vector<uint8_t>> {
                using T = typename std::decay_t<decltype(kc)>::value_type;
                auto as_bytes = [](const std::vector<T>& x) {
                    std::vector<uint8_t> b(x.size() * sizeof(T));
                    std::memcpy(b.data(), x.data(), b.size());
                    return b;
                };
                if (!on_backend) {
                    auto kc_copy = kc, vc_copy = vc;
                    Status s = ref::kv_write({host_view(k.data(), DType::kF32, {t, heads, head_dim}),
                                              host_view(v.data(), DType::kF32, {t, heads, head_dim}),
                                              host_view(slots.data(), DType::kI64, {t}),
                                              host_view(kc_copy.data(), dt, {blocks, block_size, heads, head_dim}),
                                              host_view(vc_copy.data(), dt, {blocks, block_size, heads, head_dim})});
                    EXPECT_TRUE(s.ok()) << s.to_string();
                    return {as_bytes(kc_copy), as_bytes(vc_copy)};
                }
                DeviceArena arena(be());
                KvWriteArgs a{arena.put(k, DType::kF32, {t, heads, head_dim}),
                              arena.put(v, DType::kF32, {t, heads, head_dim}), arena.put(slots, DType::kI64, {t}),
                              arena.put(kc, dt, {blocks, block_size, heads, head_dim}),
                              arena.put(vc, dt, {blocks, block_size, heads, head_dim})};
                Status s = ops::run(be(), a);
                EXPECT_TRUE(s.ok()) << s.to_string();
                return {as_bytes(arena.get<T>(a.k_cache)), as_bytes(arena.get<T>(a.v_cache))};
            };
            std::pair<std::vector<uint8_t>, std::vector<uint8_t>> ref, run1, run2;
            if (dt == DType::kF32) {
                ref = run(k_cache0_f, v_cache0_f, false);
                run1 = run(k_cache0_f, v_cache0_f, true);
                run2 = run(k_cache0_f, v_cache0_f, true);
            } else {
                ref = run(k_cache0, v_cache0, false);
                run1 = run(k_cache0, v_cache0, true);
                run2 = run(k_cache0, v_cache0, true);
            }
            expect_exact(run1.first, ref.first, "k_cache bytes");
            expect_exact(run1.second, ref.second, "v_cache bytes");
            expect_bitwise_equal(run1.first, run2.first, "k_cache");
            expect_bitwise_equal(run1.second, run2.second, "v_cache");
        }
    }
}

// Slots outside the cache (one past the end, below -1) are reported, naming the first, and
// written nowhere: not over other slots, not past the cache (the arena's canaries sit right
// behind and before it, where slots 20 and -2 would land).
TEST_P(OpsKvWrite, SlotOutsideTheCacheIsReportedAndNotWritten) {
    const int64_t blocks = 5, block_size = 4, heads = 2, head_dim = 19, tokens = 3;
    const int64_t cache_elems = blocks * block_size * heads * head_dim;
    Rng rng(31);
    auto k = rng.uniform(static_cast<size_t>(tokens * heads * head_dim), -1, 1);
    auto v = rng.uniform(static_cast<size_t>(tokens * heads * head_dim), -1, 1);
    std::vector<int64_t> slots = {1, blocks * block_size, -2};
    const std::vector<float> cache0(static_cast<size_t>(cache_elems), 7.0f);
    DeviceArena arena(be());
    KvWriteArgs a{arena.put(k, DType::kF32, {tokens, heads, head_dim}),
                  arena.put(v, DType::kF32, {tokens, heads, head_dim}), arena.put(slots, DType::kI64, {tokens}),
                  arena.put(cache0, DType::kF32, {blocks, block_size, heads, head_dim}),
                  arena.put(cache0, DType::kF32, {blocks, block_size, heads, head_dim})};
    const Status s = ops::run(be(), a);
    EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.to_string();
    EXPECT_NE(s.message().find("slot_mapping[1] = 20 is outside [-1, 20)"), std::string::npos) << s.message();
    // Slot 1 is good: a backend may or may not have written it before reporting.
    const int64_t row = heads * head_dim;
    for (const TensorView* cache : {&a.k_cache, &a.v_cache}) {
        auto got = arena.get<float>(*cache);
        std::fill(got.begin() + row, got.begin() + 2 * row, 7.0f);
        expect_exact(got, cache0, backend_name() + (cache == &a.k_cache ? " k_cache" : " v_cache"));
    }
}

struct AttnCase {
    std::string name;
    std::vector<int32_t> q_lens, kv_lens;
    int64_t q_heads, kv_heads, head_dim, block_size;
    int window;
    DType cache_dtype;
    float q_amp = 1.0f;  // large values stress the softmax's max subtraction
    // gpt-oss: one sink logit per q head, uniform in [sink_lo, sink_hi]; none when both are 0.
    float sink_lo = 0.0f, sink_hi = 0.0f;
};

void run_attention_case(Backend& be, const std::string& backend_name, const AttnCase& c, uint32_t seed) {
    SCOPED_TRACE(backend_name + " " + c.name + " seed=" + std::to_string(seed));
    Rng rng(seed);
    const int64_t num_seqs = static_cast<int64_t>(c.kv_lens.size());
    std::vector<int32_t> query_start(static_cast<size_t>(num_seqs) + 1, 0);
    for (int64_t s = 0; s < num_seqs; ++s)
        query_start[static_cast<size_t>(s) + 1] =
            query_start[static_cast<size_t>(s)] + c.q_lens[static_cast<size_t>(s)];
    const int64_t tokens = query_start.back();
    int64_t max_blocks = 1, used_blocks = 0;
    for (int32_t len : c.kv_lens) {
        max_blocks = std::max<int64_t>(max_blocks, (len + c.block_size - 1) / c.block_size);
        used_blocks += (len + c.block_size - 1) / c.block_size;
    }
    max_blocks += 1;  // a spare column left at -1: never read
    const int64_t num_blocks = used_blocks + 3;
    std::vector<int32_t> perm(static_cast<size_t>(num_blocks));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng.gen());
    std::vector<int32_t> tables(static_cast<size_t>(num_seqs * max_blocks), -1);
    size_t next = 0;
    for (int64_t s = 0; s < num_seqs; ++s) {
        const int64_t kv_len = c.kv_lens[static_cast<size_t>(s)];
        const int64_t q_len = c.q_lens[static_cast<size_t>(s)];
        const int64_t first_visible = c.window > 0 ? std::max<int64_t>(0, kv_len - q_len - c.window + 1) : 0;
        for (int64_t b = 0; b < (kv_len + c.block_size - 1) / c.block_size; ++b) {
            const int32_t block = perm[next++];
            // Blocks wholly before the window may be dropped by the cache manager.
            tables[static_cast<size_t>(s * max_blocks + b)] = (b + 1) * c.block_size <= first_visible ? -1 : block;
        }
    }
    const int64_t cache_elems = num_blocks * c.block_size * c.kv_heads * c.head_dim;
    auto k_f = rng.uniform(static_cast<size_t>(cache_elems), -1, 1);
    auto v_f = rng.uniform(static_cast<size_t>(cache_elems), -1, 1);
    auto k_b = to_bf16(k_f), v_b = to_bf16(v_f);
    const bool bf16 = c.cache_dtype == DType::kBF16;
    auto q = rng.uniform(static_cast<size_t>(tokens * c.q_heads * c.head_dim), -c.q_amp, c.q_amp);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    const std::initializer_list<int64_t> cache_shape = {num_blocks, c.block_size, c.kv_heads, c.head_dim};

    std::vector<float> ref(q.size());
    AttentionArgs r;
    r.q = host_view(q.data(), DType::kF32, {tokens, c.q_heads, c.head_dim});
    r.k_cache = host_view(bf16 ? static_cast<void*>(k_b.data()) : k_f.data(), c.cache_dtype, cache_shape);
    r.v_cache = host_view(bf16 ? static_cast<void*>(v_b.data()) : v_f.data(), c.cache_dtype, cache_shape);
    r.block_tables = host_view(tables.data(), DType::kI32, {num_seqs, max_blocks});
    r.query_start = host_view(query_start.data(), DType::kI32, {num_seqs + 1});
    r.kv_lens = host_view(const_cast<int32_t*>(c.kv_lens.data()), DType::kI32, {num_seqs});
    r.out = host_view(ref.data(), DType::kF32, {tokens, c.q_heads, c.head_dim});
    r.scale = scale;
    r.sliding_window = c.window;
    std::vector<float> sinks;
    if (c.sink_lo != 0.0f || c.sink_hi != 0.0f) {
        sinks = rng.uniform(static_cast<size_t>(c.q_heads), c.sink_lo, c.sink_hi);
        r.sinks = host_view(sinks.data(), DType::kF32, {c.q_heads});
    }
    MOE_ASSERT_OK(ref::attention(r));

    std::vector<float> runs[2];
    for (auto& out : runs) {
        DeviceArena arena(be);
        AttentionArgs a = r;
        a.q = arena.put(q, DType::kF32, {tokens, c.q_heads, c.head_dim});
        a.k_cache = bf16 ? arena.put(k_b, c.cache_dtype, cache_shape) : arena.put(k_f, c.cache_dtype, cache_shape);
        a.v_cache = bf16 ? arena.put(v_b, c.cache_dtype, cache_shape) : arena.put(v_f, c.cache_dtype, cache_shape);
        a.block_tables = arena.put(tables, DType::kI32, {num_seqs, max_blocks});
        a.query_start = arena.put(query_start, DType::kI32, {num_seqs + 1});
        a.kv_lens = arena.put(c.kv_lens, DType::kI32, {num_seqs});
        a.out = arena.alloc(DType::kF32, {tokens, c.q_heads, c.head_dim});
        if (!sinks.empty()) a.sinks = arena.put(sinks, DType::kF32, {c.q_heads});
        MOE_ASSERT_OK(ops::run(be, a));
        out = arena.get<float>(a.out);
    }
    expect_close(runs[0], ref, 2e-5, 1e-4, "out");
    expect_bitwise_equal(runs[0], runs[1], "out");
}

MOE_BACKEND_TEST_SUITE(OpsAttention);

TEST_P(OpsAttention, MatchesReference) {
    const AttnCase cases[] = {
        {"decode gqa4", {1, 1, 1}, {1, 17, 40}, 8, 2, 64, 16, 0, DType::kF32},
        {"prefill mha", {19, 5}, {19, 5}, 4, 4, 32, 4, 0, DType::kF32},
        {"prefill after cached prefix gqa3", {7, 3}, {30, 3}, 6, 2, 16, 8, 0, DType::kF32, 8.0f},
        {"mixed batch mqa bf16", {1, 11, 0, 1}, {9, 20, 5, 1}, 4, 1, 64, 16, 0, DType::kBF16},
        {"sliding window 5", {12, 1}, {40, 33}, 4, 2, 32, 4, 5, DType::kF32},
        {"sliding window 16 bf16", {19, 1, 2}, {19, 50, 111}, 2, 1, 19, 8, 16, DType::kBF16},
        {"single token head_dim 1", {1}, {1}, 1, 1, 1, 1, 0, DType::kF32},
        // Query blocks of 16 and chunks of 32 positions inside 64-position pages (CPU tiles).
        {"long prefill gqa4 hd128 pages of 64", {40, 1}, {100, 70}, 8, 2, 128, 64, 0, DType::kF32},
        {"long prefill window 37 bf16", {35}, {90}, 4, 2, 64, 64, 37, DType::kBF16},
        // Enough decode rows for the CPU to give each sequence's KV heads to one task (whole
        // cache rows): groups of 4, of 3 (4-row groups that span two KV heads) with a window and
        // a prefill in the batch, and of 1 with an odd head_dim. Groups of 4 with whole vectors
        // take the decode fast path (the K/V rows read in place, bf16 widened in registers).
        {"many decode seqs gqa4",
         {1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
         {1, 17, 40, 64, 65, 100, 3, 33, 16, 90},
         8,
         2,
         64,
         16,
         0,
         DType::kF32},
        {"many decode seqs gqa3 window bf16",
         {1, 1, 1, 1, 5, 1, 1, 1, 1, 1},
         {9, 30, 1, 44, 20, 77, 8, 21, 50, 13},
         6,
         2,
         32,
         8,
         20,
         DType::kBF16},
        {"many decode seqs gqa4 hd128 bf16",
         {1, 1, 1, 1, 1, 1, 1, 1, 1},
         {70, 5, 33, 64, 1, 40, 97, 12, 50},
         8,
         2,
         128,
         16,
         0,
         DType::kBF16},
        {"many decode seqs mha hd19",
         {1, 1, 1, 1, 1, 1, 1, 1, 1},
         {5, 9, 12, 1, 40, 31, 7, 26, 18},
         4,
         4,
         19,
         4,
         0,
         DType::kF32},
    };
    uint32_t seed = 1000;
    for (const AttnCase& c : cases) run_attention_case(be(), backend_name(), c, ++seed);
}

// gpt-oss's attention sinks (one logit per q head in the denominator), with and without a
// sliding window, decode (the CPU's fast path: groups of 4 over whole vectors; the CUDA
// backend's split-KV combine on the long one) and prefill, f32 and bf16 caches; sinks far above
// the scores (the output shrinks toward 0) and far below them (no effect).
TEST_P(OpsAttention, SinksMatchReference) {
    AttnCase cases[] = {
        {"sinks decode gqa4 window 8", {1, 1, 1}, {1, 17, 40}, 8, 2, 64, 16, 8, DType::kF32},
        {"sinks prefill gqa2 window 8 bf16", {19, 30}, {19, 30}, 4, 2, 16, 4, 8, DType::kBF16},
        {"sinks prefill after prefix full", {7, 3}, {30, 3}, 6, 2, 16, 8, 0, DType::kF32},
        {"sinks many decode seqs gqa4 bf16",
         {1, 1, 1, 1, 1, 1, 1, 1, 1},
         {70, 5, 33, 64, 1, 40, 97, 12, 50},
         8,
         2,
         64,
         16,
         0,
         DType::kBF16},
        {"sinks long decode 3000", {1}, {3000}, 8, 1, 64, 16, 0, DType::kF32},
        {"sinks far above", {5, 1}, {5, 20}, 4, 2, 32, 4, 0, DType::kF32},
        {"sinks far below", {5, 1}, {5, 20}, 4, 2, 32, 4, 6, DType::kF32},
    };
    for (AttnCase& c : cases) {
        c.sink_lo = -2.0f;
        c.sink_hi = 2.0f;
    }
    cases[5].sink_lo = 30.0f;
    cases[5].sink_hi = 40.0f;
    cases[6].sink_lo = -60.0f;
    cases[6].sink_hi = -50.0f;
    uint32_t seed = 3000;
    for (const AttnCase& c : cases) run_attention_case(be(), backend_name(), c, ++seed);
}

// Long sequences: single-sequence decodes over thousands of cached tokens (the CUDA backend
// splits the KV length over blocks and combines the splits; tests/unit/cuda_plan_test.cc pins
// that plan down), Qwen3's heads (32 q / 4 KV, head_dim 128), a sliding window that leaves early
// splits empty, and a prefill of 300 after 2000 cached with head_dim 256.
TEST_P(OpsAttention, LongSequences) {
    const AttnCase cases[] = {
        {"decode 3000 qwen3 heads", {1}, {3000}, 32, 4, 128, 16, 0, DType::kF32},
        {"decode 4100 bf16 two seqs", {1, 1}, {4100, 700}, 8, 2, 128, 16, 0, DType::kBF16},
        {"decode 5000 window 600", {1}, {5000}, 4, 1, 64, 16, 600, DType::kF32},
        {"prefill 300 after 2000 cached, head_dim 256", {300}, {2300}, 4, 2, 256, 16, 0, DType::kBF16},
    };
    uint32_t seed = 2000;
    for (const AttnCase& c : cases) run_attention_case(be(), backend_name(), c, ++seed);
}

// Bad metadata (a visible block past the cache, kv_len past the table, decreasing query_start)
// gets exactly the reference's message.
TEST_P(OpsAttention, BadMetadataGetsTheReferenceMessage) {
    const int64_t q_heads = 4, kv_heads = 2, head_dim = 32, block_size = 4;
    const std::vector<int32_t> q_lens = {3, 1}, kv_lens0 = {10, 6};
    const int64_t num_seqs = 2, tokens = 4, max_blocks = 4, num_blocks = 8;
    for (int which = 0; which < 3; ++which) {
        SCOPED_TRACE(backend_name() + " case " + std::to_string(which));
        Rng rng(77);
        std::vector<int32_t> query_start = {0, q_lens[0], q_lens[0] + q_lens[1]};
        std::vector<int32_t> kv_lens = kv_lens0;
        // Sequence 0: blocks 0, 1, 2; sequence 1: blocks 3, 4; unused columns -1.
        std::vector<int32_t> tables = {0, 1, 2, -1, 3, 4, -1, -1};
        if (which == 0) tables[1] = static_cast<int32_t>(num_blocks);
        if (which == 1) kv_lens[1] = static_cast<int32_t>(max_blocks * block_size + 1);
        if (which == 2) query_start[1] = 5;  // query_start[2] = 4 < 5
        const std::initializer_list<int64_t> cache_shape = {num_blocks, block_size, kv_heads, head_dim};
        auto q = rng.uniform(static_cast<size_t>(tokens * q_heads * head_dim), -1, 1);
        auto kc = rng.uniform(static_cast<size_t>(num_blocks * block_size * kv_heads * head_dim), -1, 1);
        auto vc = rng.uniform(kc.size(), -1, 1);
        std::vector<float> out(q.size());
        AttentionArgs r;
        r.q = host_view(q.data(), DType::kF32, {tokens, q_heads, head_dim});
        r.k_cache = host_view(kc.data(), DType::kF32, cache_shape);
        r.v_cache = host_view(vc.data(), DType::kF32, cache_shape);
        r.block_tables = host_view(tables.data(), DType::kI32, {num_seqs, max_blocks});
        r.query_start = host_view(query_start.data(), DType::kI32, {num_seqs + 1});
        r.kv_lens = host_view(kv_lens.data(), DType::kI32, {num_seqs});
        r.out = host_view(out.data(), DType::kF32, {tokens, q_heads, head_dim});
        r.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
        const Status want = ref::attention(r);
        ASSERT_EQ(want.code(), StatusCode::kOutOfRange) << want.to_string();
        DeviceArena arena(be());
        AttentionArgs a = r;
        a.q = arena.put(q, DType::kF32, {tokens, q_heads, head_dim});
        a.k_cache = arena.put(kc, DType::kF32, cache_shape);
        a.v_cache = arena.put(vc, DType::kF32, cache_shape);
        a.block_tables = arena.put(tables, DType::kI32, {num_seqs, max_blocks});
        a.query_start = arena.put(query_start, DType::kI32, {num_seqs + 1});
        a.kv_lens = arena.put(kv_lens, DType::kI32, {num_seqs});
        a.out = arena.alloc(DType::kF32, {tokens, q_heads, head_dim});
        const Status got = ops::run(be(), a);
        EXPECT_EQ(got.code(), StatusCode::kOutOfRange) << got.to_string();
        EXPECT_EQ(got.message(), want.message());
    }
}

}  // namespace
}  // namespace moe::testing
