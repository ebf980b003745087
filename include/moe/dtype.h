// Element types and host conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace moe {

enum class DType : uint8_t {
    kF32 = 0,
    kBF16,
    kF16,
    kI32,
    kI64,
    kU8,
    // float8_e4m3fn (1 sign, 4 exponent bits with bias 7, 3 mantissa bits; no infinities, 0x7f/0xff
    // NaN): the values of block-scaled FP8 checkpoints (include/moe/quant.h). Not a compute dtype.
    kF8E4M3,
};

// Bytes per element.
size_t dtype_size(DType dtype);
// "f32", "bf16", ...
const char* dtype_name(DType dtype);
// Parses our names ("f32", "bf16", "f16") and safetensors names ("F32", "BF16", "F16", "I32",
// "I64", "U8", "F8_E4M3"). Returns nullopt for anything else.
std::optional<DType> parse_dtype(std::string_view name);

// bf16 <-> f32. Rounds to nearest even; NaN stays NaN.
inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
inline uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0)
        return static_cast<uint16_t>((bits >> 16) | 0x40);
    uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>((bits + rounding) >> 16);
}
// IEEE half <-> f32.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts `n` elements of `src` (dtype `src_type`) to f32 in `dst`.
void convert_to_f32(const void* src, DType src_type, float* dst, size_t n);
// Converts `n` f32 elements to `dst_type` (f32, bf16, f16).
void convert_from_f32(const float* src, void* dst, DType dst_type, size_t n);

}  // namespace moe
