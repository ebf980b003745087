#include "moe/dtype.h"

#include <cmath>

#include "moe/check.h"

namespace moe {

size_t dtype_size(DType dtype) {
    switch (dtype) {
        case DType::kF32:
            return 4;
        case DType::kBF16:
            return 2;
        case DType::kF16:
            return 2;
        case DType::kI32:
            return 4;
        case DType::kI64:
            return 8;
        case DType::kU8:
            return 1;
        case DType::kF8E4M3:
            return 1;
    }
    return 0;
}

const char* dtype_name(DType dtype) {
    switch (dtype) {
        case DType::kF32:
            return "f32";
        case DType::kBF16:
            return "bf16";
        case DType::kF16:
            return "f16";
        case DType::kI32:
            return "i32";
        case DType::kI64:
            return "i64";
        case DType::kU8:
            return "u8";
        case DType::kF8E4M3:
            return "f8_e4m3";
    }
    return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
    if (name == "f32" || name == "F32" || name == "float32") return DType::kF32;
    if (name == "bf16" || name == "BF16" || name == "bfloat16") return DType::kBF16;
    if (name == "f16" || name == "F16" || name == "float16") return DType::kF16;
    if (name == "i32" || name == "I32") return DType::kI32;
    if (name == "i64" || name == "I64") return DType::kI64;
    if (name == "u8" || name == "U8") return DType::kU8;
    if (name == "f8_e4m3" || name == "F8_E4M3" || name == "float8_e4m3fn") return DType::kF8E4M3;
    return std::nullopt;
}

float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t mant = h & 0x3ffu;
    float magnitude;
    if (exp == 0) {
        magnitude = std::ldexp(static_cast<float>(mant), -24);  // subnormal or zero
    } else if (exp == 31) {
        magnitude = mant ? NAN : INFINITY;
    } else {
        magnitude = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
    }
    uint32_t bits;
    std::memcpy(&bits, &magnitude, 4);
    bits |= sign;
    float out;
    std::memcpy(&out, &bits, 4);
    return out;
}

uint16_t f32_to_f16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    const float a = std::fabs(f);
    if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7e00u);
    if (a >= 65520.0f) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
    if (a < std::ldexp(1.0f, -24) * 0.5f) return sign;
    int e;
    std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
    int exp16 = e - 1 + 15;
    if (exp16 <= 0) {  // subnormal: units of 2^-24
        const float q = std::nearbyint(std::ldexp(a, 24));
        return static_cast<uint16_t>(sign | static_cast<uint16_t>(q));
    }
    // normal: 10 mantissa bits, round to nearest even (nearbyint uses the current mode: nearest)
    float q = std::nearbyint(std::ldexp(a, 10 - (e - 1)));  // in [1024, 2048]
    uint32_t mant = static_cast<uint32_t>(q);
    if (mant == 2048) {
        mant = 1024;
        ++exp16;
        if (exp16 >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
    }
    return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp16) << 10) | (mant & 0x3ffu));
}

void convert_to_f32(const void* src, DType src_type, float* dst, size_t n) {
    switch (src_type) {
        case DType::kF32:
            std::memcpy(dst, src, n * 4);
            return;
        case DType::kBF16: {
            const auto* s = static_cast<const uint16_t*>(src);
            for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
            return;
        }
        case DType::kF16: {
            const auto* s = static_cast<const uint16_t*>(src);
            for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
            return;
        }
        default:
            MOE_CHECK(false && "convert_to_f32: not a float dtype");
    }
}

void convert_from_f32(const float* src, void* dst, DType dst_type, size_t n) {
    switch (dst_type) {
        case DType::kF32:
            std::memcpy(dst, src, n * 4);
            return;
        case DType::kBF16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
            return;
        }
        case DType::kF16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
            return;
        }
        default:
            MOE_CHECK(false && "convert_from_f32: not a float dtype");
    }
}

}  // namespace moe
