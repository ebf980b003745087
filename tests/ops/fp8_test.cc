// FP8 e4m3 block-scaled weights (#20; moe/quant.h) through Backend::prepare_quantized_weight and
// the gemm and moe_experts ops, on every backend, against the naive references on the weights
// dequantize_to_f32 expands: exact on small integers with power-of-two scales, within bf16
// rounding of x on random values; decode and prefill row counts, partial blocks (n, k not
// multiples of the block), blocks other than 128 x 128 (block_k not a multiple of 32 takes the
// CPU's scalar kernel), bias and accumulate; batch invariance and determinism on the CPU; the
// e4m3 -> bf16 vector conversion against fp8_e4m3_to_f32 for all 256 codes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/cpu_weight.h"
#include "backend/cpu/fp8_block.h"
#include "moe/quant.h"
#include "ops/op_test_util.h"

namespace moe::testing {
namespace {

// A host FP8 matrix: codes, scales and the QuantizedTensor over them.
struct HostFp8 {
    std::vector<uint8_t> values;
    std::vector<float> scales;
    QuantizedTensor q;

    HostFp8(int64_t n, int64_t k, int64_t bn, int64_t bk) {
        const int64_t sn = (n + bn - 1) / bn, sk = (k + bk - 1) / bk;
        values.resize(static_cast<size_t>(n * k));
        scales.resize(static_cast<size_t>(sn * sk));
        q.format = QuantFormat::kFp8E4M3Block;
        q.n = n;
        q.k = k;
        q.block_n = bn;
        q.block_k = bk;
        q.values = TensorView::make(values.data(), DType::kF8E4M3, {n, k});
        q.scales = TensorView::make(scales.data(), DType::kF32, {sn, sk});
    }
    std::vector<float> dequantized() const {
        std::vector<float> w(static_cast<size_t>(q.n * q.k));
        dequantize_to_f32(q, 0, q.n, w.data());
        return w;
    }
};

// small: codes whose values are multiples of 2^-9 up to 2 in magnitude and scales in 2^-1..2^2,
// so with x in [-3, 3] every term is a multiple of 2^-10 and every sum stays under 24 * K
// (< 2^13 for K <= 300): exact in f32 whatever the order. Otherwise any finite code and scales spread
// over two decades.
void fill(HostFp8& h, std::mt19937& gen, bool small) {
    std::uniform_int_distribution<int> code(0, 255), pow2(-1, 2);
    std::uniform_real_distribution<float> scale(0.01f, 1.0f);
    for (auto& v : h.values) {
        uint8_t c;
        do {
            c = static_cast<uint8_t>(code(gen));
        } while ((c & 0x7f) == 0x7f || (small && std::fabs(fp8_e4m3_to_f32(c)) > 2.0f));
        v = c;
    }
    for (auto& s : h.scales) s = small ? std::ldexp(1.0f, pow2(gen)) : scale(gen);
}

std::unique_ptr<PreparedWeight> prepare(Backend& be, const HostFp8& h) {
    auto p = be.prepare_quantized_weight("w", h.q, WeightUse::kStreamedMatmul);
    EXPECT_TRUE(p.ok()) << p.status().to_string();
    if (!p.ok()) return nullptr;
    const TensorView& logical = p.value()->logical();
    EXPECT_EQ(logical.dtype, DType::kBF16);
    EXPECT_EQ(logical.dim(0), h.q.n);
    EXPECT_EQ(logical.dim(1), h.q.k);
    EXPECT_EQ(logical.data, nullptr) << "an FP8 weight must not keep a bf16 copy";
    // 1 byte per weight plus the scales (and at most 64 bytes of alignment between them).
    EXPECT_GE(p.value()->bytes(), static_cast<size_t>(h.q.nbytes()));
    EXPECT_LE(p.value()->bytes(), static_cast<size_t>(h.q.nbytes()) + 64);
    return std::move(p).value();
}

struct Fp8Case {
    int64_t m, n, k, bn, bk;
    bool bias, accumulate;
};

std::string describe(const Fp8Case& c) {
    return "M=" + std::to_string(c.m) + " N=" + std::to_string(c.n) + " K=" + std::to_string(c.k) + " block [" +
           std::to_string(c.bn) + ", " + std::to_string(c.bk) + "]" + (c.bias ? " bias" : "") +
           (c.accumulate ? " accumulate" : "");
}

// y from gemm on the prepared weight (run twice: must be bitwise the same), against ref::gemm on
// the dequantized weight.
void run_gemm_case(Backend& be, const std::string& backend_name, const Fp8Case& c, bool small, uint32_t seed) {
    SCOPED_TRACE(backend_name + " " + describe(c) + (small ? " small" : " random") + " seed=" + std::to_string(seed));
    std::mt19937 gen(seed);
    HostFp8 h(c.n, c.k, c.bn, c.bk);
    fill(h, gen, small);
    Rng rng(seed + 1);
    auto x = small ? rng.small_ints(static_cast<size_t>(c.m * c.k), -3, 3)
                   : rng.uniform(static_cast<size_t>(c.m * c.k), -1, 1);
    // The reference sees x rounded to bf16 as the bf16 kernels do (exact for small integers).
    std::vector<float> x_ref = x;
    for (auto& v : x_ref) v = bf16_to_f32(f32_to_bf16(v));
    auto bias = small ? rng.small_ints(static_cast<size_t>(c.n), -5, 5) : rng.uniform(static_cast<size_t>(c.n), -1, 1);
    auto y0 = small ? rng.small_ints(static_cast<size_t>(c.m * c.n), -9, 9)
                    : rng.uniform(static_cast<size_t>(c.m * c.n), -1, 1);
    std::vector<float> w = h.dequantized(), y_ref = y0;
    GemmArgs r;
    r.x = host_view(x_ref.data(), DType::kF32, {c.m, c.k});
    r.w = host_view(w.data(), DType::kF32, {c.n, c.k});
    if (c.bias) r.bias = host_view(bias.data(), DType::kF32, {c.n});
    r.y = host_view(y_ref.data(), DType::kF32, {c.m, c.n});
    r.accumulate = c.accumulate;
    MOE_ASSERT_OK(ref::gemm(r));

    auto weight = prepare(be, h);
    ASSERT_NE(weight, nullptr);
    std::vector<float> runs[2];
    for (auto& out : runs) {
        DeviceArena arena(be);
        GemmArgs a;
        a.x = arena.put(x, DType::kF32, {c.m, c.k});
        a.w = WeightView(*weight);
        if (c.bias) a.bias = arena.put(bias, DType::kF32, {c.n});
        a.y = arena.put(y0, DType::kF32, {c.m, c.n});
        a.accumulate = c.accumulate;
        MOE_ASSERT_OK(ops::run(be, a));
        out = arena.get<float>(a.y);
    }
    if (small) {
        expect_exact(runs[0], y_ref, "y");
    } else {
        // Only x's rounding to bf16 separates kernel and reference (handed to both), so what is
        // left is f32 summation order: relative ~1e-6 of the sum of |terms| (<= K * 448 * scale).
        expect_close(runs[0], y_ref, 2e-5 * static_cast<double>(c.k), 1e-4, "y");
    }
    expect_bitwise_equal(runs[0], runs[1], "y");
}

MOE_BACKEND_TEST_SUITE(OpsFp8);

const Fp8Case kCases[] = {
    // Published blocks, partial at the right and bottom edges; decode and prefill row counts
    // (the CPU's direct kernel up to 8 rows, bf16 panels above, 64-row blocks past 64).
    {1, 200, 300, 128, 128, false, false},
    {3, 130, 257, 128, 128, true, false},
    {8, 19, 160, 128, 128, false, true},
    {9, 200, 300, 128, 128, true, true},
    {70, 37, 290, 128, 128, false, false},
    // Other blocks read from the config: narrower, rectangular, a block row per weight row.
    {2, 100, 200, 64, 32, false, false},
    {20, 50, 224, 16, 96, true, false},
    {5, 23, 96, 1, 64, false, false},
    {12, 23, 96, 3, 64, false, true},
    // block_k not a multiple of 32: the CPU's scalar kernel.
    {4, 21, 100, 8, 48, true, false},
    {17, 21, 100, 8, 48, false, false},
};

TEST_P(OpsFp8, GemmSmallIntegersAreExact) {
    uint32_t seed = 2000;
    for (const Fp8Case& c : kCases) run_gemm_case(be(), backend_name(), c, true, ++seed);
}

TEST_P(OpsFp8, GemmRandomWithinTolerance) {
    uint32_t seed = 2100;
    for (const Fp8Case& c : kCases) run_gemm_case(be(), backend_name(), c, false, ++seed);
}

// A row's result does not depend on how many rows the product has (the direct kernel at decode,
// panels at prefill): each output is summed in the same order. CPU only (the CUDA kernel makes
// no such promise).
TEST_P(OpsFp8, GemmRowsAreBatchInvariantOnCpu) {
    if (backend_name().rfind("cpu", 0) != 0) GTEST_SKIP() << "batch invariance is the CPU kernels' promise";
    std::mt19937 gen(77);
    const int64_t n = 150, k = 300, rows = 30;
    HostFp8 h(n, k, 128, 128);
    fill(h, gen, false);
    auto weight = prepare(be(), h);
    ASSERT_NE(weight, nullptr);
    Rng rng(78);
    auto x = rng.uniform(static_cast<size_t>(rows * k), -1, 1);
    auto product = [&](int64_t r0, int64_t m) {
        std::vector<float> xs(x.begin() + r0 * k, x.begin() + (r0 + m) * k), y(static_cast<size_t>(m * n));
        GemmArgs a;
        a.x = host_view(xs.data(), DType::kF32, {m, k});
        a.w = WeightView(*weight);
        a.y = host_view(y.data(), DType::kF32, {m, n});
        EXPECT_TRUE(ops::run(be(), a).ok());
        return y;
    };
    const std::vector<float> all = product(0, rows);
    for (int64_t r0 : {0, 7, 29}) {
        for (int64_t m : {int64_t{1}, int64_t{3}}) {
            if (r0 + m > rows) continue;
            const std::vector<float> part = product(r0, m);
            const std::vector<float> want(all.begin() + r0 * n, all.begin() + (r0 + m) * n);
            expect_bitwise_equal(part, want, "rows " + std::to_string(r0) + ".." + std::to_string(r0 + m - 1));
        }
    }
}

TEST_P(OpsFp8, MoeExpertsMatchReference) {
    uint32_t seed = 2200;
    // The largest shape: an expert above the CPU's 64-row block, partial blocks on both products.
    for (int64_t hidden : {64, 130}) {
        ++seed;
        SCOPED_TRACE(backend_name() + " H=" + std::to_string(hidden) + " seed=" + std::to_string(seed));
        std::mt19937 gen(seed);
        const int64_t inter = hidden == 130 ? 150 : 40, bn = hidden == 130 ? 128 : 32, bk = bn;
        const std::vector<int32_t> offsets =
            hidden == 130 ? std::vector<int32_t>{0, 70, 70, 71, 140} : std::vector<int32_t>{0, 1, 1, 3, 9};
        const int64_t num_experts = 4, rows = offsets.back();
        Rng rng(seed);
        auto x = rng.uniform(static_cast<size_t>(rows * hidden), -1, 1);
        std::vector<std::unique_ptr<HostFp8>> host[3];
        std::vector<std::vector<float>> deq[3];
        std::vector<std::unique_ptr<PreparedWeight>> packs;
        std::vector<WeightView> ref_views[3], views[3];
        for (int m = 0; m < 3; ++m)
            for (int64_t e = 0; e < num_experts; ++e) {
                if (e == 1) {  // no rows, no weights (as on another rank)
                    ref_views[m].emplace_back();
                    views[m].emplace_back();
                    deq[m].emplace_back();
                    host[m].emplace_back();
                    continue;
                }
                const int64_t d0 = m == 2 ? hidden : inter, d1 = m == 2 ? inter : hidden;
                host[m].push_back(std::make_unique<HostFp8>(d0, d1, bn, bk));
                fill(*host[m].back(), gen, false);
                // Scales that keep the MLP's activations near 1.
                for (auto& s : host[m].back()->scales) s *= 0.5f / 448.0f * 4.0f;
                deq[m].push_back(host[m].back()->dequantized());
                ref_views[m].push_back(host_view(deq[m].back().data(), DType::kF32, {d0, d1}));
                packs.push_back(prepare(be(), *host[m].back()));
                ASSERT_NE(packs.back(), nullptr);
                views[m].emplace_back(*packs.back());
            }
        std::vector<float> ref(static_cast<size_t>(rows * hidden));
        // The reference takes x rounded to bf16, as the kernels do; the SwiGLU output the CPU
        // rounds to bf16 too, which the tolerance covers.
        std::vector<float> x_ref = x;
        for (auto& v : x_ref) v = bf16_to_f32(f32_to_bf16(v));
        MOE_ASSERT_OK(ref::moe_experts({host_view(x_ref.data(), DType::kF32, {rows, hidden}),
                                        host_view(const_cast<int32_t*>(offsets.data()), DType::kI32, {num_experts + 1}),
                                        ref_views[0], ref_views[1], ref_views[2],
                                        host_view(ref.data(), DType::kF32, {rows, hidden})}));
        std::vector<float> runs[2];
        for (auto& out : runs) {
            DeviceArena arena(be());
            MoeExpertsArgs a{arena.put(x, DType::kF32, {rows, hidden}),
                             arena.put(offsets, DType::kI32, {num_experts + 1}),
                             views[0],
                             views[1],
                             views[2],
                             arena.alloc(DType::kF32, {rows, hidden})};
            MOE_ASSERT_OK(ops::run(be(), a));
            out = arena.get<float>(a.out_permuted);
        }
        double sq = 0;
        for (float v : ref) sq += static_cast<double>(v) * v;
        const double rms = std::sqrt(sq / static_cast<double>(ref.size()));
        ASSERT_GT(rms, 1e-2) << "test bug: outputs near zero compare nothing";
        // The hidden activations are rounded to bf16 (relative 2^-9) before the down product.
        expect_close(runs[0], ref, 1e-2 * rms, 1e-2, "out_permuted");
        expect_bitwise_equal(runs[0], runs[1], "out_permuted");
    }
}

TEST_P(OpsFp8, MalformedTensorIsRefusedNamingTheField) {
    HostFp8 h(10, 20, 4, 8);
    h.q.scales = TensorView::make(h.scales.data(), DType::kF32, {2, 3});  // should be [3, 3]
    auto p = be().prepare_quantized_weight("layers.0.mlp.down_proj", h.q, WeightUse::kMatmul);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find("layers.0.mlp.down_proj"), std::string::npos) << p.status().to_string();
    EXPECT_NE(p.status().message().find("weight_scale_inv"), std::string::npos) << p.status().to_string();
}

// The scalar kernel that CPUs without AVX512-BF16 run (GemmEngine::run sends FP8 there; this CPU
// may have AVX512-BF16, so it is called directly): f32 x, not rounded; exact on small integers.
TEST(Fp8Scalar, F32KernelIsExactOnSmallIntegers) {
    auto be = make_cpu_backend({.num_threads = 2});
    uint32_t seed = 2300;
    for (const Fp8Case& c : kCases) {
        SCOPED_TRACE(describe(c) + " seed=" + std::to_string(++seed));
        std::mt19937 gen(seed);
        HostFp8 h(c.n, c.k, c.bn, c.bk);
        fill(h, gen, true);
        auto weight = prepare(*be, h);
        ASSERT_NE(weight, nullptr);
        Rng rng(seed + 1);
        auto x = rng.small_ints(static_cast<size_t>(c.m * c.k), -3, 3);
        auto bias = rng.small_ints(static_cast<size_t>(c.n), -5, 5);
        auto y = rng.small_ints(static_cast<size_t>(c.m * c.n), -9, 9);
        std::vector<float> w = h.dequantized(), y_ref = y;
        GemmArgs r;
        r.x = host_view(x.data(), DType::kF32, {c.m, c.k});
        r.w = host_view(w.data(), DType::kF32, {c.n, c.k});
        if (c.bias) r.bias = host_view(bias.data(), DType::kF32, {c.n});
        r.y = host_view(y_ref.data(), DType::kF32, {c.m, c.n});
        r.accumulate = c.accumulate;
        MOE_ASSERT_OK(ref::gemm(r));
        cpu::GemmProblem p;
        p.m = c.m;
        p.n = c.n;
        p.k = c.k;
        p.x = x.data();
        p.ldx = c.k;
        p.w = cpu::cpu_matrix(WeightView(*weight));
        ASSERT_EQ(p.w.layout, cpu::CpuLayout::kFp8Block);
        p.bias = c.bias ? bias.data() : nullptr;
        p.y = y.data();
        p.ldy = c.n;
        p.accumulate = c.accumulate;
        MOE_ASSERT_OK(cpu::fp8_gemm_f32(p, &cpu::as_cpu(*be).pool()));
        expect_exact(y, y_ref, "y");
    }
}

// The kernels' e4m3 -> bf16 conversion, every code, against the reference decoder; tails of
// every length (masked loads).
TEST(Fp8Convert, AllCodesMatchTheReferenceDecoder) {
    for (int v = 0; v < 256; ++v) {
        const float ref = fp8_e4m3_to_f32(static_cast<uint8_t>(v));
        const uint16_t bits = cpu::fp8_e4m3_to_bf16_bits(static_cast<uint8_t>(v));
        const float got = bf16_to_f32(bits);
        if (std::isnan(ref)) {
            EXPECT_TRUE(std::isnan(got)) << "code " << v;
        } else {
            EXPECT_EQ(got, ref) << "code " << v;
            EXPECT_EQ(std::signbit(got), std::signbit(ref)) << "code " << v;
        }
    }
    if (!cpu::cpu_features().avx512f) GTEST_SKIP() << "no AVX-512 here: the vector conversion is not used";
    std::vector<uint8_t> codes(256 + 31);
    for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>(i * 37 % 256);
    for (int v = 0; v < 256; ++v) codes[static_cast<size_t>(v)] = static_cast<uint8_t>(v);
    for (int64_t n : {int64_t{256}, int64_t{287}, int64_t{1}, int64_t{31}, int64_t{33}}) {
        std::vector<uint16_t> out(static_cast<size_t>(n) + 8, 0xabcd);
        cpu::fp8_e4m3_to_bf16_avx512(codes.data(), n, out.data());
        for (int64_t i = 0; i < n; ++i)
            ASSERT_EQ(out[static_cast<size_t>(i)], cpu::fp8_e4m3_to_bf16_bits(codes[static_cast<size_t>(i)]))
                << "n=" << n << " element " << i << " code " << int{codes[static_cast<size_t>(i)]};
        for (size_t i = static_cast<size_t>(n); i < out.size(); ++i) ASSERT_EQ(out[i], 0xabcd) << "wrote past n=" << n;
    }
}

}  // namespace
}  // namespace moe::testing
