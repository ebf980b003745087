// moe_route, moe_shared_gate, moe_permute, moe_experts and moe_unpermute on the CUDA backend
// against the references: the cases and tolerances of tests/ops, plus Qwen3-sized routing and
// permutation (128 experts, top 8, several CUB scan chunks) and bad indices.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "cuda_op_fixture.h"

namespace moe::testing {
namespace {

using CudaMoeTest = CudaOpTest;

TEST_F(CudaMoeTest, RouteIdsExactWeightsClose) {
    uint32_t seed = 1100;
    for (int64_t t : {1, 19, 111}) {
        for (auto [experts, top_k] : {std::pair<int64_t, int>{8, 2}, {60, 4}, {8, 8}, {3, 1}, {128, 8}}) {
            for (bool renorm : {false, true}) {
                ++seed;
                SCOPED_TRACE("T=" + std::to_string(t) + " E=" + std::to_string(experts) + " k=" +
                             std::to_string(top_k) + (renorm ? " renorm" : "") + " seed=" + std::to_string(seed));
                Rng rng(seed);
                auto logits = rng.uniform(static_cast<size_t>(t * experts), -4, 4);
                logits[0] = logits[static_cast<size_t>(experts - 1)] = 9.0f;  // exact tie: lower id first
                std::vector<int32_t> ref_ids(static_cast<size_t>(t * top_k));
                std::vector<float> ref_w(static_cast<size_t>(t * top_k));
                MOE_ASSERT_OK(ref::moe_route({host_view(logits.data(), DType::kF32, {t, experts}),
                                              host_view(ref_ids.data(), DType::kI32, {t, top_k}),
                                              host_view(ref_w.data(), DType::kF32, {t, top_k}), top_k, renorm}));
                std::vector<int32_t> ids[2];
                std::vector<float> w[2];
                for (int run = 0; run < 2; ++run) {
                    DeviceArena arena(be());
                    MoeRouteArgs a{arena.put(logits, DType::kF32, {t, experts}), arena.alloc(DType::kI32, {t, top_k}),
                                   arena.alloc(DType::kF32, {t, top_k}), top_k, renorm};
                    MOE_ASSERT_OK(ops::run(be(), a));
                    ids[run] = arena.get<int32_t>(a.topk_ids);
                    w[run] = arena.get<float>(a.topk_weights);
                }
                expect_exact(ids[0], ref_ids, "topk_ids");
                expect_close(w[0], ref_w, 1e-6, 1e-5, "topk_weights");
                expect_bitwise_equal(ids[0], ids[1], "topk_ids");
                expect_bitwise_equal(w[0], w[1], "topk_weights");
            }
        }
    }
}

TEST_F(CudaMoeTest, SharedGateMatchesReference) {
    uint32_t seed = 600;
    for (int64_t t : {1, 19, 111}) {
        for (int64_t h : {1, 64}) {
            ++seed;
            SCOPED_TRACE("T=" + std::to_string(t) + " H=" + std::to_string(h) + " seed=" + std::to_string(seed));
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

void permute_case(Backend& be, int64_t t, int64_t top_k, int num_experts, int64_t hidden, uint32_t seed) {
    SCOPED_TRACE("T=" + std::to_string(t) + " k=" + std::to_string(top_k) + " E=" + std::to_string(num_experts) +
                 " seed=" + std::to_string(seed));
    Rng rng(seed);
    // The last expert never gets a row.
    auto ids = rng.ints(static_cast<size_t>(t * top_k), 0, num_experts - 2);
    auto x = rng.uniform(static_cast<size_t>(t * hidden), -1, 1);
    const int64_t pairs = t * top_k;
    std::vector<float> ref_xp(static_cast<size_t>(pairs * hidden));
    std::vector<int32_t> ref_off(static_cast<size_t>(num_experts) + 1), ref_row(static_cast<size_t>(pairs)),
        ref_tok(static_cast<size_t>(pairs));
    MOE_ASSERT_OK(ref::moe_permute(
        {host_view(x.data(), DType::kF32, {t, hidden}), host_view(ids.data(), DType::kI32, {t, top_k}), num_experts,
         host_view(ref_xp.data(), DType::kF32, {pairs, hidden}),
         host_view(ref_off.data(), DType::kI32, {num_experts + 1}), host_view(ref_row.data(), DType::kI32, {pairs}),
         host_view(ref_tok.data(), DType::kI32, {pairs})}));
    std::vector<float> xp[2];
    std::vector<int32_t> off[2], row[2], tok[2];
    for (int run = 0; run < 2; ++run) {
        DeviceArena arena(be);
        MoePermuteArgs a{arena.put(x, DType::kF32, {t, hidden}),
                         arena.put(ids, DType::kI32, {t, top_k}),
                         num_experts,
                         arena.alloc(DType::kF32, {pairs, hidden}),
                         arena.alloc(DType::kI32, {num_experts + 1}),
                         arena.alloc(DType::kI32, {pairs}),
                         arena.alloc(DType::kI32, {pairs})};
        MOE_ASSERT_OK(ops::run(be, a));
        xp[run] = arena.get<float>(a.x_permuted);
        off[run] = arena.get<int32_t>(a.expert_offsets);
        row[run] = arena.get<int32_t>(a.row_of);
        tok[run] = arena.get<int32_t>(a.token_of);
    }
    expect_exact(xp[0], ref_xp, "x_permuted");
    expect_exact(off[0], ref_off, "expert_offsets");
    expect_exact(row[0], ref_row, "row_of");
    expect_exact(tok[0], ref_tok, "token_of");
    expect_bitwise_equal(xp[0], xp[1], "x_permuted");
    expect_bitwise_equal(row[0], row[1], "row_of");
}

TEST_F(CudaMoeTest, PermuteGroupsByExpertExactly) {
    uint32_t seed = 1200;
    for (int64_t t : {1, 19, 111})
        for (int64_t top_k : {1, 2, 3}) permute_case(be(), t, top_k, 9, 19, ++seed);
    // Qwen3-30B-A3B routing: 128 experts, top 8, 600 tokens = 19 chunks of 256 pairs.
    permute_case(be(), 600, 8, 128, 64, ++seed);
}

TEST_F(CudaMoeTest, PermuteBadIdGetsTheReferenceMessage) {
    const int64_t t = 5, top_k = 2, hidden = 3;
    const int num_experts = 4;
    std::vector<int32_t> ids = {0, 1, 2, 3, 3, 4, 0, -1, 1, 1};
    std::vector<float> x(static_cast<size_t>(t * hidden), 1.0f);
    std::vector<float> xp(static_cast<size_t>(t * top_k * hidden));
    std::vector<int32_t> off(num_experts + 1), row(static_cast<size_t>(t * top_k)), tok(static_cast<size_t>(t * top_k));
    const Status want = ref::moe_permute(
        {host_view(x.data(), DType::kF32, {t, hidden}), host_view(ids.data(), DType::kI32, {t, top_k}), num_experts,
         host_view(xp.data(), DType::kF32, {t * top_k, hidden}), host_view(off.data(), DType::kI32, {num_experts + 1}),
         host_view(row.data(), DType::kI32, {t * top_k}), host_view(tok.data(), DType::kI32, {t * top_k})});
    ASSERT_EQ(want.code(), StatusCode::kOutOfRange) << want.to_string();
    DeviceArena arena(be());
    MoePermuteArgs a{arena.put(x, DType::kF32, {t, hidden}),
                     arena.put(ids, DType::kI32, {t, top_k}),
                     num_experts,
                     arena.alloc(DType::kF32, {t * top_k, hidden}),
                     arena.alloc(DType::kI32, {num_experts + 1}),
                     arena.alloc(DType::kI32, {t * top_k}),
                     arena.alloc(DType::kI32, {t * top_k})};
    const Status got = ops::run(be(), a);
    EXPECT_EQ(got.code(), StatusCode::kOutOfRange) << got.to_string();
    EXPECT_EQ(got.message(), want.message());
}

TEST_F(CudaMoeTest, ExpertsMatchReferenceSkippingEmptyExperts) {
    uint32_t seed = 1300;
    for (DType dt : {DType::kF32, DType::kBF16}) {
        for (int64_t hidden : {19, 64}) {
            ++seed;
            SCOPED_TRACE(std::string(dtype_name(dt)) + " H=" + std::to_string(hidden) +
                         " seed=" + std::to_string(seed));
            Rng rng(seed);
            const int64_t inter = 23;
            // Expert 1 has no rows and no weights (as on another rank): it must not be read.
            std::vector<int32_t> offsets = {0, 5, 5, 6, 25};
            const int64_t num_experts = 4, rows = offsets.back();
            auto x = rng.uniform(static_cast<size_t>(rows * hidden), -1, 1);
            std::vector<std::vector<float>> w[3];
            std::vector<std::vector<uint16_t>> wb[3];
            for (int m = 0; m < 3; ++m)
                for (int64_t e = 0; e < num_experts; ++e) {
                    w[m].push_back(rng.uniform(static_cast<size_t>(inter * hidden), -0.5f, 0.5f));
                    wb[m].push_back(to_bf16(w[m].back()));
                }
            std::vector<WeightView> hw[3];
            for (int m = 0; m < 3; ++m)
                for (int64_t e = 0; e < num_experts; ++e) {
                    if (e == 1) {
                        hw[m].emplace_back();
                        continue;
                    }
                    const size_t i = static_cast<size_t>(e);
                    void* data = dt == DType::kF32 ? static_cast<void*>(w[m][i].data()) : wb[m][i].data();
                    hw[m].push_back(m == 2 ? host_view(data, dt, {hidden, inter})
                                           : host_view(data, dt, {inter, hidden}));
                }
            std::vector<float> ref(static_cast<size_t>(rows * hidden));
            MOE_ASSERT_OK(ref::moe_experts({host_view(x.data(), DType::kF32, {rows, hidden}),
                                            host_view(offsets.data(), DType::kI32, {num_experts + 1}), hw[0], hw[1],
                                            hw[2], host_view(ref.data(), DType::kF32, {rows, hidden})}));
            std::vector<float> runs[2];
            for (auto& out : runs) {
                DeviceArena arena(be());
                std::vector<WeightView> dw[3];
                for (int m = 0; m < 3; ++m)
                    for (int64_t e = 0; e < num_experts; ++e) {
                        if (e == 1) {
                            dw[m].emplace_back();
                            continue;
                        }
                        const size_t i = static_cast<size_t>(e);
                        const int64_t d0 = m == 2 ? hidden : inter, d1 = m == 2 ? inter : hidden;
                        dw[m].push_back(dt == DType::kF32 ? arena.put(w[m][i], dt, {d0, d1})
                                                          : arena.put(wb[m][i], dt, {d0, d1}));
                    }
                MoeExpertsArgs a{arena.put(x, DType::kF32, {rows, hidden}),
                                 arena.put(offsets, DType::kI32, {num_experts + 1}),
                                 dw[0],
                                 dw[1],
                                 dw[2],
                                 arena.alloc(DType::kF32, {rows, hidden})};
                MOE_ASSERT_OK(ops::run(be(), a));
                out = arena.get<float>(a.out_permuted);
            }
            if (dt == DType::kF32) {
                expect_close(runs[0], ref, 1e-5, 1e-4, "out_permuted");
            } else {
                expect_close(runs[0], ref, 2e-2, 2e-2, "out_permuted");
            }
            expect_bitwise_equal(runs[0], runs[1], "out_permuted");
        }
    }
}

TEST_F(CudaMoeTest, ExpertWithRowsAndNoWeightsIsInvalid) {
    const int64_t hidden = 8, inter = 4;
    std::vector<int32_t> offsets = {0, 2, 3};
    std::vector<float> x(3 * hidden, 0.5f), wg(inter * hidden, 0.1f), wd(hidden * inter, 0.1f);
    DeviceArena arena(be());
    std::vector<WeightView> g = {arena.put(wg, DType::kF32, {inter, hidden}), TensorView{}};
    std::vector<WeightView> u = {arena.put(wg, DType::kF32, {inter, hidden}), TensorView{}};
    std::vector<WeightView> d = {arena.put(wd, DType::kF32, {hidden, inter}), TensorView{}};
    MoeExpertsArgs a{arena.put(x, DType::kF32, {3, hidden}), arena.put(offsets, DType::kI32, {3}), g, u, d,
                     arena.alloc(DType::kF32, {3, hidden})};
    const Status s = ops::run(be(), a);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("expert 1"), std::string::npos) << s.message();
}

TEST_F(CudaMoeTest, UnpermuteWeightedCombineInSlotOrder) {
    uint32_t seed = 1400;
    for (int64_t t : {1, 19, 111}) {
        for (int64_t top_k : {1, 4}) {
            for (bool acc : {false, true}) {
                ++seed;
                SCOPED_TRACE("T=" + std::to_string(t) + " k=" + std::to_string(top_k) + (acc ? " accumulate" : "") +
                             " seed=" + std::to_string(seed));
                Rng rng(seed);
                const int64_t hidden = 33, pairs = t * top_k;
                std::vector<int32_t> row_of(static_cast<size_t>(pairs));
                std::iota(row_of.begin(), row_of.end(), 0);
                std::shuffle(row_of.begin(), row_of.end(), rng.gen());
                auto outp = rng.uniform(static_cast<size_t>(pairs * hidden), -2, 2);
                auto weights = rng.uniform(static_cast<size_t>(pairs), 0, 1);
                auto y0 = rng.uniform(static_cast<size_t>(t * hidden), -1, 1);
                auto ref = y0;
                MOE_ASSERT_OK(ref::moe_unpermute({host_view(outp.data(), DType::kF32, {pairs, hidden}),
                                                  host_view(row_of.data(), DType::kI32, {pairs}),
                                                  host_view(weights.data(), DType::kF32, {t, top_k}),
                                                  host_view(ref.data(), DType::kF32, {t, hidden}), acc}));
                std::vector<float> runs[2];
                for (auto& out : runs) {
                    DeviceArena arena(be());
                    MoeUnpermuteArgs a{
                        arena.put(outp, DType::kF32, {pairs, hidden}), arena.put(row_of, DType::kI32, {pairs}),
                        arena.put(weights, DType::kF32, {t, top_k}), arena.put(y0, DType::kF32, {t, hidden}), acc};
                    MOE_ASSERT_OK(ops::run(be(), a));
                    out = arena.get<float>(a.y);
                }
                expect_close(runs[0], ref, 1e-6, 1e-5, "y");
                expect_bitwise_equal(runs[0], runs[1], "y");
            }
        }
    }
}

TEST_F(CudaMoeTest, UnpermuteBadRowGetsTheReferenceMessage) {
    const int64_t t = 2, top_k = 2, hidden = 4, pairs = 4;
    std::vector<int32_t> row_of = {0, 1, 4, 2};
    std::vector<float> outp(pairs * hidden, 1.0f), weights(pairs, 0.5f), y(t * hidden, 0.0f);
    const Status want = ref::moe_unpermute(
        {host_view(outp.data(), DType::kF32, {pairs, hidden}), host_view(row_of.data(), DType::kI32, {pairs}),
         host_view(weights.data(), DType::kF32, {t, top_k}), host_view(y.data(), DType::kF32, {t, hidden}), false});
    ASSERT_EQ(want.code(), StatusCode::kOutOfRange) << want.to_string();
    DeviceArena arena(be());
    MoeUnpermuteArgs a{arena.put(outp, DType::kF32, {pairs, hidden}), arena.put(row_of, DType::kI32, {pairs}),
                       arena.put(weights, DType::kF32, {t, top_k}), arena.put(y, DType::kF32, {t, hidden}), false};
    const Status got = ops::run(be(), a);
    EXPECT_EQ(got.code(), StatusCode::kOutOfRange) << got.to_string();
    EXPECT_EQ(got.message(), want.message());
}

// All 13 ops have a CUDA table entry (nothing falls back to kUnimplemented).
TEST_F(CudaMoeTest, EveryOpHasACudaKernel) {
    const OpTable& t = be().ops();
    EXPECT_NE(t.embedding, nullptr);
    EXPECT_NE(t.rms_norm, nullptr);
    EXPECT_NE(t.rope, nullptr);
    EXPECT_NE(t.gemm, nullptr);
    EXPECT_NE(t.silu_mul, nullptr);
    EXPECT_NE(t.add, nullptr);
    EXPECT_NE(t.kv_write, nullptr);
    EXPECT_NE(t.attention, nullptr);
    EXPECT_NE(t.moe_route, nullptr);
    EXPECT_NE(t.moe_shared_gate, nullptr);
    EXPECT_NE(t.moe_permute, nullptr);
    EXPECT_NE(t.moe_experts, nullptr);
    EXPECT_NE(t.moe_unpermute, nullptr);
}

}  // namespace
}  // namespace moe::testing
