// MXFP4 weights on the CUDA backend (src/backend/cuda/cuda_mxfp4.h, kernels/mxfp4): the gemm op
// and moe_experts against the same products on the dequantized weights computed on the host.
// Skips without a device (every machine of this project so far): compiled, not executed.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "moe/quant.h"
#include "ops/ops.h"

namespace moe::gpu_test {
namespace {

struct HostMx {
    int64_t n, k;
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
};

HostMx random_mx(std::mt19937& gen, int64_t n, int64_t k) {
    HostMx m{n, k, std::vector<uint8_t>(static_cast<size_t>(n * k / 2)),
             std::vector<uint8_t>(static_cast<size_t>(n * k / 32))};
    std::uniform_int_distribution<int> byte(0, 255), scale(120, 130);
    for (auto& v : m.values) v = static_cast<uint8_t>(byte(gen));
    for (auto& s : m.scales) s = static_cast<uint8_t>(scale(gen));
    return m;
}

TensorView put(Backend& be, std::vector<DeviceBuffer>& keep, const std::vector<float>& host,
               std::initializer_list<int64_t> shape) {
    auto buf = DeviceBuffer::allocate(be, host.size() * sizeof(float));
    EXPECT_TRUE(buf.ok());
    EXPECT_TRUE(be.copy(buf->data(), be.device(), host.data(), Device{}, host.size() * sizeof(float)).ok());
    keep.push_back(std::move(buf).value());
    return TensorView::make(keep.back().data(), DType::kF32, shape, be.device());
}

std::vector<float> get(Backend& be, const TensorView& v) {
    std::vector<float> out(static_cast<size_t>(v.numel()));
    EXPECT_TRUE(be.copy(out.data(), Device{}, v.data, be.device(), out.size() * sizeof(float)).ok());
    return out;
}

using CudaMxfp4Test = CudaTest;

TEST_F(CudaMxfp4Test, GemmMatchesTheDequantizedProduct) {
    std::mt19937 gen(24);
    const int64_t m = 37, n = 131, k = 320;
    HostMx w = random_mx(gen, n, k);
    MOE_ASSERT_OK_AND_ASSIGN(auto handle, be().prepare_quantized_weight("w", w.q(), WeightUse::kStreamedMatmul));
    EXPECT_EQ(handle->bytes(), static_cast<size_t>(n * k / 2 + n * k / 32));
    std::vector<float> wf(static_cast<size_t>(n * k));
    dequantize_to_f32(w.q(), 0, n, wf.data());
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> x(static_cast<size_t>(m * k));
    for (auto& v : x) v = u(gen);
    std::vector<DeviceBuffer> keep;
    GemmArgs a{put(be(), keep, x, {m, k}), WeightView(*handle), TensorView{},
               put(be(), keep, std::vector<float>(static_cast<size_t>(m * n), 0.0f), {m, n}), false};
    MOE_ASSERT_OK(ops::run(be(), a));
    const std::vector<float> y = get(be(), a.y);
    for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < n; ++c) {
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < k; ++i) {
                ref += static_cast<double>(x[static_cast<size_t>(r * k + i)]) * wf[static_cast<size_t>(c * k + i)];
                mag += std::fabs(static_cast<double>(x[static_cast<size_t>(r * k + i)]) *
                                 wf[static_cast<size_t>(c * k + i)]);
            }
            EXPECT_NEAR(y[static_cast<size_t>(r * n + c)], ref, 1e-5 * mag + 1e-6) << "row " << r << " col " << c;
        }
}

// gpt-oss's experts in MXFP4 on the device (biases, clamped SwiGLU) against the reference op on
// the dequantized weights in host memory.
TEST_F(CudaMxfp4Test, MoeExpertsWithBiasesMatchTheReference) {
    std::mt19937 gen(26);
    const int64_t E = 3, H = 64, I = 96;
    const std::vector<int32_t> offsets = {0, 2, 2, 7};
    const int64_t rows = offsets.back();
    std::vector<HostMx> w[3];
    std::vector<std::vector<float>> wf[3];
    std::vector<std::unique_ptr<PreparedWeight>> handles;
    std::vector<WeightView> dev_w[3], host_w[3];
    for (int m = 0; m < 3; ++m)
        for (int64_t e = 0; e < E; ++e) {
            w[m].push_back(m == 2 ? random_mx(gen, H, I) : random_mx(gen, I, H));
            HostMx& mx = w[m].back();
            wf[m].emplace_back(static_cast<size_t>(mx.n * mx.k));
            dequantize_to_f32(mx.q(), 0, mx.n, wf[m].back().data());
            MOE_ASSERT_OK_AND_ASSIGN(auto h, be().prepare_quantized_weight("w", mx.q(), WeightUse::kStreamedMatmul));
            handles.push_back(std::move(h));
        }
    for (int m = 0; m < 3; ++m)
        for (int64_t e = 0; e < E; ++e) {
            const size_t i = static_cast<size_t>(m * E + e);
            dev_w[m].emplace_back(*handles[i]);
            host_w[m].push_back(TensorView::make(wf[m][static_cast<size_t>(e)].data(), DType::kF32,
                                                 {w[m][static_cast<size_t>(e)].n, w[m][static_cast<size_t>(e)].k}));
        }
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> x(static_cast<size_t>(rows * H));
    for (auto& v : x) v = u(gen);
    std::vector<std::vector<float>> b[3];
    std::vector<TensorView> dev_b[3], host_b[3];
    std::vector<DeviceBuffer> keep;
    for (int m = 0; m < 3; ++m)
        for (int64_t e = 0; e < E; ++e) {
            b[m].emplace_back(static_cast<size_t>(m == 2 ? H : I));
            for (auto& v : b[m].back()) v = 0.1f * u(gen);
        }
    for (int m = 0; m < 3; ++m)
        for (int64_t e = 0; e < E; ++e) {
            auto& bv = b[m][static_cast<size_t>(e)];
            host_b[m].push_back(TensorView::make(bv.data(), DType::kF32, {static_cast<int64_t>(bv.size())}));
            dev_b[m].push_back(put(be(), keep, bv, {static_cast<int64_t>(bv.size())}));
        }
    std::vector<float> ref(static_cast<size_t>(rows * H));
    std::vector<int32_t> off = offsets;
    MoeExpertsArgs h{TensorView::make(x.data(), DType::kF32, {rows, H}),
                     TensorView::make(off.data(), DType::kI32, {E + 1}),
                     host_w[0],
                     host_w[1],
                     host_w[2],
                     TensorView::make(ref.data(), DType::kF32, {rows, H}),
                     host_b[0],
                     host_b[1],
                     host_b[2],
                     ExpertActivation::kClampedSwiGLU};
    MOE_ASSERT_OK(ref::moe_experts(h));
    auto off_buf = DeviceBuffer::allocate(be(), off.size() * sizeof(int32_t));
    ASSERT_TRUE(off_buf.ok());
    MOE_ASSERT_OK(be().copy(off_buf->data(), be().device(), off.data(), Device{}, off.size() * sizeof(int32_t)));
    MoeExpertsArgs d = h;
    d.x_permuted = put(be(), keep, x, {rows, H});
    d.expert_offsets = TensorView::make(off_buf->data(), DType::kI32, {E + 1}, be().device());
    d.w_gate = dev_w[0];
    d.w_up = dev_w[1];
    d.w_down = dev_w[2];
    d.out_permuted = put(be(), keep, std::vector<float>(static_cast<size_t>(rows * H), 0.0f), {rows, H});
    d.b_gate = dev_b[0];
    d.b_up = dev_b[1];
    d.b_down = dev_b[2];
    MOE_ASSERT_OK(ops::run(be(), d));
    const std::vector<float> got = get(be(), d.out_permuted);
    double scale = 0;
    for (float v : ref) scale = std::max(scale, std::fabs(static_cast<double>(v)));
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(got[i], ref[i], 1e-4 * scale + 1e-5) << "element " << i;
}

TEST_F(CudaMxfp4Test, NonFiniteWeightsAreRefused) {
    std::mt19937 gen(25);
    HostMx w = random_mx(gen, 4, 64);
    w.scales[3] = 255;
    auto p = be().prepare_quantized_weight("w", w.q(), WeightUse::kStreamedMatmul);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << p.status().to_string();
}

}  // namespace
}  // namespace moe::gpu_test
