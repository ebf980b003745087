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
