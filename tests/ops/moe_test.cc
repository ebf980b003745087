// moe_route, moe_permute, moe_experts and moe_unpermute on every backend vs the reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cpu/cpu_features.h"
#include "moe/cpu_backend.h"
#include "ops/op_test_util.h"
#include "ops/panels12_test_util.h"

namespace moe::testing {
namespace {

// One routing case: ids exact (ties to the lower id), weights close, two runs bitwise equal.
void route_case(Backend& be, const std::string& backend_name, int64_t t, int64_t experts, int top_k, bool renorm,
                uint32_t seed) {
    SCOPED_TRACE(backend_name + " T=" + std::to_string(t) + " E=" + std::to_string(experts) +
                 " k=" + std::to_string(top_k) + (renorm ? " renorm" : "") + " seed=" + std::to_string(seed));
    Rng rng(seed);
    auto logits = rng.uniform(static_cast<size_t>(t * experts), -4, 4);
    // Exact ties in token 0: the lower id must come first.
    logits[0] = logits[static_cast<size_t>(experts - 1)] = 9.0f;
    std::vector<int32_t> ref_ids(static_cast<size_t>(t * top_k));
    std::vector<float> ref_w(static_cast<size_t>(t * top_k));
    MOE_ASSERT_OK(ref::moe_route({host_view(logits.data(), DType::kF32, {t, experts}),
                                  host_view(ref_ids.data(), DType::kI32, {t, top_k}),
                                  host_view(ref_w.data(), DType::kF32, {t, top_k}), top_k, renorm}));
    EXPECT_EQ(ref_ids[0], 0);
    if (top_k > 1) EXPECT_EQ(ref_ids[1], experts - 1);
    std::vector<int32_t> ids[2];
    std::vector<float> w[2];
    for (int run = 0; run < 2; ++run) {
        DeviceArena arena(be);
        MoeRouteArgs a{arena.put(logits, DType::kF32, {t, experts}), arena.alloc(DType::kI32, {t, top_k}),
                       arena.alloc(DType::kF32, {t, top_k}), top_k, renorm};
        MOE_ASSERT_OK(ops::run(be, a));
        ids[run] = arena.get<int32_t>(a.topk_ids);
        w[run] = arena.get<float>(a.topk_weights);
    }
    expect_exact(ids[0], ref_ids, "topk_ids");
    expect_close(w[0], ref_w, 1e-6, 1e-5, "topk_weights");
    expect_bitwise_equal(ids[0], ids[1], "topk_ids");
    expect_bitwise_equal(w[0], w[1], "topk_weights");
}

MOE_BACKEND_TEST_SUITE(OpsMoeRoute);

TEST_P(OpsMoeRoute, IdsExactWeightsClose) {
    uint32_t seed = 1100;
    for (int64_t t : {1, 19, 111})
        for (auto [experts, top_k] : {std::pair<int64_t, int>{8, 2}, {60, 4}, {8, 8}, {3, 1}})
            for (bool renorm : {false, true}) route_case(be(), backend_name(), t, experts, top_k, renorm, ++seed);
}

// Qwen3-30B-A3B's routing: 128 experts, top 8.
TEST_P(OpsMoeRoute, QwenSizedRouting) {
    uint32_t seed = 1150;
    for (int64_t t : {1, 19, 111})
        for (bool renorm : {false, true}) route_case(be(), backend_name(), t, 128, 8, renorm, ++seed);
}

// One permutation case: rows grouped by expert in slot order, exactly; the last expert gets none.
void permute_case(Backend& be, const std::string& backend_name, int64_t t, int64_t top_k, int num_experts,
                  int64_t hidden, uint32_t seed) {
    SCOPED_TRACE(backend_name + " T=" + std::to_string(t) + " k=" + std::to_string(top_k) +
                 " E=" + std::to_string(num_experts) + " seed=" + std::to_string(seed));
    Rng rng(seed);
    // Experts 0..num_experts-2 only: the last one never gets a row.
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
    EXPECT_EQ(ref_off[num_experts], ref_off[num_experts - 1]);  // empty last expert
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

MOE_BACKEND_TEST_SUITE(OpsMoePermute);

TEST_P(OpsMoePermute, GroupsByExpertExactly) {
    uint32_t seed = 1200;
    for (int64_t t : {1, 19, 111})
        for (int64_t top_k : {1, 2, 3}) permute_case(be(), backend_name(), t, top_k, 9, 19, ++seed);
}

// Qwen3-30B-A3B's routing over a long prefill: 128 experts, top 8, 600 tokens (4800 pairs: the
// CUDA backend's scan runs over 19 chunks of 256).
TEST_P(OpsMoePermute, QwenSizedPrefill) {
    permute_case(be(), backend_name(), 600, 8, 128, 64, 1250);
}

// Bad expert ids (past the end, negative) get the reference's message.
TEST_P(OpsMoePermute, BadIdGetsTheReferenceMessage) {
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

MOE_BACKEND_TEST_SUITE(OpsMoeExperts);

TEST_P(OpsMoeExperts, MatchesReferenceSkippingEmptyExperts) {
    uint32_t seed = 1300;
    for (DType dt : {DType::kF32, DType::kBF16}) {
        // The last shape has experts above the CPU tiles' 64-row block and several 64-column
        // work items per matrix, with K tails on both products.
        for (int64_t hidden : {19, 64, 130}) {
            ++seed;
            SCOPED_TRACE(backend_name() + " " + dtype_name(dt) + " H=" + std::to_string(hidden) +
                         " seed=" + std::to_string(seed));
            Rng rng(seed);
            const int64_t inter = hidden == 130 ? 150 : 23;
            // Expert 1 has no rows and no weights (as on another rank): it must not be read.
            std::vector<int32_t> offsets =
                hidden == 130 ? std::vector<int32_t>{0, 70, 70, 71, 140} : std::vector<int32_t>{0, 5, 5, 6, 25};
            const int64_t num_experts = 4, rows = offsets.back();
            auto x = rng.uniform(static_cast<size_t>(rows * hidden), -1, 1);
            std::vector<std::vector<float>> w[3];
            std::vector<std::vector<uint16_t>> wb[3];
            for (int m = 0; m < 3; ++m)
                for (int64_t e = 0; e < num_experts; ++e) {
                    w[m].push_back(rng.uniform(static_cast<size_t>(inter * hidden), -0.5f, 0.5f));
                    wb[m].push_back(to_bf16(w[m].back()));
                }
            auto host_weights = [&](int m) {
                std::vector<WeightView> views;
                for (int64_t e = 0; e < num_experts; ++e) {
                    if (e == 1) {
                        views.emplace_back();
                        continue;
                    }
                    void* data = dt == DType::kF32 ? static_cast<void*>(w[m][static_cast<size_t>(e)].data())
                                                   : wb[m][static_cast<size_t>(e)].data();
                    views.push_back(m == 2 ? host_view(data, dt, {hidden, inter})
                                           : host_view(data, dt, {inter, hidden}));
                }
                return views;
            };
            auto hg = host_weights(0), hu = host_weights(1), hd = host_weights(2);
            std::vector<float> ref(static_cast<size_t>(rows * hidden));
            MOE_ASSERT_OK(ref::moe_experts({host_view(x.data(), DType::kF32, {rows, hidden}),
                                            host_view(offsets.data(), DType::kI32, {num_experts + 1}), hg, hu, hd,
                                            host_view(ref.data(), DType::kF32, {rows, hidden})}));
            // Runs 0 and 1 on the weights as given, run 2 with them packed by the backend
            // (the CPU's bf16 column panels; backends that keep no packed layout run the
            // same kernels again), run 3 packed as streamed matrices (the CPU's 12-bit
            // panels).
            std::vector<float> runs[4];
            for (int run = 0; run < 4; ++run) {
                std::vector<float>& out = runs[run];
                std::vector<std::unique_ptr<PreparedWeight>> packs;
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
                        if (run < 2) {
                            dw[m].push_back(dt == DType::kF32 ? arena.put(w[m][i], dt, {d0, d1})
                                                              : arena.put(wb[m][i], dt, {d0, d1}));
                            continue;
                        }
                        void* host = dt == DType::kF32 ? static_cast<void*>(w[m][i].data()) : wb[m][i].data();
                        auto packed = be().prepare_weight("expert", host_view(host, dt, {d0, d1}),
                                                          run == 2 ? WeightUse::kMatmul : WeightUse::kStreamedMatmul);
                        MOE_ASSERT_OK(packed.status());
                        packs.push_back(std::move(packed.value()));
                        dw[m].emplace_back(*packs.back());
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
                expect_bitwise_equal(runs[0], runs[2], "out_permuted (f32 is never packed)");
                expect_bitwise_equal(runs[0], runs[3], "out_permuted (f32 is never packed)");
            } else {
                // x and the SwiGLU activations are rounded to bf16 before each product: the
                // error grows with the size of the terms summed, i.e. with the outputs' rms
                // (~7 on the largest shape), not with each output's own magnitude.
                double sq = 0;
                for (float v : ref) sq += static_cast<double>(v) * v;
                const double rms = std::sqrt(sq / static_cast<double>(ref.size()));
                expect_close(runs[0], ref, 2e-2 + 1e-2 * rms, 2e-2, "out_permuted");
                expect_close(runs[2], ref, 2e-2 + 1e-2 * rms, 2e-2, "out_permuted, packed weights");
                expect_close(runs[3], ref, 2e-2 + 1e-2 * rms, 2e-2, "out_permuted, 12-bit packed weights");
                // The same bf16 values: only the f32 order of the few exception terms differs.
                expect_close(runs[3], runs[2], 1e-4, 1e-5, "out_permuted, 12-bit against plain panels");
            }
            expect_bitwise_equal(runs[0], runs[1], "out_permuted");
        }
    }
}

// gpt-oss's experts: biases on gate, up and down, and the clamped SwiGLU (gate clamped above at
// the limit, up to +-limit, (up + 1) * gate * sigmoid(alpha * gate)). Biases drawn in [-9, 9] put
// a good share of gate and up values past the limit of 7, so every branch runs. Expert 1 has no
// rows and neither weights nor biases (as on another rank).
TEST_P(OpsMoeExperts, ClampedSwiGLUWithBiasesMatchesReference) {
    uint32_t seed = 1400;
    for (DType dt : {DType::kF32, DType::kBF16}) {
        for (int64_t hidden : {19, 130}) {
            ++seed;
            SCOPED_TRACE(backend_name() + " " + dtype_name(dt) + " H=" + std::to_string(hidden) +
                         " seed=" + std::to_string(seed));
            Rng rng(seed);
            const int64_t inter = hidden == 130 ? 150 : 23, num_experts = 4;
            std::vector<int32_t> offsets =
                hidden == 130 ? std::vector<int32_t>{0, 70, 70, 71, 140} : std::vector<int32_t>{0, 5, 5, 6, 25};
            const int64_t rows = offsets.back();
            auto x = rng.uniform(static_cast<size_t>(rows * hidden), -1, 1);
            std::vector<std::vector<float>> w[3], b[3];
            std::vector<std::vector<uint16_t>> wb[3];
            for (int m = 0; m < 3; ++m)
                for (int64_t e = 0; e < num_experts; ++e) {
                    w[m].push_back(rng.uniform(static_cast<size_t>(inter * hidden), -0.3f, 0.3f));
                    wb[m].push_back(to_bf16(w[m].back()));
                    b[m].push_back(rng.uniform(static_cast<size_t>(m == 2 ? hidden : inter), -9.0f, 9.0f));
                }
            auto weights = [&](int m, DeviceArena* arena) {
                std::vector<WeightView> views;
                for (int64_t e = 0; e < num_experts; ++e) {
                    const size_t i = static_cast<size_t>(e);
                    const int64_t d0 = m == 2 ? hidden : inter, d1 = m == 2 ? inter : hidden;
                    if (e == 1) {
                        views.emplace_back();
                    } else if (arena == nullptr) {
                        void* data = dt == DType::kF32 ? static_cast<void*>(w[m][i].data()) : wb[m][i].data();
                        views.push_back(host_view(data, dt, {d0, d1}));
                    } else {
                        views.push_back(dt == DType::kF32 ? arena->put(w[m][i], dt, {d0, d1})
                                                          : arena->put(wb[m][i], dt, {d0, d1}));
                    }
                }
                return views;
            };
            auto biases = [&](int m, DeviceArena* arena) {
                std::vector<TensorView> views;
                for (int64_t e = 0; e < num_experts; ++e) {
                    const size_t i = static_cast<size_t>(e);
                    const int64_t n = m == 2 ? hidden : inter;
                    if (e == 1) {
                        views.emplace_back();
                    } else {
                        views.push_back(arena == nullptr ? host_view(b[m][i].data(), DType::kF32, {n})
                                                         : arena->put(b[m][i], DType::kF32, {n}));
                    }
                }
                return views;
            };
            auto hg = weights(0, nullptr), hu = weights(1, nullptr), hd = weights(2, nullptr);
            auto hbg = biases(0, nullptr), hbu = biases(1, nullptr), hbd = biases(2, nullptr);
            std::vector<float> ref(static_cast<size_t>(rows * hidden));
            MoeExpertsArgs r{host_view(x.data(), DType::kF32, {rows, hidden}),
                             host_view(offsets.data(), DType::kI32, {num_experts + 1}),
                             hg,
                             hu,
                             hd,
                             host_view(ref.data(), DType::kF32, {rows, hidden}),
                             hbg,
                             hbu,
                             hbd,
                             ExpertActivation::kClampedSwiGLU,
                             1.702f,
                             7.0f};
            MOE_ASSERT_OK(ref::moe_experts(r));
            // Without the clamp (a limit no value reaches), the result must differ: the clamp ran.
            std::vector<float> unclamped(ref.size());
            MoeExpertsArgs r2 = r;
            r2.out_permuted = host_view(unclamped.data(), DType::kF32, {rows, hidden});
            r2.swiglu_limit = 1e6f;
            MOE_ASSERT_OK(ref::moe_experts(r2));
            double diff = 0;
            for (size_t i = 0; i < ref.size(); ++i) diff = std::max(diff, std::fabs(double(ref[i]) - unclamped[i]));
            EXPECT_GT(diff, 1.0) << "the clamp never changed the reference's output";

            std::vector<float> runs[2];
            for (auto& out : runs) {
                DeviceArena arena(be());
                auto dg = weights(0, &arena), du = weights(1, &arena), dd = weights(2, &arena);
                auto dbg = biases(0, &arena), dbu = biases(1, &arena), dbd = biases(2, &arena);
                MoeExpertsArgs a = r;
                a.x_permuted = arena.put(x, DType::kF32, {rows, hidden});
                a.expert_offsets = arena.put(offsets, DType::kI32, {num_experts + 1});
                a.w_gate = dg;
                a.w_up = du;
                a.w_down = dd;
                a.b_gate = dbg;
                a.b_up = dbu;
                a.b_down = dbd;
                a.out_permuted = arena.alloc(DType::kF32, {rows, hidden});
                MOE_ASSERT_OK(ops::run(be(), a));
                out = arena.get<float>(a.out_permuted);
            }
            if (dt == DType::kF32) {
                expect_close(runs[0], ref, 1e-4, 1e-4, "out_permuted");
            } else {
                // bf16 rounding of x and of the activations before each product (see above).
                double sq = 0;
                for (float v : ref) sq += static_cast<double>(v) * v;
                const double rms = std::sqrt(sq / static_cast<double>(ref.size()));
                expect_close(runs[0], ref, 2e-2 + 1e-2 * rms, 2e-2, "out_permuted");
            }
            expect_bitwise_equal(runs[0], runs[1], "out_permuted");
        }
    }
}

// An expert with rows and weights but no biases, where the others have biases: the caller's error.
TEST_P(OpsMoeExperts, ExpertWithRowsAndNoBiasIsInvalid) {
    const int64_t hidden = 8, inter = 4;
    std::vector<int32_t> offsets = {0, 2, 3};
    std::vector<float> x(3 * hidden, 0.5f), wg(inter * hidden, 0.1f), wd(hidden * inter, 0.1f), bi(inter, 0.1f),
        bh(hidden, 0.1f);
    DeviceArena arena(be());
    std::vector<WeightView> g = {arena.put(wg, DType::kF32, {inter, hidden}),
                                 arena.put(wg, DType::kF32, {inter, hidden})};
    std::vector<WeightView> d = {arena.put(wd, DType::kF32, {hidden, inter}),
                                 arena.put(wd, DType::kF32, {hidden, inter})};
    std::vector<TensorView> bg = {arena.put(bi, DType::kF32, {inter}), TensorView{}};
    std::vector<TensorView> bd = {arena.put(bh, DType::kF32, {hidden}), arena.put(bh, DType::kF32, {hidden})};
    MoeExpertsArgs a{arena.put(x, DType::kF32, {3, hidden}),
                     arena.put(offsets, DType::kI32, {3}),
                     g,
                     g,
                     d,
                     arena.alloc(DType::kF32, {3, hidden}),
                     bg,
                     bg,
                     bd,
                     ExpertActivation::kClampedSwiGLU};
    const Status s = ops::run(be(), a);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("expert 1"), std::string::npos) << s.message();
    // A bias of the wrong length is refused by validate, naming it.
    std::vector<TensorView> short_bias = {arena.put(bh, DType::kF32, {hidden}), arena.put(bh, DType::kF32, {hidden})};
    a.b_gate = short_bias;
    const Status v = ops::run(be(), a);
    EXPECT_EQ(v.code(), StatusCode::kInvalidArgument) << v.to_string();
    EXPECT_NE(v.message().find("b_gate[0]"), std::string::npos) << v.message();
}

// An expert that has rows but no weights (as if another rank held it) is the caller's error,
// named, not a read through a null view.
TEST_P(OpsMoeExperts, ExpertWithRowsAndNoWeightsIsInvalid) {
    const int64_t hidden = 8, inter = 4;
    std::vector<int32_t> offsets = {0, 2, 3};
    std::vector<float> x(3 * hidden, 0.5f), wg(inter * hidden, 0.1f), wd(hidden * inter, 0.1f);
    DeviceArena arena(be());
    std::vector<WeightView> g = {arena.put(wg, DType::kF32, {inter, hidden}), WeightView{}};
    std::vector<WeightView> u = {arena.put(wg, DType::kF32, {inter, hidden}), WeightView{}};
    std::vector<WeightView> d = {arena.put(wd, DType::kF32, {hidden, inter}), WeightView{}};
    MoeExpertsArgs a{arena.put(x, DType::kF32, {3, hidden}), arena.put(offsets, DType::kI32, {3}), g, u, d,
                     arena.alloc(DType::kF32, {3, hidden})};
    const Status s = ops::run(be(), a);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("expert 1"), std::string::npos) << s.message();
}

// The CPU's bf16 experts split items over the threads and let a thread that finishes early
// take the rest of another's items: with 1, 3 and 5 threads on a 2-core machine (threads get
// descheduled, so taking happens), the packed and unpacked results are bitwise those of one
// thread, run after run: every item is computed exactly once.
TEST(CpuMoeExperts, Bf16SameBitsWhateverTheThreadsAndWhoTakesWhichItem) {
    if (!cpu::cpu_features().avx512_bf16) GTEST_SKIP() << "this CPU has no AVX512-BF16: the bf16 experts do not run";
    const int64_t hidden = 200, inter = 320, num_experts = 6;
    const std::vector<int32_t> offsets = {0, 9, 9, 40, 41, 47, 90};
    const int64_t rows = offsets.back();
    Rng rng(77);
    auto x = rng.uniform(static_cast<size_t>(rows * hidden), -1, 1);
    std::vector<std::vector<uint16_t>> w[3];
    for (int m = 0; m < 3; ++m)
        for (int64_t e = 0; e < num_experts; ++e)
            w[m].push_back(to_bf16(rng.uniform(static_cast<size_t>(inter * hidden), -0.5f, 0.5f)));
    // layout: 0 checkpoint, 1 bf16 panels, 2 12-bit panels
    auto run = [&](int threads, int layout) {
        auto be = make_cpu_backend({.num_threads = threads, .pack_weights = layout > 0, .matmul = CpuMatmul::kOwn});
        PackedExperts pe = pack_experts(*be, w, hidden, inter, layout == 2);
        const cpu::CpuLayout want[] = {cpu::CpuLayout::kRowMajor, cpu::CpuLayout::kPanels, cpu::CpuLayout::kPanels12};
        for (const auto& vs : pe.views)
            for (const WeightView& v : vs) EXPECT_EQ(cpu_layout(*v.prepared), want[layout]);
        return run_packed_experts(*be, pe, x, offsets, hidden);
    };
    for (int layout : {0, 1, 2}) {
        SCOPED_TRACE(layout == 0 ? "checkpoint layout" : layout == 1 ? "packed" : "12-bit packed");
        const std::vector<float> one = run(1, layout);
        for (int threads : {3, 5})
            for (int rep = 0; rep < 4; ++rep) expect_bitwise_equal(run(threads, layout), one, "out_permuted");
    }
}

MOE_BACKEND_TEST_SUITE(OpsMoeUnpermute);

TEST_P(OpsMoeUnpermute, WeightedCombineInSlotOrder) {
    uint32_t seed = 1400;
    for (int64_t t : {1, 19, 111}) {
        for (int64_t top_k : {1, 4}) {
            for (bool acc : {false, true}) {
                ++seed;
                SCOPED_TRACE(backend_name() + " T=" + std::to_string(t) + " k=" + std::to_string(top_k) +
                             (acc ? " accumulate" : "") + " seed=" + std::to_string(seed));
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

// A row index past the pairs gets the reference's message.
TEST_P(OpsMoeUnpermute, BadRowGetsTheReferenceMessage) {
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

}  // namespace
}  // namespace moe::testing
