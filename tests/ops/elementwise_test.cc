// embedding, rms_norm, rope, silu_mul, add, moe_shared_gate on every backend vs the reference.
#include <gtest/gtest.h>

#include "ops/op_test_util.h"

namespace moe::testing {
namespace {

std::string trace(uint32_t seed, const std::string& what) {
    return what + " seed=" + std::to_string(seed);
}

MOE_BACKEND_TEST_SUITE(OpsEmbedding);

TEST_P(OpsEmbedding, MatchesReferenceExactly) {
    uint32_t seed = 100;
    for (DType dt : {DType::kF32, DType::kBF16}) {
        for (int64_t t : {1, 19, 111}) {
            for (int64_t h : {1, 19, 64}) {
                ++seed;
                SCOPED_TRACE(trace(seed, backend_name() + " " + dtype_name(dt) + " T=" + std::to_string(t) +
                                             " H=" + std::to_string(h)));
                Rng rng(seed);
                const int64_t vocab = 37;
                auto ids = rng.ints(static_cast<size_t>(t), 0, vocab - 1);
                auto table = rng.uniform(static_cast<size_t>(vocab * h), -2, 2);
                auto table_bf16 = to_bf16(table);
                void* table_host = dt == DType::kF32 ? static_cast<void*>(table.data()) : table_bf16.data();
                std::vector<float> ref(static_cast<size_t>(t * h));
                MOE_ASSERT_OK(
                    ref::embedding({host_view(ids.data(), DType::kI32, {t}), host_view(table_host, dt, {vocab, h}),
                                    host_view(ref.data(), DType::kF32, {t, h})}));
                std::vector<float> runs[2];
                for (auto& out : runs) {
                    DeviceArena arena(be());
                    EmbeddingArgs a{arena.put(ids, DType::kI32, {t}), {}, arena.alloc(DType::kF32, {t, h})};
                    a.table =
                        dt == DType::kF32 ? arena.put(table, dt, {vocab, h}) : arena.put(table_bf16, dt, {vocab, h});
                    MOE_ASSERT_OK(ops::run(be(), a));
                    out = arena.get<float>(a.out);
                }
                expect_exact(runs[0], ref, "out");
                expect_bitwise_equal(runs[0], runs[1], "out");
            }
        }
    }
}

// The last row of a wide table (an off-by-one would read past it); then ids past the end and
// negative, reported as the reference reports them, and the backend usable afterwards.
TEST_P(OpsEmbedding, LastRowAndBadIdsLikeTheReference) {
    uint32_t seed = 150;
    for (DType dt : {DType::kF32, DType::kBF16}) {
        for (int64_t h : {1, 111}) {
            ++seed;
            SCOPED_TRACE(trace(seed, backend_name() + " " + dtype_name(dt) + " H=" + std::to_string(h)));
            Rng rng(seed);
            const int64_t vocab = 111, t = 19;
            auto ids = rng.ints(static_cast<size_t>(t), 0, vocab - 1);
            ids[0] = static_cast<int32_t>(vocab - 1);
            auto table = rng.uniform(static_cast<size_t>(vocab * h), -1, 1);
            auto table_bf16 = to_bf16(table);
            void* table_host = dt == DType::kF32 ? static_cast<void*>(table.data()) : table_bf16.data();
            std::vector<float> ref(static_cast<size_t>(t * h));
            MOE_ASSERT_OK(
                ref::embedding({host_view(ids.data(), DType::kI32, {t}), host_view(table_host, dt, {vocab, h}),
                                host_view(ref.data(), DType::kF32, {t, h})}));
            DeviceArena arena(be());
            EmbeddingArgs a{arena.put(ids, DType::kI32, {t}), {}, arena.alloc(DType::kF32, {t, h})};
            a.table = dt == DType::kF32 ? arena.put(table, dt, {vocab, h}) : arena.put(table_bf16, dt, {vocab, h});
            MOE_ASSERT_OK(ops::run(be(), a));
            expect_exact(arena.get<float>(a.out), ref, "out");
        }
    }
    SCOPED_TRACE(backend_name() + " bad ids");
    const int64_t vocab = 19, hidden = 8;
    std::vector<int32_t> ids = {0, 5, 19, -3, 2};  // ids[2] past the end, ids[3] negative
    auto table = Rng(3).uniform(static_cast<size_t>(vocab * hidden), -1, 1);
    std::vector<float> out(ids.size() * hidden);
    const Status want =
        ref::embedding({host_view(ids.data(), DType::kI32, {5}), host_view(table.data(), DType::kF32, {vocab, hidden}),
                        host_view(out.data(), DType::kF32, {5, hidden})});
    ASSERT_EQ(want.code(), StatusCode::kOutOfRange) << want.to_string();
    EXPECT_NE(want.message().find("ids[2] = 19 is outside [0, 19)"), std::string::npos) << want.message();
    DeviceArena arena(be());
    const Status got =
        ops::run(be(), EmbeddingArgs{arena.put(ids, DType::kI32, {5}), arena.put(table, DType::kF32, {vocab, hidden}),
                                     arena.alloc(DType::kF32, {5, hidden})});
    EXPECT_EQ(got.code(), StatusCode::kOutOfRange) << got.to_string();
    EXPECT_NE(got.message().find("ids[2] = 19 is outside [0, 19)"), std::string::npos) << got.message();
    MOE_ASSERT_OK(be().synchronize());  // the backend keeps working after a reported bad index
}

MOE_BACKEND_TEST_SUITE(OpsRmsNorm);

TEST_P(OpsRmsNorm, MatchesReferenceStridedAndInPlace) {
    uint32_t seed = 200;
    for (int64_t rows : {1, 19, 111}) {
        for (int64_t dim : {1, 19, 128}) {
            for (bool in_place : {false, true}) {
                ++seed;
                SCOPED_TRACE(trace(seed, backend_name() + " R=" + std::to_string(rows) + " D=" + std::to_string(dim) +
                                             (in_place ? " in place" : "")));
                Rng rng(seed);
                const int64_t ld = dim + 3;  // row stride with a gap
                auto x = rng.uniform(static_cast<size_t>(rows * ld), -3, 3);
                if (rows > 1) x[static_cast<size_t>(ld)] = NAN;  // row 1 becomes all NaN
                auto weight = rng.uniform(static_cast<size_t>(dim), 0.5f, 1.5f);
                const float eps = 1e-5f;
                auto x_ref = x;
                std::vector<float> ref(static_cast<size_t>(rows * ld), 0.0f);
                MOE_ASSERT_OK(
                    ref::rms_norm({rows_view(host_view(x_ref.data(), DType::kF32, {rows * ld}), rows, dim, ld),
                                   host_view(weight.data(), DType::kF32, {dim}),
                                   rows_view(host_view(ref.data(), DType::kF32, {rows * ld}), rows, dim, ld), eps}));
                std::vector<float> runs[2];
                for (auto& out : runs) {
                    DeviceArena arena(be());
                    RmsNormArgs a;
                    a.x = rows_view(arena.put(x, DType::kF32, {rows * ld}), rows, dim, ld);
                    a.weight = arena.put(weight, DType::kF32, {dim});
                    a.out = in_place ? a.x : rows_view(arena.alloc(DType::kF32, {rows * ld}), rows, dim, ld);
                    a.eps = eps;
                    MOE_ASSERT_OK(ops::run(be(), a));
                    out = pack_rows(arena.get<float>(a.out), rows, dim, ld);
                    if (in_place && rows > 1) {  // the gap between rows is untouched
                        EXPECT_EQ(arena.get<float>(a.out)[static_cast<size_t>(dim)], x[static_cast<size_t>(dim)]);
                    }
                }
                expect_close(runs[0], pack_rows(ref, rows, dim, ld), 1e-5, 1e-5, "out");
                expect_bitwise_equal(runs[0], runs[1], "out");
            }
        }
    }
}

// Rows longer than one GPU thread block reduces, with different row strides for x and out.
TEST_P(OpsRmsNorm, LongRowsWithDifferentStrides) {
    uint32_t seed = 250;
    for (int64_t rows : {1, 19}) {
        for (int64_t dim : {111, 1000, 4097}) {
            ++seed;
            SCOPED_TRACE(trace(seed, backend_name() + " R=" + std::to_string(rows) + " D=" + std::to_string(dim)));
            Rng rng(seed);
            const int64_t ldx = dim + 3, ldo = dim + 5;
            auto x = rng.uniform(static_cast<size_t>(rows * ldx), -3, 3);
            auto weight = rng.uniform(static_cast<size_t>(dim), 0.5f, 1.5f);
            const float eps = 1e-5f;
            std::vector<float> ref(static_cast<size_t>(rows * ldo), 0.0f);
            MOE_ASSERT_OK(
                ref::rms_norm({rows_view(host_view(x.data(), DType::kF32, {rows * ldx}), rows, dim, ldx),
                               host_view(weight.data(), DType::kF32, {dim}),
                               rows_view(host_view(ref.data(), DType::kF32, {rows * ldo}), rows, dim, ldo), eps}));
            std::vector<float> runs[2];
            for (auto& out : runs) {
                DeviceArena arena(be());
                RmsNormArgs a;
                a.x = rows_view(arena.put(x, DType::kF32, {rows * ldx}), rows, dim, ldx);
                a.weight = arena.put(weight, DType::kF32, {dim});
                a.out = rows_view(arena.alloc(DType::kF32, {rows * ldo}), rows, dim, ldo);
                a.eps = eps;
                MOE_ASSERT_OK(ops::run(be(), a));
                out = pack_rows(arena.get<float>(a.out), rows, dim, ldo);
            }
            // f32 sums in another order than the double reference: a few ulps.
            expect_close(runs[0], pack_rows(ref, rows, dim, ldo), 1e-6, 2e-5, "out");
            expect_bitwise_equal(runs[0], runs[1], "out");
        }
    }
}

MOE_BACKEND_TEST_SUITE(OpsRope);

TEST_P(OpsRope, MatchesReferenceForPartialRotaryAndGqa) {
    struct Case {
        int64_t tokens, q_heads, kv_heads, head_dim;
        int rotary_dim;
        float theta;
    };
    const Case cases[] = {{1, 4, 2, 64, 64, 10000.0f},
                          {19, 3, 1, 64, 32, 1000000.0f},
                          {111, 2, 2, 18, 18, 10000.0f},
                          {7, 8, 8, 128, 128, 500000.0f}};
    uint32_t seed = 300;
    for (const Case& c : cases) {
        ++seed;
        SCOPED_TRACE(trace(seed, backend_name() + " T=" + std::to_string(c.tokens) +
                                     " hd=" + std::to_string(c.head_dim) + " rd=" + std::to_string(c.rotary_dim)));
        Rng rng(seed);
        auto q = rng.uniform(static_cast<size_t>(c.tokens * c.q_heads * c.head_dim), -2, 2);
        auto k = rng.uniform(static_cast<size_t>(c.tokens * c.kv_heads * c.head_dim), -2, 2);
        auto pos = rng.ints(static_cast<size_t>(c.tokens), 0, 2047);
        pos[0] = 0;  // position 0 is the identity
        auto q_ref = q, k_ref = k;
        MOE_ASSERT_OK(ref::rope({host_view(q_ref.data(), DType::kF32, {c.tokens, c.q_heads, c.head_dim}),
                                 host_view(k_ref.data(), DType::kF32, {c.tokens, c.kv_heads, c.head_dim}),
                                 host_view(pos.data(), DType::kI32, {c.tokens}), c.theta, c.rotary_dim}));
        std::vector<float> runs_q[2], runs_k[2];
        for (int run = 0; run < 2; ++run) {
            DeviceArena arena(be());
            RopeArgs a{arena.put(q, DType::kF32, {c.tokens, c.q_heads, c.head_dim}),
                       arena.put(k, DType::kF32, {c.tokens, c.kv_heads, c.head_dim}),
                       arena.put(pos, DType::kI32, {c.tokens}), c.theta, c.rotary_dim};
            MOE_ASSERT_OK(ops::run(be(), a));
            runs_q[run] = arena.get<float>(a.q);
            runs_k[run] = arena.get<float>(a.k);
        }
        // f32 angles as in Hugging Face: ~pos * 2^-24 rad of error, ~2e-4 at position 2047.
        expect_close(runs_q[0], q_ref, 1e-3, 1e-4, "q");
        expect_close(runs_k[0], k_ref, 1e-3, 1e-4, "k");
        for (int64_t h = 0; h < c.q_heads; ++h)  // token 0 at position 0: unchanged
            for (int64_t d = 0; d < c.head_dim; ++d)
                EXPECT_EQ(runs_q[0][static_cast<size_t>(h * c.head_dim + d)],
                          q[static_cast<size_t>(h * c.head_dim + d)]);
        for (int64_t t = 0; t < c.tokens; ++t)  // dims past rotary_dim: untouched
            for (int64_t d = c.rotary_dim; d < c.head_dim; ++d)
                EXPECT_EQ(runs_q[0][static_cast<size_t>(t * c.q_heads * c.head_dim + d)],
                          q[static_cast<size_t>(t * c.q_heads * c.head_dim + d)]);
        expect_bitwise_equal(runs_q[0], runs_q[1], "q");
        expect_bitwise_equal(runs_k[0], runs_k[1], "k");
    }
}

// Long-context positions (up to 131071) and a rotary_dim of 2. The bound is what f32 angles allow
// (as Hugging Face computes them, and the CPU does): the angle float(pos) * inv_freq is off by up
// to ~pos * 2^-23 rad, which moves a rotated pair of |x| <= 1 by up to ~pos * 2^-22.
// YaRN (gpt-oss): a host-computed frequency table and a cos/sin factor; the table's values are
// not theta's, so a kernel that ignored it would fail.
TEST_P(OpsRope, FrequencyTableAndAttentionFactor) {
    const int64_t tokens = 23, q_heads = 4, kv_heads = 2, head_dim = 16;
    const int rotary_dim = 16;
    Rng rng(350);
    auto q = rng.uniform(static_cast<size_t>(tokens * q_heads * head_dim), -2, 2);
    auto k = rng.uniform(static_cast<size_t>(tokens * kv_heads * head_dim), -2, 2);
    auto pos = rng.ints(static_cast<size_t>(tokens), 0, 300);
    auto inv_freq = rng.uniform(static_cast<size_t>(rotary_dim / 2), 0.001f, 0.9f);
    const float factor = 1.1386f;
    auto q_ref = q, k_ref = k;
    RopeArgs r{host_view(q_ref.data(), DType::kF32, {tokens, q_heads, head_dim}),
               host_view(k_ref.data(), DType::kF32, {tokens, kv_heads, head_dim}),
               host_view(pos.data(), DType::kI32, {tokens}),
               10000.0f,
               rotary_dim,
               host_view(inv_freq.data(), DType::kF32, {rotary_dim / 2}),
               factor};
    MOE_ASSERT_OK(ref::rope(r));
    // The factor scales the rotated vector's length: at position 0 too.
    EXPECT_GT(std::fabs(q_ref[0]), 0.0f);
    std::vector<float> runs_q[2], runs_k[2];
    for (int run = 0; run < 2; ++run) {
        DeviceArena arena(be());
        RopeArgs a = r;
        a.q = arena.put(q, DType::kF32, {tokens, q_heads, head_dim});
        a.k = arena.put(k, DType::kF32, {tokens, kv_heads, head_dim});
        a.positions = arena.put(pos, DType::kI32, {tokens});
        a.inv_freq = arena.put(inv_freq, DType::kF32, {rotary_dim / 2});
        MOE_ASSERT_OK(ops::run(be(), a));
        runs_q[run] = arena.get<float>(a.q);
        runs_k[run] = arena.get<float>(a.k);
    }
    expect_close(runs_q[0], q_ref, 1e-4, 1e-4, "q");
    expect_close(runs_k[0], k_ref, 1e-4, 1e-4, "k");
    expect_bitwise_equal(runs_q[0], runs_q[1], "q");
    // A table of the wrong length is refused, named.
    DeviceArena arena(be());
    RopeArgs bad = r;
    bad.inv_freq = host_view(inv_freq.data(), DType::kF32, {rotary_dim / 2 - 1});
    const Status s = ops::validate(bad);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("inv_freq"), std::string::npos) << s.message();
}

TEST_P(OpsRope, LongPositionsAndNarrowRotary) {
    const int64_t tokens = 19, q_heads = 4, kv_heads = 2, head_dim = 64;
    uint32_t seed = 350;
    for (int rotary_dim : {64, 32, 2}) {
        for (float theta : {10000.0f, 1000000.0f}) {
            ++seed;
            SCOPED_TRACE(
                trace(seed, backend_name() + " rd=" + std::to_string(rotary_dim) + " theta=" + std::to_string(theta)));
            Rng rng(seed);
            auto q = rng.uniform(static_cast<size_t>(tokens * q_heads * head_dim), -1, 1);
            auto k = rng.uniform(static_cast<size_t>(tokens * kv_heads * head_dim), -1, 1);
            std::vector<int32_t> pos(static_cast<size_t>(tokens));
            for (int64_t t = 0; t < tokens; ++t) pos[static_cast<size_t>(t)] = static_cast<int32_t>(t * 2311 % 40000);
            pos[1] = 131071;
            auto q_ref = q, k_ref = k;
            MOE_ASSERT_OK(ref::rope({host_view(q_ref.data(), DType::kF32, {tokens, q_heads, head_dim}),
                                     host_view(k_ref.data(), DType::kF32, {tokens, kv_heads, head_dim}),
                                     host_view(pos.data(), DType::kI32, {tokens}), theta, rotary_dim}));
            DeviceArena arena(be());
            RopeArgs a{arena.put(q, DType::kF32, {tokens, q_heads, head_dim}),
                       arena.put(k, DType::kF32, {tokens, kv_heads, head_dim}), arena.put(pos, DType::kI32, {tokens}),
                       theta, rotary_dim};
            MOE_ASSERT_OK(ops::run(be(), a));
            const auto q_got = arena.get<float>(a.q), k_got = arena.get<float>(a.k);
            for (int64_t t = 0; t < tokens; ++t) {
                const double atol = 1e-6 + pos[static_cast<size_t>(t)] * std::ldexp(1.0, -22);
                auto slice = [t](const std::vector<float>& v, int64_t heads) {
                    const auto first = v.begin() + t * heads * head_dim;
                    return std::vector<float>(first, first + heads * head_dim);
                };
                const std::string at = " token " + std::to_string(t) + " pos " + std::to_string(pos[t]);
                expect_close(slice(q_got, q_heads), slice(q_ref, q_heads), atol, 1e-5, "q" + at);
                expect_close(slice(k_got, kv_heads), slice(k_ref, kv_heads), atol, 1e-5, "k" + at);
            }
        }
    }
}

// A negative position is reported (naming it) and its token is left as it was.
TEST_P(OpsRope, NegativePositionIsReportedAndLeavesTheTokenAlone) {
    const int64_t tokens = 3, head_dim = 8;
    Rng rng(5);
    auto q = rng.uniform(static_cast<size_t>(tokens * head_dim), -1, 1);
    auto k = rng.uniform(static_cast<size_t>(tokens * head_dim), -1, 1);
    std::vector<int32_t> pos = {0, -1, 4};
    DeviceArena arena(be());
    RopeArgs a{arena.put(q, DType::kF32, {tokens, 1, head_dim}), arena.put(k, DType::kF32, {tokens, 1, head_dim}),
               arena.put(pos, DType::kI32, {tokens}), 10000.0f, 8};
    const Status s = ops::run(be(), a);
    EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.to_string();
    EXPECT_NE(s.message().find("positions[1] = -1"), std::string::npos) << s.message();
    const auto q_after = arena.get<float>(a.q);
    for (int64_t i = 0; i < head_dim; ++i)
        EXPECT_EQ(q_after[static_cast<size_t>(head_dim + i)], q[static_cast<size_t>(head_dim + i)]) << i;
}

MOE_BACKEND_TEST_SUITE(OpsSiluMul);

TEST_P(OpsSiluMul, MatchesReferenceStridedAndAliased) {
    uint32_t seed = 400;
    for (int64_t m : {1, 19, 111}) {
        for (int64_t i : {1, 19, 130}) {
            for (bool alias : {false, true}) {
                ++seed;
                SCOPED_TRACE(trace(seed, backend_name() + " M=" + std::to_string(m) + " I=" + std::to_string(i)));
                Rng rng(seed);
                // Strided inputs as a fused [M, 2I] gate|up projection would give them.
                const int64_t ld = alias ? i : 2 * i;
                auto gate = rng.uniform(static_cast<size_t>(m * ld), -8, 8);
                auto up = rng.uniform(static_cast<size_t>(m * ld), -2, 2);
                gate[0] = NAN;
                std::vector<float> ref(static_cast<size_t>(m * i));
                MOE_ASSERT_OK(ref::silu_mul({rows_view(host_view(gate.data(), DType::kF32, {m * ld}), m, i, ld),
                                             rows_view(host_view(up.data(), DType::kF32, {m * ld}), m, i, ld),
                                             host_view(ref.data(), DType::kF32, {m, i})}));
                std::vector<float> runs[2];
                for (auto& out : runs) {
                    DeviceArena arena(be());
                    SiluMulArgs a;
                    a.gate = rows_view(arena.put(gate, DType::kF32, {m * ld}), m, i, ld);
                    a.up = rows_view(arena.put(up, DType::kF32, {m * ld}), m, i, ld);
                    a.out = alias ? rows_view(a.gate, m, i, i) : arena.alloc(DType::kF32, {m, i});
                    a.out.shape = {m, i, 0, 0};
                    a.out.strides = {i, 1, 0, 0};
                    MOE_ASSERT_OK(ops::run(be(), a));
                    out = arena.get<float>(a.out);
                }
                expect_close(runs[0], ref, 1e-6, 1e-5, "out");
                expect_bitwise_equal(runs[0], runs[1], "out");
            }
        }
    }
}

// Gates far out in both tails: exp(-gate) overflows f32 below about -88; silu must then be -0
// (or a denormal), never NaN, and gate * up above.
TEST_P(OpsSiluMul, SaturatedGates) {
    const std::vector<float> tails = {-1000.0f, -100.0f, -88.5f, -20.0f, 0.0f, 20.0f, 88.5f, 100.0f, 1000.0f};
    const int64_t m = 3, i = static_cast<int64_t>(tails.size());
    std::vector<float> gate;
    for (int64_t r = 0; r < m; ++r) gate.insert(gate.end(), tails.begin(), tails.end());
    auto up = Rng(9).uniform(gate.size(), -2, 2);
    std::vector<float> ref(gate.size());
    MOE_ASSERT_OK(ref::silu_mul({host_view(gate.data(), DType::kF32, {m, i}), host_view(up.data(), DType::kF32, {m, i}),
                                 host_view(ref.data(), DType::kF32, {m, i})}));
    DeviceArena arena(be());
    SiluMulArgs a{arena.put(gate, DType::kF32, {m, i}), arena.put(up, DType::kF32, {m, i}),
                  arena.alloc(DType::kF32, {m, i})};
    MOE_ASSERT_OK(ops::run(be(), a));
    expect_close(arena.get<float>(a.out), ref, 1e-6, 1e-5, backend_name() + " out");
}

MOE_BACKEND_TEST_SUITE(OpsAdd);

TEST_P(OpsAdd, MatchesReference) {
    uint32_t seed = 500;
    for (int64_t m : {1, 19, 111}) {
        for (int64_t n : {1, 19, 300}) {
            ++seed;
            SCOPED_TRACE(trace(seed, backend_name() + " M=" + std::to_string(m) + " N=" + std::to_string(n)));
            Rng rng(seed);
            auto x = rng.uniform(static_cast<size_t>(m * n), -4, 4);
            auto y = rng.uniform(static_cast<size_t>(m * n), -4, 4);
            x[0] = INFINITY;
            std::vector<float> ref(x.size());
            MOE_ASSERT_OK(ref::add({host_view(x.data(), DType::kF32, {m, n}), host_view(y.data(), DType::kF32, {m, n}),
                                    host_view(ref.data(), DType::kF32, {m, n})}));
            std::vector<float> runs[2];
            for (auto& out : runs) {
                DeviceArena arena(be());
                AddArgs a{arena.put(x, DType::kF32, {m, n}), arena.put(y, DType::kF32, {m, n}), {}};
                a.out = a.a;  // in place over a
                MOE_ASSERT_OK(ops::run(be(), a));
                out = arena.get<float>(a.out);
            }
            expect_close(runs[0], ref, 0.0, 1.2e-7, "out");
            expect_bitwise_equal(runs[0], runs[1], "out");
        }
    }
}

// Bitwise f32 addition whatever the alignment of the operands (offset 1: 4-byte aligned only, so
// no vector loads of 16 bytes), and in place over a whole buffer.
TEST_P(OpsAdd, ExactAtAnyAlignmentAndInPlace) {
    const int64_t rows = 19, cols = 111, n = rows * cols;
    Rng rng(11);
    auto a = rng.uniform(static_cast<size_t>(n + 1), -100, 100);
    auto b = rng.uniform(static_cast<size_t>(n + 1), -100, 100);
    a[5] = INFINITY;
    std::vector<float> ref(static_cast<size_t>(n));
    MOE_ASSERT_OK(
        ref::add({host_view(a.data(), DType::kF32, {rows, cols}), host_view(b.data(), DType::kF32, {rows, cols}),
                  host_view(ref.data(), DType::kF32, {rows, cols})}));
    for (int offset : {0, 1}) {
        SCOPED_TRACE(backend_name() + " offset " + std::to_string(offset));
        std::vector<float> want(static_cast<size_t>(n));
        for (size_t e = 0; e < want.size(); ++e) want[e] = a[e + offset] + b[e + offset];
        if (offset == 0) expect_exact(ref, want, "reference vs f32 addition");
        DeviceArena arena(be());
        const TensorView da = arena.put(a, DType::kF32, {n + 1}), db = arena.put(b, DType::kF32, {n + 1});
        const TensorView dout = arena.alloc(DType::kF32, {n + 1});
        auto at = [&](const TensorView& v) {
            return TensorView::make(v.ptr<float>() + offset, DType::kF32, {rows, cols}, be().device());
        };
        MOE_ASSERT_OK(ops::run(be(), AddArgs{at(da), at(db), at(dout)}));
        const auto got = arena.get<float>(dout);
        expect_exact(std::vector<float>(got.begin() + offset, got.begin() + offset + n), want, "out");
    }
    SCOPED_TRACE(backend_name() + " in place");
    DeviceArena arena(be());
    const TensorView da = arena.put(a, DType::kF32, {1, n + 1}), db = arena.put(b, DType::kF32, {1, n + 1});
    MOE_ASSERT_OK(ops::run(be(), AddArgs{da, db, da}));
    std::vector<float> want(a.size());
    for (size_t e = 0; e < want.size(); ++e) want[e] = a[e] + b[e];
    expect_exact(arena.get<float>(da), want, "a += b");
}

MOE_BACKEND_TEST_SUITE(OpsMoeSharedGate);

TEST_P(OpsMoeSharedGate, MatchesReference) {
    uint32_t seed = 600;
    for (int64_t t : {1, 19, 111}) {
        for (int64_t h : {1, 64}) {
            ++seed;
            SCOPED_TRACE(trace(seed, backend_name() + " T=" + std::to_string(t) + " H=" + std::to_string(h)));
            Rng rng(seed);
            auto gate = rng.uniform(static_cast<size_t>(t), -6, 6);
            auto shared = rng.uniform(static_cast<size_t>(t * h), -2, 2);
            auto y = rng.uniform(static_cast<size_t>(t * h), -2, 2);
            auto ref = y;
            MOE_ASSERT_OK(ref::moe_shared_gate({host_view(gate.data(), DType::kF32, {t, 1}),
                                                host_view(shared.data(), DType::kF32, {t, h}),
                                                host_view(ref.data(), DType::kF32, {t, h})}));
            std::vector<float> runs[2];
            for (auto& out : runs) {
                DeviceArena arena(be());
                MoeSharedGateArgs a{arena.put(gate, DType::kF32, {t, 1}), arena.put(shared, DType::kF32, {t, h}),
                                    arena.put(y, DType::kF32, {t, h})};
                MOE_ASSERT_OK(ops::run(be(), a));
                out = arena.get<float>(a.y);
            }
            expect_close(runs[0], ref, 1e-6, 1e-5, "y");
            expect_bitwise_equal(runs[0], runs[1], "y");
        }
    }
}

}  // namespace
}  // namespace moe::testing
