// gemm on every backend: exact on small integers (f32 and bf16 weights), within tolerance on
// random floats, with bias, accumulate and row strides.
#include <gtest/gtest.h>

#include <tuple>

#include "ops/op_test_util.h"

namespace moe::testing {
namespace {

struct GemmCase {
    int64_t m, n, k;
    DType w_dtype;
    bool bias, accumulate, small_ints;
};

void run_gemm_case(Backend& be, const std::string& backend_name, const GemmCase& c, uint32_t seed) {
    SCOPED_TRACE(backend_name + " M=" + std::to_string(c.m) + " N=" + std::to_string(c.n) +
                 " K=" + std::to_string(c.k) + " w=" + dtype_name(c.w_dtype) + (c.bias ? " bias" : "") +
                 (c.accumulate ? " accumulate" : "") + (c.small_ints ? " ints" : " floats") +
                 " seed=" + std::to_string(seed));
    Rng rng(seed);
    const int64_t ldx = c.k + 5, ldy = c.n + 2;  // row strides with gaps
    auto x = c.small_ints ? rng.small_ints(static_cast<size_t>(c.m * ldx), -3, 3)
                          : rng.uniform(static_cast<size_t>(c.m * ldx), -1, 1);
    auto w = c.small_ints ? rng.small_ints(static_cast<size_t>(c.n * c.k), -3, 3)
                          : rng.uniform(static_cast<size_t>(c.n * c.k), -1, 1);
    auto bias =
        c.small_ints ? rng.small_ints(static_cast<size_t>(c.n), -5, 5) : rng.uniform(static_cast<size_t>(c.n), -1, 1);
    auto y0 = c.small_ints ? rng.small_ints(static_cast<size_t>(c.m * ldy), -9, 9)
                           : rng.uniform(static_cast<size_t>(c.m * ldy), -1, 1);
    auto w_bf16 = to_bf16(w);
    // Small integers are exact in bf16, so the bf16 path (which rounds x to bf16) is exact too.
    auto x_ref_in = x;
    auto y_ref = y0;
    void* w_host = c.w_dtype == DType::kF32 ? static_cast<void*>(w.data()) : w_bf16.data();
    GemmArgs r;
    r.x = rows_view(host_view(x_ref_in.data(), DType::kF32, {c.m * ldx}), c.m, c.k, ldx);
    r.w = host_view(w_host, c.w_dtype, {c.n, c.k});
    if (c.bias) r.bias = host_view(bias.data(), DType::kF32, {c.n});
    r.y = rows_view(host_view(y_ref.data(), DType::kF32, {c.m * ldy}), c.m, c.n, ldy);
    r.accumulate = c.accumulate;
    MOE_ASSERT_OK(ref::gemm(r));

    std::vector<float> runs[2];
    for (auto& out : runs) {
        DeviceArena arena(be);
        GemmArgs a;
        a.x = rows_view(arena.put(x, DType::kF32, {c.m * ldx}), c.m, c.k, ldx);
        a.w = c.w_dtype == DType::kF32 ? arena.put(w, DType::kF32, {c.n, c.k})
                                       : arena.put(w_bf16, DType::kBF16, {c.n, c.k});
        if (c.bias) a.bias = arena.put(bias, DType::kF32, {c.n});
        a.y = rows_view(arena.put(y0, DType::kF32, {c.m * ldy}), c.m, c.n, ldy);
        a.accumulate = c.accumulate;
        MOE_ASSERT_OK(ops::run(be, a));
        auto y = arena.get<float>(a.y);
        // The gaps between rows of y are not written.
        for (int64_t i = 0; i + 1 < c.m; ++i)
            for (int64_t j = c.n; j < ldy; ++j)
                ASSERT_EQ(y[static_cast<size_t>(i * ldy + j)], y0[static_cast<size_t>(i * ldy + j)])
                    << "gap of row " << i;
        out = pack_rows(y, c.m, c.n, ldy);
    }
    const auto ref = pack_rows(y_ref, c.m, c.n, ldy);
    if (c.small_ints) {
        expect_exact(runs[0], ref, "y");
    } else if (c.w_dtype == DType::kF32) {
        expect_close(runs[0], ref, 1e-5 * static_cast<double>(c.k), 1e-5, "y");
    } else {
        // x is rounded to bf16 (relative 2^-9) before the product: error ~ 2^-9 * sqrt(K) * |x||w|.
        expect_close(runs[0], ref, 4e-3 * std::sqrt(static_cast<double>(c.k)), 1e-2, "y");
    }
    expect_bitwise_equal(runs[0], runs[1], "y");
}

MOE_BACKEND_TEST_SUITE(OpsGemm);

TEST_P(OpsGemm, SmallIntegersAreExact) {
    uint32_t seed = 700;
    for (DType dt : {DType::kF32, DType::kBF16})
        for (int64_t m : {1, 19, 111})
            for (int64_t n : {1, 19, 67})
                for (int64_t k : {1, 19, 130})
                    for (int flags = 0; flags < 4; ++flags) {
                        if ((m * n * k) % 2 == 1 && flags == 3) continue;  // keep the run short
                        run_gemm_case(be(), backend_name(), {m, n, k, dt, (flags & 1) != 0, (flags & 2) != 0, true},
                                      ++seed);
                    }
}

TEST_P(OpsGemm, RandomFloatsWithinTolerance) {
    uint32_t seed = 800;
    for (DType dt : {DType::kF32, DType::kBF16})
        for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 129, 257},
                               {19, 64, 96},
                               {111, 33, 200},
                               // N above the CPU's narrow f32 kernel (OpenBLAS takes it)
                               {21, 600, 70}})
            for (bool bias : {false, true})
                run_gemm_case(be(), backend_name(), {m, n, k, dt, bias, !bias, false}, ++seed);
}

// A long K (small integers, still exact: every partial sum stays below 2^24) and a wide N on
// a single row (random floats), with bias and accumulate.
TEST_P(OpsGemm, LongKAndWideRow) {
    uint32_t seed = 900;
    for (DType dt : {DType::kF32, DType::kBF16}) {
        run_gemm_case(be(), backend_name(), {7, 64, 1000, dt, false, false, true}, ++seed);
        run_gemm_case(be(), backend_name(), {7, 64, 1000, dt, true, true, true}, ++seed);
        run_gemm_case(be(), backend_name(), {1, 1000, 512, dt, false, true, false}, ++seed);
        run_gemm_case(be(), backend_name(), {19, 111, 257, dt, true, false, false}, ++seed);
    }
}

}  // namespace
}  // namespace moe::testing
