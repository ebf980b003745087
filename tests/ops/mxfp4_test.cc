// MXFP4 weights on the CPU backend (backend/cpu/mxfp4_block.h): every kernel (decode in
// registers, expansion to bf16, the AVX-512F and scalar f32 routes) through the gemm op and
// mxfp4_matmul against the reference gemm on dequantize_to_f32's weights; moe_experts against the
// reference moe_experts; bitwise equality with the bf16 kernels on the same (bf16-exact) weights;
// batch and thread invariance; extreme scales; refusal of non-finite weights; 4.25 bits per
// weight held.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/bf16_tiles.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/mxfp4_block.h"
#include "moe/quant.h"
#include "ops/op_test_util.h"
#include "ops/panels12_test_util.h"

namespace moe::testing {
namespace {

// An MXFP4 matrix [n, k] in host memory, the checkpoint layout.
struct Mx {
    int64_t n = 0, k = 0;
    std::vector<uint8_t> values, scales;

    QuantizedTensor q() {
        QuantizedTensor t;
        t.format = QuantFormat::kMxfp4;
        t.n = n;
        t.k = k;
        t.block_n = 1;
        t.block_k = 32;
        t.values = TensorView::make(values.data(), DType::kU8, {n, k / 32, 16});
        t.scales = TensorView::make(scales.data(), DType::kU8, {n, k / 32});
        return t;
    }
    std::vector<float> dequantized() {
        std::vector<float> out(static_cast<size_t>(n * k));
        dequantize_to_f32(q(), 0, n, out.data());
        return out;
    }
};

// Random codes; scales drawn from `scale_set` (finite weights only: codes above `max_code[s]`
// are replaced where a scale would overflow).
Mx random_mx(Rng& rng, int64_t n, int64_t k, const std::vector<int>& scale_set) {
    Mx m;
    m.n = n;
    m.k = k;
    m.values.resize(static_cast<size_t>(n * k / 2));
    m.scales.resize(static_cast<size_t>(n * k / 32));
    for (auto& s : m.scales)
        s = static_cast<uint8_t>(
            scale_set[static_cast<size_t>(rng.one(0, static_cast<int32_t>(scale_set.size()) - 1))]);
    for (size_t i = 0; i < m.values.size(); ++i) {
        const int s = m.scales[i / 16];
        const int cap = s == 254 ? 3 : s == 253 ? 5 : 7;
        const auto code = [&] { return static_cast<uint8_t>(rng.one(0, cap) | (rng.one(0, 1) << 3)); };
        m.values[i] = static_cast<uint8_t>(code() | code() << 4);
    }
    return m;
}

std::vector<float> round_bf16(const std::vector<float>& v) {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(f32_to_bf16(v[i]));
    return out;
}

// y = x * w^T in double, and the per-element bound on the f32 summation's error: eps * sum
// |x w| (plus the flushed subnormal weights' share where the bf16 products treat them as zero).
void reference(const std::vector<float>& x, const std::vector<float>& w, int64_t m, int64_t n, int64_t k,
               std::vector<float>& y, std::vector<double>& bound, bool bf16_flush) {
    y.assign(static_cast<size_t>(m * n), 0.0f);
    bound.assign(static_cast<size_t>(m * n), 0.0);
    for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < n; ++c) {
            double acc = 0, mag = 0, flushed = 0;
            for (int64_t i = 0; i < k; ++i) {
                const double wv = w[static_cast<size_t>(c * k + i)], xv = x[static_cast<size_t>(r * k + i)];
                acc += xv * wv;
                mag += std::fabs(xv * wv);
                if (bf16_flush && std::fabs(wv) < 0x1p-126) flushed += std::fabs(xv * wv);
            }
            y[static_cast<size_t>(r * n + c)] = static_cast<float>(acc);
            // Products below 2^-126 are flushed too (VDPBF16PS output): k of them at most.
            bound[static_cast<size_t>(r * n + c)] =
                4e-7 * static_cast<double>(k / 32 + 16) * mag / 16 + flushed + (bf16_flush ? k * 0x1p-126 : 0);
        }
}

void expect_within(const std::vector<float>& got, const std::vector<float>& ref, const std::vector<double>& bound,
                   const std::string& what) {
    ASSERT_EQ(got.size(), ref.size()) << what;
    int failures = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
        if (!(err <= bound[i] + 1e-30) && ++failures <= 5)
            ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", reference " << ref[i] << ", bound "
                          << bound[i];
    }
    EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << ref.size() << " out of bounds";
}

const cpu::Mxfp4Kernel kKernels[] = {cpu::Mxfp4Kernel::kDecode, cpu::Mxfp4Kernel::kExpand, cpu::Mxfp4Kernel::kAvx512F,
                                     cpu::Mxfp4Kernel::kScalar};
const char* kernel_name(cpu::Mxfp4Kernel k) {
    switch (k) {
        case cpu::Mxfp4Kernel::kAuto:
            return "auto";
        case cpu::Mxfp4Kernel::kDecode:
            return "decode";
        case cpu::Mxfp4Kernel::kExpand:
            return "expand";
        case cpu::Mxfp4Kernel::kAvx512F:
            return "avx512f";
        case cpu::Mxfp4Kernel::kScalar:
            return "scalar";
    }
    return "?";
}
bool bf16_kernel(cpu::Mxfp4Kernel k) {
    return k == cpu::Mxfp4Kernel::kDecode || k == cpu::Mxfp4Kernel::kExpand;
}

std::unique_ptr<PreparedWeight> prepare(Backend& be, Mx& m) {
    auto p = be.prepare_quantized_weight("w", m.q(), WeightUse::kStreamedMatmul);
    EXPECT_TRUE(p.ok()) << p.status().to_string();
    return p.ok() ? std::move(p.value()) : nullptr;
}

// Every kernel, against the reference on the dequantized weights (x rounded to bf16 first for
// the bf16 kernels, as they do): row counts across the decode / expansion threshold and the
// tiles' row blocks, odd n, k from one block up.
TEST(Mxfp4, EveryKernelMatchesTheReference) {
    auto be = make_cpu_backend({.num_threads = 2});
    uint32_t seed = 2400;
    for (int64_t k : {32, 96, 320})
        for (int64_t n : {1, 7, 19, 67})
            for (int64_t m : {1, 2, 3, 4, 5, 8, 13, 65}) {
                ++seed;
                Rng rng(seed);
                Mx w = random_mx(rng, n, k, {118, 120, 123, 127, 130});
                auto handle = prepare(*be, w);
                ASSERT_NE(handle, nullptr);
                const std::vector<float> wf = w.dequantized();
                const std::vector<float> x = rng.uniform(static_cast<size_t>(m * k), -2, 2);
                for (cpu::Mxfp4Kernel kernel : kKernels) {
                    if (!cpu::mxfp4_kernel_available(kernel)) continue;
                    SCOPED_TRACE(std::string(kernel_name(kernel)) + " m=" + std::to_string(m) + " n=" +
                                 std::to_string(n) + " k=" + std::to_string(k) + " seed=" + std::to_string(seed));
                    std::vector<float> ref;
                    std::vector<double> bound;
                    reference(bf16_kernel(kernel) ? round_bf16(x) : x, wf, m, n, k, ref, bound, bf16_kernel(kernel));
                    std::vector<float> y(static_cast<size_t>(m * n), NAN);
                    cpu::GemmProblem p{.m = m,
                                       .n = n,
                                       .k = k,
                                       .x = x.data(),
                                       .ldx = k,
                                       .w = cpu::cpu_matrix(WeightView(*handle)),
                                       .y = y.data(),
                                       .ldy = n};
                    MOE_ASSERT_OK(cpu::mxfp4_matmul(p, &cpu::as_cpu(*be).pool(), kernel));
                    expect_within(y, ref, bound, "y");
                }
            }
}

// The gemm op (GemmEngine -> bf16_matmul -> bf16_block -> mxfp4_block on AVX512-BF16) gives
// bitwise what the bf16 checkpoint-layout tiles give on the same weights as bf16 (exact for
// these scales): the same products summed in the same order. Row r's output does not depend on
// how many rows the batch has (batch invariance across the decode / expansion threshold), nor on
// the threads; bias and accumulate as the op says.
TEST(Mxfp4, GemmOpIsBitwiseTheBf16TilesAndBatchInvariant) {
    if (!cpu::bf16_tiles_available()) GTEST_SKIP() << "no AVX512-BF16 on this CPU: the bf16 route does not run";
    const int64_t n = 131, k = 2880 / 9;  // 320
    Rng rng(91);
    Mx w = random_mx(rng, n, k, {110, 119, 127, 133, 140});
    const std::vector<float> wf = w.dequantized();
    const std::vector<uint16_t> wb = to_bf16(wf);
    for (size_t i = 0; i < wf.size(); ++i) ASSERT_EQ(bf16_to_f32(wb[i]), wf[i]) << "MXFP4 values are bf16-exact";
    const int64_t max_m = 70;
    const std::vector<float> x = rng.uniform(static_cast<size_t>(max_m * k), -1, 1);
    const std::vector<float> bias = rng.uniform(static_cast<size_t>(n), -1, 1);
    auto run = [&](Backend& be, const WeightView& wv, int64_t m, bool accumulate) {
        DeviceArena arena(be);
        std::vector<float> y0 = rng.uniform(static_cast<size_t>(m * n), -1, 1);
        GemmArgs a{arena.put(std::vector<float>(x.begin(), x.begin() + m * k), DType::kF32, {m, k}), wv,
                   arena.put(bias, DType::kF32, {n}), arena.put(y0, DType::kF32, {m, n}), accumulate};
        EXPECT_TRUE(ops::run(be, a).ok());
        std::vector<float> y = arena.get<float>(a.y);
        if (accumulate)
            for (size_t i = 0; i < y.size(); ++i) y[i] -= y0[i];
        return y;
    };
    auto mx_be = make_cpu_backend({.num_threads = 2});
    auto mx_be3 = make_cpu_backend({.num_threads = 3});
    auto bf_be = make_cpu_backend({.num_threads = 2, .pack_weights = false, .matmul = CpuMatmul::kOwn});
    auto handle = prepare(*mx_be, w);
    auto handle3 = prepare(*mx_be3, w);
    ASSERT_NE(handle, nullptr);
    const WeightView plain(host_view(const_cast<uint16_t*>(wb.data()), DType::kBF16, {n, k}));
    const std::vector<float> full = run(*mx_be, WeightView(*handle), max_m, false);
    expect_bitwise_equal(full, run(*bf_be, plain, max_m, false), "mxfp4 against bf16 tiles, 70 rows");
    expect_bitwise_equal(full, run(*mx_be3, WeightView(*handle3), max_m, false), "3 threads against 2");
    for (int64_t m : {1, 2, 4, 5, 9, 64}) {
        SCOPED_TRACE("m=" + std::to_string(m));
        const std::vector<float> part = run(*mx_be, WeightView(*handle), m, false);
        expect_bitwise_equal(part, std::vector<float>(full.begin(), full.begin() + m * n), "rows of a larger batch");
        expect_bitwise_equal(part, run(*bf_be, plain, m, false), "mxfp4 against bf16 tiles");
        const std::vector<float> acc = run(*mx_be, WeightView(*handle), m, true);
        expect_close(acc, part, 1e-5, 1e-5, "accumulate");
    }
}

// Scales at both ends: 0 and 1 (values below bf16's normal range, flushed by the bf16 products,
// kept by the f32 routes), 2 (the smallest exact in bf16), 252-254 with the codes that stay
// finite, all in one matrix; x small so the large blocks' sums stay finite.
TEST(Mxfp4, ExtremeScales) {
    auto be = make_cpu_backend({.num_threads = 2});
    Rng rng(5);
    const int64_t n = 21, k = 256;
    Mx w = random_mx(rng, n, k, {0, 1, 2, 3, 126, 252, 253, 254});
    auto handle = prepare(*be, w);
    ASSERT_NE(handle, nullptr);
    const std::vector<float> wf = w.dequantized();
    for (float v : wf) ASSERT_TRUE(std::isfinite(v));
    for (int64_t m : {1, 3, 6}) {
        const std::vector<float> x = rng.uniform(static_cast<size_t>(m * k), -1e-3f, 1e-3f);
        for (cpu::Mxfp4Kernel kernel : kKernels) {
            if (!cpu::mxfp4_kernel_available(kernel)) continue;
            SCOPED_TRACE(std::string(kernel_name(kernel)) + " m=" + std::to_string(m));
            std::vector<float> ref;
            std::vector<double> bound;
            reference(bf16_kernel(kernel) ? round_bf16(x) : x, wf, m, n, k, ref, bound, bf16_kernel(kernel));
            std::vector<float> y(static_cast<size_t>(m * n), NAN);
            cpu::GemmProblem p{.m = m,
                               .n = n,
                               .k = k,
                               .x = x.data(),
                               .ldx = k,
                               .w = cpu::cpu_matrix(WeightView(*handle)),
                               .y = y.data(),
                               .ldy = n};
            MOE_ASSERT_OK(cpu::mxfp4_matmul(p, &cpu::as_cpu(*be).pool(), kernel));
            expect_within(y, ref, bound, "y");
        }
    }
}

// A weight that is not finite in f32 is refused at load, naming the row, block and scale; the
// largest finite codes at scales 253 and 254 are accepted. Shapes are checked first
// (validate_quantized).
TEST(Mxfp4, NonFiniteWeightsAndBadShapesAreRefused) {
    auto be = make_cpu_backend({.num_threads = 1});
    Rng rng(6);
    auto with = [&](uint8_t scale, uint8_t byte) {
        Mx m = random_mx(rng, 3, 64, {127});
        m.scales[4] = scale;  // row 2, block 0: zeros but for one byte
        std::fill(m.values.begin() + 4 * 16, m.values.begin() + 5 * 16, uint8_t{0});
        m.values[4 * 16 + 7] = byte;
        return m;
    };
    const struct {
        uint8_t scale, byte;
        bool ok;
    } cases[] = {{255, 0x00, false}, {254, 0x03, true},  {254, 0xb3, true},  {254, 0x04, false}, {254, 0xc0, false},
                 {253, 0x55, true},  {253, 0x06, false}, {253, 0x6d, false}, {252, 0x77, true},  {0, 0xff, true}};
    for (const auto& c : cases) {
        SCOPED_TRACE("scale " + std::to_string(c.scale) + " byte " + std::to_string(c.byte));
        Mx m = with(c.scale, c.byte);
        auto p = be->prepare_quantized_weight("layers.0.experts.down", m.q(), WeightUse::kStreamedMatmul);
        EXPECT_EQ(p.ok(), c.ok) << (p.ok() ? "accepted" : p.status().to_string());
        if (!p.ok()) {
            EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
            EXPECT_NE(p.status().message().find("layers.0.experts.down"), std::string::npos);
            EXPECT_NE(p.status().message().find("row 2 block 0"), std::string::npos) << p.status().message();
        }
    }
    Mx m = random_mx(rng, 3, 64, {127});
    QuantizedTensor q = m.q();
    q.scales = TensorView::make(m.scales.data(), DType::kU8, {3, 1});
    auto p = be->prepare_quantized_weight("w", q, WeightUse::kStreamedMatmul);
    ASSERT_FALSE(p.ok());
    EXPECT_NE(p.status().message().find("scales"), std::string::npos) << p.status().message();
    q = m.q();
    q.k = 48;
    p = be->prepare_quantized_weight("w", q, WeightUse::kStreamedMatmul);
    ASSERT_FALSE(p.ok());
    EXPECT_NE(p.status().message().find("multiple of 32"), std::string::npos) << p.status().message();
}

// The backend holds the checkpoint's bytes and nothing else: 4.25 bits per weight.
TEST(Mxfp4, HoldsFourAndAQuarterBitsPerWeight) {
    auto be = make_cpu_backend({.num_threads = 1});
    Rng rng(8);
    const int64_t n = 2880, k = 2880;
    Mx m = random_mx(rng, n, k, {127});
    auto h = prepare(*be, m);
    ASSERT_NE(h, nullptr);
    EXPECT_EQ(h->bytes(), static_cast<size_t>(n * k / 2 + n * k / 32));
    EXPECT_DOUBLE_EQ(8.0 * static_cast<double>(h->bytes()) / static_cast<double>(n * k), 4.25);
    EXPECT_EQ(h->logical().dtype, DType::kBF16);
    EXPECT_EQ(h->logical().data, nullptr);
    EXPECT_EQ(cpu_layout(*h), cpu::CpuLayout::kMxfp4);
    EXPECT_NE(be->weight_summary().find("1 in MXFP4"), std::string::npos) << be->weight_summary();
}

// moe_experts with MXFP4 experts against the reference moe_experts on the dequantized weights
// (decode: one row per expert; prefill: experts above the 64-row block), on the backend's route
// (AVX512-BF16 when present) and on the f32 route (bf16_tiles_max_rows 0 sends the experts to
// GemmEngine, whose MXFP4 products then still take mxfp4_matmul: the bf16 route when present).
// On AVX512-BF16 the result is bitwise that of the same weights as bf16 in the checkpoint layout.
TEST(Mxfp4, MoeExpertsMatchTheReference) {
    const int64_t hidden = 96, inter = 160, num_experts = 4;
    for (const auto& offsets : {std::vector<int32_t>{0, 1, 1, 2, 3}, std::vector<int32_t>{0, 70, 70, 75, 140}}) {
        const int64_t rows = offsets.back();
        SCOPED_TRACE("rows=" + std::to_string(rows));
        Rng rng(static_cast<uint32_t>(300 + rows));
        std::vector<Mx> w[3];
        std::vector<std::vector<float>> wf[3];
        for (int m = 0; m < 3; ++m)
            for (int64_t e = 0; e < num_experts; ++e) {
                w[m].push_back(m == 2 ? random_mx(rng, hidden, inter, {120, 122, 124})
                                      : random_mx(rng, inter, hidden, {120, 122, 124}));
                wf[m].push_back(w[m].back().dequantized());
            }
        const std::vector<float> x = rng.uniform(static_cast<size_t>(rows * hidden), -1, 1);
        auto host_views = [&](int m, DType dt, std::vector<std::vector<uint16_t>>* keep) {
            std::vector<WeightView> v;
            for (int64_t e = 0; e < num_experts; ++e) {
                auto& f = wf[m][static_cast<size_t>(e)];
                void* data = f.data();
                if (dt == DType::kBF16) {
                    keep->push_back(to_bf16(f));
                    data = keep->back().data();
                }
                v.push_back(m == 2 ? host_view(data, dt, {hidden, inter}) : host_view(data, dt, {inter, hidden}));
            }
            return v;
        };
        std::vector<std::vector<uint16_t>> keep;
        keep.reserve(3 * num_experts);
        std::vector<float> ref(static_cast<size_t>(rows * hidden));
        MOE_ASSERT_OK(ref::moe_experts({host_view(const_cast<float*>(x.data()), DType::kF32, {rows, hidden}),
                                        host_view(const_cast<int32_t*>(offsets.data()), DType::kI32, {num_experts + 1}),
                                        host_views(0, DType::kF32, nullptr), host_views(1, DType::kF32, nullptr),
                                        host_views(2, DType::kF32, nullptr),
                                        host_view(ref.data(), DType::kF32, {rows, hidden})}));
        double sq = 0;
        for (float v : ref) sq += static_cast<double>(v) * v;
        const double rms = std::sqrt(sq / static_cast<double>(ref.size()));
        auto run = [&](Backend& be, const std::vector<WeightView>(&views)[3]) {
            DeviceArena arena(be);
            MoeExpertsArgs a{arena.put(x, DType::kF32, {rows, hidden}),
                             arena.put(offsets, DType::kI32, {num_experts + 1}),
                             views[0],
                             views[1],
                             views[2],
                             arena.alloc(DType::kF32, {rows, hidden})};
            EXPECT_TRUE(ops::run(be, a).ok());
            return arena.get<float>(a.out_permuted);
        };
        for (bool tiles : {true, false}) {
            SCOPED_TRACE(tiles ? "experts route" : "GemmEngine route");
            auto be = make_cpu_backend({.num_threads = 2});
            if (!tiles) cpu::as_cpu(*be).gemm_engine().set_bf16_tiles_max_rows(0);
            std::vector<std::unique_ptr<PreparedWeight>> handles;
            std::vector<WeightView> views[3];
            for (int m = 0; m < 3; ++m)
                for (Mx& mx : w[m]) {
                    handles.push_back(prepare(*be, mx));
                    ASSERT_NE(handles.back(), nullptr);
                    views[m].emplace_back(*handles.back());
                }
            const std::vector<float> got = run(*be, views);
            // x and the SwiGLU activations are rounded to bf16 before each product (as for bf16
            // weights: moe_test.cc), or x is not (the f32 route without AVX512-BF16).
            expect_close(got, ref, 2e-2 + 1e-2 * rms, 2e-2, "out_permuted");
            expect_bitwise_equal(got, run(*be, views), "second run");
            if (tiles && cpu::bf16_tiles_available()) {
                auto bf_be = make_cpu_backend({.num_threads = 2, .pack_weights = false, .matmul = CpuMatmul::kOwn});
                std::vector<WeightView> bviews[3];
                for (int m = 0; m < 3; ++m) bviews[m] = host_views(m, DType::kBF16, &keep);
                expect_bitwise_equal(got, run(*bf_be, bviews), "mxfp4 experts against bf16 experts");
            }
        }
    }
}

}  // namespace
}  // namespace moe::testing
