// The MLA ops and DeepSeek-V3's grouped router (ops/mla_ops.h) on every backend vs the naive
// reference: both CPU backends and the CUDA backend (kernels/mla; its instances skip without a
// device). A backend without an op would skip with the reason; every backend has all 8 now.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "ops/mla_ops.h"
#include "ops/op_test_util.h"

namespace moe::testing {
namespace {

// Runs `s`; an op the backend lacks skips the case (reported), anything else must be OK.
#define MOE_RUN_OR_SKIP(expr)                                                                \
    do {                                                                                     \
        const ::moe::Status moe_r_ = (expr);                                                 \
        if (moe_r_.code() == StatusCode::kUnimplemented) GTEST_SKIP() << moe_r_.to_string(); \
        ASSERT_TRUE(moe_r_.ok()) << moe_r_.to_string();                                      \
    } while (0)

TensorView strided3(TensorView flat, int64_t d0, int64_t d1, int64_t d2, int64_t s0, int64_t s1) {
    TensorView v = flat;
    v.ndim = 3;
    v.shape = {d0, d1, d2, 0};
    v.strides = {s0, s1, 1, 0};
    return v;
}

MOE_BACKEND_TEST_SUITE(OpsMla);

// Every backend implements all 8 (so no case below can pass by skipping as unimplemented).
TEST_P(OpsMla, EveryBackendImplementsEveryMlaOp) {
    const OpTable& t = be().ops();
    EXPECT_NE(t.rope_table, nullptr);
    EXPECT_NE(t.latent_write, nullptr);
    EXPECT_NE(t.latent_gather, nullptr);
    EXPECT_NE(t.mla_expand, nullptr);
    EXPECT_NE(t.ragged_attention, nullptr);
    EXPECT_NE(t.mla_attention, nullptr);
    EXPECT_NE(t.head_gemm, nullptr);
    EXPECT_NE(t.moe_route_grouped, nullptr);
}

TEST_P(OpsMla, RopeTableBothLayoutsOnStridedRows) {
    Rng rng(2001);
    for (bool interleaved : {false, true}) {
        SCOPED_TRACE(std::string("interleaved ") + (interleaved ? "yes" : "no"));
        const int64_t T = 19, per = 3, D = 8, ld = 13;  // rows of 8 inside rows of 13
        auto x = rng.uniform(static_cast<size_t>(T * per * ld), -2, 2);
        auto inv = rng.uniform(static_cast<size_t>(D / 2), 0.001f, 1.0f);
        auto pos = rng.ints(static_cast<size_t>(T), 0, 300);
        auto ref_x = x;
        MOE_ASSERT_OK(ref::rope_table({rows_view(host_view(ref_x.data(), DType::kF32, {T * per * ld}), T * per, D, ld),
                                       host_view(pos.data(), DType::kI32, {T}),
                                       host_view(inv.data(), DType::kF32, {D / 2}), 1.3f, interleaved}));
        DeviceArena arena(be());
        const TensorView xv = arena.put(x, DType::kF32, {T * per * ld});
        MOE_RUN_OR_SKIP(ops::run(be(), RopeTableArgs{.x = rows_view(xv, T * per, D, ld),
                                                     .positions = arena.put(pos, DType::kI32, {T}),
                                                     .inv_freq = arena.put(inv, DType::kF32, {D / 2}),
                                                     .attention_factor = 1.3f,
                                                     .interleaved = interleaved}));
        // The gaps between rows are untouched, the rows rotated (angles up to 300 rad in f32).
        expect_close(arena.get<float>(xv), ref_x, 2e-4, 1e-4, "x");
    }
}

TEST_P(OpsMla, LatentWriteAndGatherRoundTrip) {
    Rng rng(2002);
    for (DType cache_dtype : {DType::kF32, DType::kBF16}) {
        SCOPED_TRACE(dtype_name(cache_dtype));
        const int64_t T = 11, D = 19, nb = 5, bs = 4;
        auto rows = rng.uniform(static_cast<size_t>(T * D), -3, 3);
        std::vector<int64_t> slots(static_cast<size_t>(T));
        std::vector<int64_t> perm(static_cast<size_t>(nb * bs));
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng.gen());
        for (int64_t t = 0; t < T; ++t) slots[static_cast<size_t>(t)] = perm[static_cast<size_t>(t)];
        slots[3] = -1;  // skipped
        const size_t esize = dtype_size(cache_dtype);
        std::vector<uint8_t> ref_cache(static_cast<size_t>(nb * bs * D) * esize, 0);
        MOE_ASSERT_OK(
            ref::latent_write({host_view(rows.data(), DType::kF32, {T, D}), host_view(slots.data(), DType::kI64, {T}),
                               host_view(ref_cache.data(), cache_dtype, {nb, bs, D})}));
        std::vector<int64_t> gather(slots);
        gather[3] = gather[0];
        std::vector<float> ref_out(static_cast<size_t>(T * D));
        MOE_ASSERT_OK(ref::latent_gather({host_view(ref_cache.data(), cache_dtype, {nb, bs, D}),
                                          host_view(gather.data(), DType::kI64, {T}),
                                          host_view(ref_out.data(), DType::kF32, {T, D})}));
        DeviceArena arena(be());
        const TensorView cache = arena.put(std::vector<uint8_t>(ref_cache.size(), 0), cache_dtype, {nb, bs, D});
        MOE_RUN_OR_SKIP(ops::run(be(), LatentWriteArgs{.rows = arena.put(rows, DType::kF32, {T, D}),
                                                       .slot_mapping = arena.put(slots, DType::kI64, {T}),
                                                       .cache = cache}));
        expect_exact(arena.get<uint8_t>(cache), ref_cache, "cache bytes");
        const TensorView out = arena.alloc(DType::kF32, {T, D});
        MOE_RUN_OR_SKIP(
            ops::run(be(), LatentGatherArgs{.cache = cache, .slots = arena.put(gather, DType::kI64, {T}), .out = out}));
        expect_exact(arena.get<float>(out), ref_out, "gathered rows");
    }
}

TEST_P(OpsMla, SlotsOutsideTheCacheAreOutOfRange) {
    const int64_t nb = 2, bs = 4, D = 3;
    std::vector<float> rows(6, 1.0f);
    std::vector<int64_t> slots = {0, nb * bs};
    DeviceArena arena(be());
    const Status s = ops::run(be(), LatentWriteArgs{.rows = arena.put(rows, DType::kF32, {2, D}),
                                                    .slot_mapping = arena.put(slots, DType::kI64, {2}),
                                                    .cache = arena.alloc(DType::kF32, {nb, bs, D}, 0)});
    if (s.code() == StatusCode::kUnimplemented) GTEST_SKIP() << s.to_string();
    EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.to_string();
    EXPECT_NE(s.message().find("slot 1 = 8"), std::string::npos) << s.to_string();
}

// Bad indices are kOutOfRange with the reference's words, and nothing is written (the CPU checks
// before writing; the CUDA kernels read the check kernel's verdict before writing).
TEST_P(OpsMla, BadIndicesAreOutOfRangeAndWriteNothing) {
    DeviceArena arena(be());
    {
        std::vector<float> x(8, 1.0f), inv(2, 0.5f);
        std::vector<int32_t> pos = {3, -2};
        const TensorView xv = arena.put(x, DType::kF32, {2, 4});
        const Status s = ops::run(be(), RopeTableArgs{.x = xv,
                                                      .positions = arena.put(pos, DType::kI32, {2}),
                                                      .inv_freq = arena.put(inv, DType::kF32, {2})});
        if (s.code() == StatusCode::kUnimplemented) GTEST_SKIP() << s.to_string();
        EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.to_string();
        EXPECT_NE(s.message().find("positions[1] = -2"), std::string::npos) << s.to_string();
        expect_exact(arena.get<float>(xv), x, "x after a refused rope_table");
    }
    {
        const int64_t nb = 2, bs = 2, D = 3;
        std::vector<int64_t> slots = {1, -1};
        const TensorView out = arena.alloc(DType::kF32, {2, D});
        const Status s = ops::run(be(), LatentGatherArgs{.cache = arena.alloc(DType::kBF16, {nb, bs, D}, 0),
                                                         .slots = arena.put(slots, DType::kI64, {2}),
                                                         .out = out});
        EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.to_string();
        EXPECT_NE(s.message().find("slot 1 = -1 is outside [0, 4)"), std::string::npos) << s.to_string();
        for (float v : arena.get<float>(out)) EXPECT_TRUE(std::isnan(v)) << "latent_gather wrote after refusing";
    }
    {
        // Sequence 1 has 2 query rows but 1 kv row.
        const int64_t H = 2, D = 4;
        std::vector<float> q(static_cast<size_t>(3 * H * D), 0.5f), kv(static_cast<size_t>(3 * H * D), 0.25f);
        std::vector<int32_t> qs = {0, 1, 3}, ks = {0, 2, 3};
        const TensorView out = arena.alloc(DType::kF32, {3, H, D});
        const Status s = ops::run(be(), RaggedAttentionArgs{.q = arena.put(q, DType::kF32, {3, H, D}),
                                                            .k = arena.put(kv, DType::kF32, {3, H, D}),
                                                            .v = arena.put(kv, DType::kF32, {3, H, D}),
                                                            .query_start = arena.put(qs, DType::kI32, {3}),
                                                            .kv_start = arena.put(ks, DType::kI32, {3}),
                                                            .out = out});
        EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.to_string();
        EXPECT_NE(s.message().find("sequence 1 has 1 kv rows for 2 query rows"), std::string::npos) << s.to_string();
        for (float v : arena.get<float>(out)) EXPECT_TRUE(std::isnan(v)) << "ragged_attention wrote after refusing";
    }
}

// DeepSeek-sized rows: kv_lora_rank 512 + rope 64, contexts over several 128-key chunks (the CUDA
// kernels score 128 keys at a time and keep up to 8 value dims a thread), a ragged batch.
TEST_P(OpsMla, AttentionAtDeepseekDimsOverManyKeys) {
    Rng rng(2007);
    const int64_t H = 3, L = 512, R = 64, bs = 16, max_blocks = 20, nb = 48;
    const std::vector<int32_t> qs = {0, 1, 3, 4}, kv_lens = {300, 131, 1};
    const int64_t T = 4, S = 3;
    std::vector<int32_t> tables(static_cast<size_t>(S * max_blocks), -1);
    std::vector<int32_t> perm(static_cast<size_t>(nb));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng.gen());
    size_t next = 0;
    for (int64_t s = 0; s < S; ++s)
        for (int64_t b = 0; b < (kv_lens[static_cast<size_t>(s)] + bs - 1) / bs; ++b)
            tables[static_cast<size_t>(s * max_blocks + b)] = perm[next++];
    auto cache = rng.uniform(static_cast<size_t>(nb * bs * (L + R)), -1, 1);
    std::vector<uint16_t> cache_b = to_bf16(cache);
    auto ql = rng.uniform(static_cast<size_t>(T * H * L), -0.2f, 0.2f);
    auto qr = rng.uniform(static_cast<size_t>(T * H * R), -0.5f, 0.5f);
    std::vector<float> ref_out(static_cast<size_t>(T * H * L));
    MOE_ASSERT_OK(
        ref::mla_attention({host_view(ql.data(), DType::kF32, {T, H, L}), host_view(qr.data(), DType::kF32, {T, H, R}),
                            host_view(cache_b.data(), DType::kBF16, {nb, bs, L + R}),
                            host_view(tables.data(), DType::kI32, {S, max_blocks}),
                            host_view(const_cast<int32_t*>(qs.data()), DType::kI32, {S + 1}),
                            host_view(const_cast<int32_t*>(kv_lens.data()), DType::kI32, {S}),
                            host_view(ref_out.data(), DType::kF32, {T, H, L}), 0.07f}));
    DeviceArena arena(be());
    const TensorView o = arena.alloc(DType::kF32, {T, H, L});
    MOE_RUN_OR_SKIP(ops::run(be(), MlaAttentionArgs{.q_latent = arena.put(ql, DType::kF32, {T, H, L}),
                                                    .q_rope = arena.put(qr, DType::kF32, {T, H, R}),
                                                    .cache = arena.put(cache_b, DType::kBF16, {nb, bs, L + R}),
                                                    .block_tables = arena.put(tables, DType::kI32, {S, max_blocks}),
                                                    .query_start = arena.put(qs, DType::kI32, {S + 1}),
                                                    .kv_lens = arena.put(kv_lens, DType::kI32, {S}),
                                                    .out = o,
                                                    .scale = 0.07f}));
    // f32 sums over 576-long dots and 300 keys against double: looser than the short cases.
    expect_close(arena.get<float>(o), ref_out, 2e-5, 1e-4, "latent attention out");

    // The expanded path's attention: 200 and 140 keys, v dim 160 (two dims a CUDA thread).
    const int64_t Hr = 2, Dqk = 192, Dv = 160;
    const std::vector<int32_t> rqs = {0, 2, 5}, rks = {0, 200, 340};
    const int64_t Tr = 5, N = 340, Sr = 2;
    auto q = rng.uniform(static_cast<size_t>(Tr * Hr * Dqk), -0.2f, 0.2f);
    auto k = rng.uniform(static_cast<size_t>(N * Hr * Dqk), -1, 1);
    auto v = rng.uniform(static_cast<size_t>(N * Hr * Dv), -1, 1);
    std::vector<float> ref_r(static_cast<size_t>(Tr * Hr * Dv));
    MOE_ASSERT_OK(ref::ragged_attention({host_view(q.data(), DType::kF32, {Tr, Hr, Dqk}),
                                         host_view(k.data(), DType::kF32, {N, Hr, Dqk}),
                                         host_view(v.data(), DType::kF32, {N, Hr, Dv}),
                                         host_view(const_cast<int32_t*>(rqs.data()), DType::kI32, {Sr + 1}),
                                         host_view(const_cast<int32_t*>(rks.data()), DType::kI32, {Sr + 1}),
                                         host_view(ref_r.data(), DType::kF32, {Tr, Hr, Dv}), 0.1f}));
    const TensorView ro = arena.alloc(DType::kF32, {Tr, Hr, Dv});
    MOE_RUN_OR_SKIP(ops::run(be(), RaggedAttentionArgs{.q = arena.put(q, DType::kF32, {Tr, Hr, Dqk}),
                                                       .k = arena.put(k, DType::kF32, {N, Hr, Dqk}),
                                                       .v = arena.put(v, DType::kF32, {N, Hr, Dv}),
                                                       .query_start = arena.put(rqs, DType::kI32, {Sr + 1}),
                                                       .kv_start = arena.put(rks, DType::kI32, {Sr + 1}),
                                                       .out = ro,
                                                       .scale = 0.1f}));
    expect_close(arena.get<float>(ro), ref_r, 2e-5, 1e-4, "ragged attention out");
}

TEST_P(OpsMla, ExpandAndRaggedAttention) {
    Rng rng(2003);
    const int64_t H = 3, nope = 5, rope = 4, vd = 7, qk = nope + rope;
    // Three sequences: a prefill after a cached prefix, a whole prompt, a decode.
    const std::vector<int32_t> qs = {0, 4, 11, 12}, ks = {0, 9, 16, 29};
    const int64_t T = 12, N = 29, S = 3;
    auto kv = rng.uniform(static_cast<size_t>(N * H * (nope + vd)), -1, 1);
    auto latent_rows = rng.uniform(static_cast<size_t>(N * 10), -1, 1);  // k_rope = cols [6, 10)
    std::vector<float> ref_k(static_cast<size_t>(N * H * qk)), ref_v(static_cast<size_t>(N * H * vd));
    const TensorView host_rope = rows_view(host_view(latent_rows.data() + 6, DType::kF32, {N * 10 - 6}), N, rope, 10);
    MOE_ASSERT_OK(ref::mla_expand({host_view(kv.data(), DType::kF32, {N, H, nope + vd}), host_rope,
                                   host_view(ref_k.data(), DType::kF32, {N, H, qk}),
                                   host_view(ref_v.data(), DType::kF32, {N, H, vd})}));
    auto q = rng.uniform(static_cast<size_t>(T * H * qk), -1, 1);
    std::vector<float> ref_out(static_cast<size_t>(T * H * vd));
    MOE_ASSERT_OK(ref::ragged_attention({host_view(q.data(), DType::kF32, {T, H, qk}),
                                         host_view(ref_k.data(), DType::kF32, {N, H, qk}),
                                         host_view(ref_v.data(), DType::kF32, {N, H, vd}),
                                         host_view(const_cast<int32_t*>(qs.data()), DType::kI32, {S + 1}),
                                         host_view(const_cast<int32_t*>(ks.data()), DType::kI32, {S + 1}),
                                         host_view(ref_out.data(), DType::kF32, {T, H, vd}), 0.37f}));
    std::vector<float> out[2];
    for (int run = 0; run < 2; ++run) {
        DeviceArena arena(be());
        const TensorView lat = arena.put(latent_rows, DType::kF32, {N * 10});
        TensorView rope_view = rows_view(lat, N, rope, 10);
        rope_view.data = static_cast<float*>(lat.data) + 6;
        const TensorView k = arena.alloc(DType::kF32, {N, H, qk}), v = arena.alloc(DType::kF32, {N, H, vd});
        MOE_RUN_OR_SKIP(ops::run(
            be(),
            MlaExpandArgs{.kv = arena.put(kv, DType::kF32, {N, H, nope + vd}), .k_rope = rope_view, .k = k, .v = v}));
        expect_exact(arena.get<float>(k), ref_k, "k");
        expect_exact(arena.get<float>(v), ref_v, "v");
        const TensorView o = arena.alloc(DType::kF32, {T, H, vd});
        MOE_RUN_OR_SKIP(ops::run(be(), RaggedAttentionArgs{.q = arena.put(q, DType::kF32, {T, H, qk}),
                                                           .k = k,
                                                           .v = v,
                                                           .query_start = arena.put(qs, DType::kI32, {S + 1}),
                                                           .kv_start = arena.put(ks, DType::kI32, {S + 1}),
                                                           .out = o,
                                                           .scale = 0.37f}));
        out[run] = arena.get<float>(o);
    }
    expect_close(out[0], ref_out, 1e-6, 1e-5, "attention out");
    expect_bitwise_equal(out[0], out[1], "attention out");
}

TEST_P(OpsMla, LatentAttentionOverPagedCache) {
    Rng rng(2004);
    for (DType cache_dtype : {DType::kF32, DType::kBF16}) {
        SCOPED_TRACE(dtype_name(cache_dtype));
        const int64_t H = 19, L = 12, R = 4, bs = 4, nb = 16, max_blocks = 5;  // 19 heads: two head blocks
        const std::vector<int32_t> qs = {0, 3, 4, 5}, kv_lens = {10, 17, 1};
        const int64_t T = 5, S = 3;
        std::vector<int32_t> perm(static_cast<size_t>(nb));
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng.gen());
        std::vector<int32_t> tables(static_cast<size_t>(S * max_blocks), -1);
        size_t next = 0;
        for (int64_t s = 0; s < S; ++s)
            for (int64_t b = 0; b < (kv_lens[static_cast<size_t>(s)] + bs - 1) / bs; ++b)
                tables[static_cast<size_t>(s * max_blocks + b)] = perm[next++];
        auto cache_f = rng.uniform(static_cast<size_t>(nb * bs * (L + R)), -1, 1);
        std::vector<uint16_t> cache_b = to_bf16(cache_f);
        auto ql = rng.uniform(static_cast<size_t>(T * H * L), -1, 1);
        auto qbuf = rng.uniform(static_cast<size_t>(T * H * 9), -1, 1);  // q_rope: cols [5, 9) of each head
        void* cache_host = cache_dtype == DType::kF32 ? static_cast<void*>(cache_f.data()) : cache_b.data();
        std::vector<float> ref_out(static_cast<size_t>(T * H * L));
        MOE_ASSERT_OK(ref::mla_attention({host_view(ql.data(), DType::kF32, {T, H, L}),
                                          strided3(host_view(qbuf.data() + 5, DType::kF32, {1}), T, H, R, H * 9, 9),
                                          host_view(cache_host, cache_dtype, {nb, bs, L + R}),
                                          host_view(tables.data(), DType::kI32, {S, max_blocks}),
                                          host_view(const_cast<int32_t*>(qs.data()), DType::kI32, {S + 1}),
                                          host_view(const_cast<int32_t*>(kv_lens.data()), DType::kI32, {S}),
                                          host_view(ref_out.data(), DType::kF32, {T, H, L}), 0.29f}));
        std::vector<float> out[2];
        for (int run = 0; run < 2; ++run) {
            DeviceArena arena(be());
            const TensorView cache = cache_dtype == DType::kF32 ? arena.put(cache_f, cache_dtype, {nb, bs, L + R})
                                                                : arena.put(cache_b, cache_dtype, {nb, bs, L + R});
            const TensorView qb = arena.put(qbuf, DType::kF32, {T * H * 9});
            TensorView q_rope = strided3(qb, T, H, R, H * 9, 9);
            q_rope.data = static_cast<float*>(qb.data) + 5;
            const TensorView o = arena.alloc(DType::kF32, {T, H, L});
            MOE_RUN_OR_SKIP(
                ops::run(be(), MlaAttentionArgs{.q_latent = arena.put(ql, DType::kF32, {T, H, L}),
                                                .q_rope = q_rope,
                                                .cache = cache,
                                                .block_tables = arena.put(tables, DType::kI32, {S, max_blocks}),
                                                .query_start = arena.put(qs, DType::kI32, {S + 1}),
                                                .kv_lens = arena.put(kv_lens, DType::kI32, {S}),
                                                .out = o,
                                                .scale = 0.29f}));
            out[run] = arena.get<float>(o);
        }
        expect_close(out[0], ref_out, 1e-6, 1e-5, "latent attention out");
        expect_bitwise_equal(out[0], out[1], "latent attention out");
    }
}

TEST_P(OpsMla, LatentAttentionBlockOutsideTheCacheIsOutOfRange) {
    const int64_t H = 2, L = 4, R = 2;
    std::vector<float> ql(static_cast<size_t>(H * L), 0.5f), qr(static_cast<size_t>(H * R), 0.5f);
    std::vector<int32_t> tables = {7}, qs = {0, 1}, kv_lens = {3};
    DeviceArena arena(be());
    const Status s = ops::run(be(), MlaAttentionArgs{.q_latent = arena.put(ql, DType::kF32, {1, H, L}),
                                                     .q_rope = arena.put(qr, DType::kF32, {1, H, R}),
                                                     .cache = arena.alloc(DType::kF32, {2, 4, L + R}, 0),
                                                     .block_tables = arena.put(tables, DType::kI32, {1, 1}),
                                                     .query_start = arena.put(qs, DType::kI32, {2}),
                                                     .kv_lens = arena.put(kv_lens, DType::kI32, {1}),
                                                     .out = arena.alloc(DType::kF32, {1, H, L}),
                                                     .scale = 1.0f});
    if (s.code() == StatusCode::kUnimplemented) GTEST_SKIP() << s.to_string();
    EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.to_string();
    EXPECT_NE(s.message().find("block_tables[0, 0] = 7"), std::string::npos) << s.to_string();
}

TEST_P(OpsMla, HeadGemmBothDirections) {
    Rng rng(2005);
    const int64_t T = 7, H = 3, nope = 5, vd = 6, C = 11, P = nope + vd;
    for (DType wd : {DType::kF32, DType::kBF16}) {
        SCOPED_TRACE(dtype_name(wd));
        auto w = rng.small_ints(static_cast<size_t>(H * P * C), -3, 3);
        std::vector<uint16_t> wb = to_bf16(w);
        void* wh = wd == DType::kF32 ? static_cast<void*>(w.data()) : wb.data();
        // absorb: x [T, H, nope] strided inside [T, H, 9] -> out [T, H, C]
        auto xq = rng.small_ints(static_cast<size_t>(T * H * 9), -3, 3);
        std::vector<float> ref_abs(static_cast<size_t>(T * H * C));
        MOE_ASSERT_OK(ref::head_gemm({strided3(host_view(xq.data(), DType::kF32, {1}), T, H, nope, H * 9, 9),
                                      host_view(wh, wd, {H * P, C}), P, 0, false,
                                      host_view(ref_abs.data(), DType::kF32, {T, H, C})}));
        // apply W_UV: x [T, H, C] -> out [T, H, vd] from rows [nope, P)
        auto xo = rng.small_ints(static_cast<size_t>(T * H * C), -3, 3);
        std::vector<float> ref_uv(static_cast<size_t>(T * H * vd));
        MOE_ASSERT_OK(ref::head_gemm({host_view(xo.data(), DType::kF32, {T, H, C}), host_view(wh, wd, {H * P, C}), P,
                                      nope, true, host_view(ref_uv.data(), DType::kF32, {T, H, vd})}));
        DeviceArena arena(be());
        const TensorView wv = wd == DType::kF32 ? arena.put(w, wd, {H * P, C}) : arena.put(wb, wd, {H * P, C});
        const TensorView out_abs = arena.alloc(DType::kF32, {T, H, C});
        MOE_RUN_OR_SKIP(
            ops::run(be(), HeadGemmArgs{.x = strided3(arena.put(xq, DType::kF32, {T * H * 9}), T, H, nope, H * 9, 9),
                                        .w = wv,
                                        .head_rows = P,
                                        .row_offset = 0,
                                        .transpose_w = false,
                                        .out = out_abs}));
        const TensorView out_uv = arena.alloc(DType::kF32, {T, H, vd});
        MOE_RUN_OR_SKIP(ops::run(be(), HeadGemmArgs{.x = arena.put(xo, DType::kF32, {T, H, C}),
                                                    .w = wv,
                                                    .head_rows = P,
                                                    .row_offset = nope,
                                                    .transpose_w = true,
                                                    .out = out_uv}));
        // Small integers: exact in f32 and bf16.
        expect_exact(arena.get<float>(out_abs), ref_abs, "absorbed q");
        expect_exact(arena.get<float>(out_uv), ref_uv, "W_UV output");
    }
}

TEST(OpsMlaValidate, HeadGemmRowsPastTheHeadAreInvalid) {
    std::vector<float> x(6), w(2 * 4 * 3), out(2 * 3 * 3);
    const Status s = ops::validate(HeadGemmArgs{.x = host_view(x.data(), DType::kF32, {1, 2, 3}),
                                                .w = host_view(w.data(), DType::kF32, {8, 3}),
                                                .head_rows = 4,
                                                .row_offset = 2,
                                                .transpose_w = false,
                                                .out = host_view(out.data(), DType::kF32, {1, 2, 3})});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("row_offset 2 + 3 rows is outside the head's 4 rows"), std::string::npos)
        << s.to_string();
    HeadGemmArgs huge{.x = host_view(x.data(), DType::kF32, {1, 2, 3}),
                      .w = host_view(w.data(), DType::kF32, {8, 3}),
                      .head_rows = int64_t{1} << 62,
                      .row_offset = 0,
                      .transpose_w = false,
                      .out = host_view(out.data(), DType::kF32, {1, 2, 3})};
    EXPECT_EQ(ops::validate(huge).code(), StatusCode::kInvalidArgument);
    huge.head_rows = 4;
    huge.row_offset = std::numeric_limits<int64_t>::max();
    EXPECT_EQ(ops::validate(huge).code(), StatusCode::kInvalidArgument);
}

// A hand-made token: the best single expert sits in a group that loses on its top-2 sum, the
// bias changes the choice, and the weights are the unbiased sigmoid scores.
TEST_P(OpsMla, GroupedRouteChoosesByGroupsAndBiasWeighsUnbiased) {
    const int64_t E = 8;
    auto logit = [](double p) { return static_cast<float>(std::log(p / (1 - p))); };
    // groups {0,1} {2,3} {4,5} {6,7}; scores:
    std::vector<float> logits = {logit(0.95), logit(0.05), logit(0.6),  logit(0.6),
                                 logit(0.7),  logit(0.55), logit(0.10), logit(0.2)};
    // group sums: 1.0, 1.2, 1.25, 0.3 -> keep groups 2 and 1 (topk_groups 2); expert 0 (0.95) is out.
    std::vector<float> bias = {0, 0, 0, 0.2f, 0, 0, 0, 0};  // expert 3 chosen before 2 and 4
    // biased: e3 0.8, e4 0.7, e2 0.6, e5 0.55; group sums with bias: g1 1.4, g2 1.25 -> still {1, 2}
    DeviceArena arena(be());
    const TensorView ids = arena.alloc(DType::kI32, {1, 3}), w = arena.alloc(DType::kF32, {1, 3});
    MOE_RUN_OR_SKIP(ops::run(be(), MoeRouteGroupedArgs{.logits = arena.put(logits, DType::kF32, {1, E}),
                                                       .bias = arena.put(bias, DType::kF32, {E}),
                                                       .topk_ids = ids,
                                                       .topk_weights = w,
                                                       .top_k = 3,
                                                       .num_groups = 4,
                                                       .topk_groups = 2,
                                                       .renormalize = true,
                                                       .scaling_factor = 2.0f}));
    expect_exact(arena.get<int32_t>(ids), std::vector<int32_t>{3, 4, 2}, "topk_ids");
    const double sum = 0.6 + 0.7 + 0.6;
    expect_close(
        arena.get<float>(w),
        {static_cast<float>(2 * 0.6 / sum), static_cast<float>(2 * 0.7 / sum), static_cast<float>(2 * 0.6 / sum)}, 1e-6,
        1e-5, "topk_weights");
}

TEST_P(OpsMla, GroupedRouteMatchesReference) {
    Rng rng(2006);
    struct Case {
        int64_t E;
        int k, groups, keep;
        bool renorm;
    };
    for (const Case& c :
         {Case{8, 3, 4, 2, true}, Case{6, 2, 1, 1, false}, Case{64, 6, 8, 4, true}, Case{256, 8, 8, 4, true}}) {
        const int64_t T = 19;
        SCOPED_TRACE("E=" + std::to_string(c.E) + " k=" + std::to_string(c.k));
        auto logits = rng.uniform(static_cast<size_t>(T * c.E), -4, 4);
        auto bias = rng.uniform(static_cast<size_t>(c.E), 0, 0.3f);
        std::vector<int32_t> ref_ids(static_cast<size_t>(T * c.k));
        std::vector<float> ref_w(static_cast<size_t>(T * c.k));
        MOE_ASSERT_OK(ref::moe_route_grouped(
            {host_view(logits.data(), DType::kF32, {T, c.E}), host_view(bias.data(), DType::kF32, {c.E}),
             host_view(ref_ids.data(), DType::kI32, {T, c.k}), host_view(ref_w.data(), DType::kF32, {T, c.k}), c.k,
             c.groups, c.keep, c.renorm, 2.5f}));
        DeviceArena arena(be());
        const TensorView ids = arena.alloc(DType::kI32, {T, c.k}), w = arena.alloc(DType::kF32, {T, c.k});
        MOE_RUN_OR_SKIP(ops::run(be(), MoeRouteGroupedArgs{.logits = arena.put(logits, DType::kF32, {T, c.E}),
                                                           .bias = arena.put(bias, DType::kF32, {c.E}),
                                                           .topk_ids = ids,
                                                           .topk_weights = w,
                                                           .top_k = c.k,
                                                           .num_groups = c.groups,
                                                           .topk_groups = c.keep,
                                                           .renormalize = c.renorm,
                                                           .scaling_factor = 2.5f}));
        expect_exact(arena.get<int32_t>(ids), ref_ids, "topk_ids");
        expect_close(arena.get<float>(w), ref_w, 1e-6, 1e-5, "topk_weights");
    }
}

}  // namespace
}  // namespace moe::testing
