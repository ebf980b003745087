// Block-scaled weight formats as checkpoints publish them, loaded as they are (#20, #24):
//
//   FP8 (DeepSeek-V3/R1, Kimi K2; quantization_config quant_method "fp8", fmt "e4m3"):
//     values  float8_e4m3fn [n, k]                                 (DType::kF8E4M3)
//     scales  f32 [ceil(n / block_n), ceil(k / block_k)]           (the `weight_scale_inv` tensor)
//     w[i][j] = e4m3(values[i][j]) * scales[i / block_n][j / block_k]; block from
//     weight_block_size (published checkpoints: [128, 128]).
//   MXFP4 (gpt-oss; OCP microscaling, quantization_config quant_method "mxfp4"):
//     values  u8 [n, k / 32, 16]: 32 e2m1 values per block, two per byte, low nibble first
//     scales  u8 [n, k / 32]: one e8m0 exponent per block (bias 127)
//     w[i][j] = e2m1(nibble j of row i) * 2^(scales[i][j / 32] - 127); block_n = 1, block_k = 32.
//
// The model hands a QuantizedTensor to Backend::prepare_quantized_weight; the backend keeps it in
// a form its kernels decode in registers (1 byte or 4.25 bits per weight in memory, never
// bf16). The PreparedWeight's logical() tensor is [n, k] bf16 with data == nullptr: the op layer
// checks shapes against it, and only the backend that made it can multiply by it. References
// and tests expand with dequantize_to_f32.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "moe/status.h"
#include "moe/tensor.h"

namespace moe {

enum class QuantFormat : uint8_t {
    kFp8E4M3Block,
    kMxfp4,
};

// "fp8_e4m3_block", "mxfp4"
const char* quant_format_name(QuantFormat format);

struct QuantizedTensor {
    QuantFormat format = QuantFormat::kFp8E4M3Block;
    int64_t n = 0, k = 0;  // the logical matrix [n, k], for y = x * w^T
    TensorView values;     // in host memory, contiguous; shapes above
    TensorView scales;
    int64_t block_n = 0, block_k = 0;  // FP8: the checkpoint's; MXFP4: 1 and 32

    // The bytes the format holds (values + scales).
    int64_t nbytes() const { return static_cast<int64_t>(values.nbytes() + scales.nbytes()); }
};

// Checks dtypes, shapes, contiguity, host residence and block sizes against the format's layout
// above; kInvalidArgument naming `name`, the field and what was expected. Every count comes from
// the checkpoint and is checked here before a kernel uses it.
Status validate_quantized(const QuantizedTensor& q, std::string_view name);

// Scalar decoders (the references).
float fp8_e4m3_to_f32(uint8_t v);       // NaN for 0x7f and 0xff
float fp4_e2m1_to_f32(uint8_t nibble);  // low 4 bits: sign, 2 exponent bits, 1 mantissa bit
float e8m0_to_f32(uint8_t e);           // 2^(e - 127); NaN for 0xff

// Nearest-even encoders, for tests and fixture tools (e4m3 saturates to +-448).
uint8_t f32_to_fp8_e4m3(float f);

// MXFP4 only: kOk when every weight of q (validated) is finite in f32; else kInvalidArgument naming
// `name`, the row, the block and the scale (e8m0 0xff is NaN; 2^(s - 127) * |e2m1| >= 2^128 for
// scales 253 and 254 with large codes). Backends refuse such a matrix at load (#24).
Status check_mxfp4_finite(const QuantizedTensor& q, std::string_view name);

// Expands rows [row_begin, row_end) of q into out (f32, (row_end - row_begin) x k, row-major).
// q must have passed validate_quantized.
void dequantize_to_f32(const QuantizedTensor& q, int64_t row_begin, int64_t row_end, float* out);

}  // namespace moe
