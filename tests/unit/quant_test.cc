// The block-scaled formats' scalar decoders, encoder and reference dequantization (moe/quant.h).
#include "moe/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace moe {
namespace {

TEST(Quant, E4M3KnownCodes) {
    EXPECT_EQ(fp8_e4m3_to_f32(0x00), 0.0f);
    EXPECT_EQ(fp8_e4m3_to_f32(0x38), 1.0f);     // exponent 7 = bias
    EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.0f);   // largest finite
    EXPECT_EQ(fp8_e4m3_to_f32(0x01), 0x1p-9f);  // smallest subnormal
    EXPECT_EQ(fp8_e4m3_to_f32(0x08), 0x1p-6f);  // smallest normal
    EXPECT_EQ(fp8_e4m3_to_f32(0xb8), -1.0f);
    EXPECT_EQ(fp8_e4m3_to_f32(0x3c), 1.5f);
    EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0x7f)));
    EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0xff)));
}

TEST(Quant, E4M3EncoderRoundTripsEveryFiniteCodeAndRoundsToNearest) {
    for (int c = 0; c < 256; ++c) {
        if ((c & 0x7f) == 0x7f) continue;
        if (c == 0x80) continue;  // -0 encodes as 0x80 too, checked below
        EXPECT_EQ(f32_to_fp8_e4m3(fp8_e4m3_to_f32(static_cast<uint8_t>(c))), c) << c;
    }
    EXPECT_EQ(f32_to_fp8_e4m3(-0.0f), 0x80);
    EXPECT_EQ(f32_to_fp8_e4m3(1000.0f), 0x7e);  // saturates
    EXPECT_EQ(f32_to_fp8_e4m3(-1000.0f), 0xfe);
    EXPECT_EQ(f32_to_fp8_e4m3(1.0625f), 0x38);  // halfway 1 and 1.125: to the even code (1.0)
    EXPECT_EQ(f32_to_fp8_e4m3(1.0626f), 0x39);
}

TEST(Quant, E2M1AndE8M0) {
    const float want[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    for (int i = 0; i < 8; ++i) {
        EXPECT_EQ(fp4_e2m1_to_f32(static_cast<uint8_t>(i)), want[i]);
        EXPECT_EQ(fp4_e2m1_to_f32(static_cast<uint8_t>(i | 8)), -want[i]);
    }
    EXPECT_EQ(e8m0_to_f32(127), 1.0f);
    EXPECT_EQ(e8m0_to_f32(130), 8.0f);
    EXPECT_EQ(e8m0_to_f32(0), 0x1p-127f);
    EXPECT_TRUE(std::isnan(e8m0_to_f32(0xff)));
}

TensorView view(void* data, DType dtype, std::initializer_list<int64_t> shape) {
    TensorView t;
    t.data = data;
    t.dtype = dtype;
    t.ndim = static_cast<int>(shape.size());
    int d = 0;
    for (int64_t s : shape) t.shape[static_cast<size_t>(d++)] = s;
    int64_t stride = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
        t.strides[static_cast<size_t>(i)] = stride;
        stride *= t.shape[static_cast<size_t>(i)];
    }
    return t;
}

TEST(Quant, Fp8BlockDequantizationUsesTheBlockScale) {
    // [3, 5] in blocks of [2, 4]: scales [2, 2].
    std::vector<uint8_t> v(15, 0x38);  // all 1.0
    std::vector<float> s = {2.0f, 3.0f, 5.0f, 7.0f};
    QuantizedTensor q;
    q.format = QuantFormat::kFp8E4M3Block;
    q.n = 3;
    q.k = 5;
    q.block_n = 2;
    q.block_k = 4;
    q.values = view(v.data(), DType::kF8E4M3, {3, 5});
    q.scales = view(s.data(), DType::kF32, {2, 2});
    ASSERT_TRUE(validate_quantized(q, "w").ok());
    std::vector<float> out(15);
    dequantize_to_f32(q, 0, 3, out.data());
    const float want[15] = {2, 2, 2, 2, 3, 2, 2, 2, 2, 3, 5, 5, 5, 5, 7};
    for (int i = 0; i < 15; ++i) EXPECT_EQ(out[static_cast<size_t>(i)], want[i]) << i;
    std::vector<float> row2(5);
    dequantize_to_f32(q, 2, 3, row2.data());
    EXPECT_EQ(row2[4], 7.0f);

    q.scales = view(s.data(), DType::kF32, {1, 4});
    const Status st = validate_quantized(q, "w");
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("weight_scale_inv"), std::string::npos) << st.message();
}

TEST(Quant, Mxfp4DequantizationOrderAndScale) {
    // One row of 32: byte j holds elements 2j (low nibble) and 2j+1 (high nibble).
    std::vector<uint8_t> blocks(16);
    for (int j = 0; j < 16; ++j) blocks[static_cast<size_t>(j)] = static_cast<uint8_t>((j % 8) | ((15 - j % 16) << 4));
    std::vector<uint8_t> scales = {128};  // x2
    QuantizedTensor q;
    q.format = QuantFormat::kMxfp4;
    q.n = 1;
    q.k = 32;
    q.block_n = 1;
    q.block_k = 32;
    q.values = view(blocks.data(), DType::kU8, {1, 1, 16});
    q.scales = view(scales.data(), DType::kU8, {1, 1});
    ASSERT_TRUE(validate_quantized(q, "w").ok());
    std::vector<float> out(32);
    dequantize_to_f32(q, 0, 1, out.data());
    for (int j = 0; j < 16; ++j) {
        EXPECT_EQ(out[static_cast<size_t>(2 * j)], 2.0f * fp4_e2m1_to_f32(static_cast<uint8_t>(j % 8)));
        EXPECT_EQ(out[static_cast<size_t>(2 * j + 1)], 2.0f * fp4_e2m1_to_f32(static_cast<uint8_t>(15 - j)));
    }
    q.k = 40;
    EXPECT_FALSE(validate_quantized(q, "w").ok());
}

}  // namespace
}  // namespace moe
