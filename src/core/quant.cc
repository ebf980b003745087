#include "moe/quant.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace moe {

const char* quant_format_name(QuantFormat format) {
    switch (format) {
        case QuantFormat::kFp8E4M3Block:
            return "fp8_e4m3_block";
        case QuantFormat::kMxfp4:
            return "mxfp4";
    }
    return "?";
}

namespace {

std::string dims(const TensorView& t) {
    std::string s = "[";
    for (int d = 0; d < t.ndim; ++d) s += (d ? ", " : "") + std::to_string(t.shape[static_cast<size_t>(d)]);
    return s + "]";
}

bool has_shape(const TensorView& t, std::initializer_list<int64_t> want) {
    if (t.ndim != static_cast<int>(want.size())) return false;
    int d = 0;
    for (int64_t w : want)
        if (t.shape[static_cast<size_t>(d++)] != w) return false;
    return true;
}

Status check_plain(const TensorView& t, std::string_view name, const char* field) {
    if (t.data == nullptr) return invalid_argument(std::string(name) + ": " + field + " has no data");
    if (t.device.kind != DeviceKind::kCpu)
        return invalid_argument(std::string(name) + ": " + field + " is not in host memory");
    if (!t.is_contiguous()) return invalid_argument(std::string(name) + ": " + field + " is not contiguous");
    return ok_status();
}

}  // namespace

Status validate_quantized(const QuantizedTensor& q, std::string_view name) {
    const std::string n(name);
    constexpr int64_t kMaxDim = int64_t{1} << 24;
    if (q.n <= 0 || q.k <= 0 || q.n > kMaxDim || q.k > kMaxDim)
        return invalid_argument(n + ": matrix [" + std::to_string(q.n) + ", " + std::to_string(q.k) +
                                "] must have both dims in [1, 2^24]");
    MOE_RETURN_IF_ERROR(check_plain(q.values, name, "values"));
    MOE_RETURN_IF_ERROR(check_plain(q.scales, name, "scales"));
    switch (q.format) {
        case QuantFormat::kFp8E4M3Block: {
            if (q.block_n <= 0 || q.block_k <= 0 || q.block_n > 4096 || q.block_k > 4096)
                return invalid_argument(n + ": weight_block_size [" + std::to_string(q.block_n) + ", " +
                                        std::to_string(q.block_k) + "] must be in [1, 4096]");
            if (q.values.dtype != DType::kF8E4M3 || !has_shape(q.values, {q.n, q.k}))
                return invalid_argument(n + ": values are " + dtype_name(q.values.dtype) + " " + dims(q.values) +
                                        ", expected f8_e4m3 [" + std::to_string(q.n) + ", " + std::to_string(q.k) +
                                        "]");
            const int64_t sn = (q.n + q.block_n - 1) / q.block_n, sk = (q.k + q.block_k - 1) / q.block_k;
            if (q.scales.dtype != DType::kF32 || !has_shape(q.scales, {sn, sk}))
                return invalid_argument(n + ": weight_scale_inv is " + dtype_name(q.scales.dtype) + " " +
                                        dims(q.scales) + ", expected f32 [" + std::to_string(sn) + ", " +
                                        std::to_string(sk) + "] for blocks of [" + std::to_string(q.block_n) + ", " +
                                        std::to_string(q.block_k) + "]");
            return ok_status();
        }
        case QuantFormat::kMxfp4: {
            if (q.block_n != 1 || q.block_k != 32)
                return invalid_argument(n + ": MXFP4 blocks are [1, 32], got [" + std::to_string(q.block_n) + ", " +
                                        std::to_string(q.block_k) + "]");
            if (q.k % 32 != 0)
                return invalid_argument(n + ": MXFP4 needs k a multiple of 32, got " + std::to_string(q.k));
            const int64_t kb = q.k / 32;
            if (q.values.dtype != DType::kU8 || !has_shape(q.values, {q.n, kb, 16}))
                return invalid_argument(n + ": blocks are " + std::string(dtype_name(q.values.dtype)) + " " +
                                        dims(q.values) + ", expected u8 [" + std::to_string(q.n) + ", " +
                                        std::to_string(kb) + ", 16]");
            if (q.scales.dtype != DType::kU8 || !has_shape(q.scales, {q.n, kb}))
                return invalid_argument(n + ": scales are " + std::string(dtype_name(q.scales.dtype)) + " " +
                                        dims(q.scales) + ", expected u8 [" + std::to_string(q.n) + ", " +
                                        std::to_string(kb) + "]");
            return ok_status();
        }
    }
    return invalid_argument(n + ": unknown quantized format");
}

float fp8_e4m3_to_f32(uint8_t v) {
    const int sign = v >> 7, exp = (v >> 3) & 0xf, mant = v & 0x7;
    if (exp == 0xf && mant == 0x7) return std::numeric_limits<float>::quiet_NaN();
    const float mag = exp == 0 ? std::ldexp(static_cast<float>(mant), -9)  // subnormal: mant/8 * 2^-6
                               : std::ldexp(static_cast<float>(8 + mant), exp - 10);
    return sign ? -mag : mag;
}

float fp4_e2m1_to_f32(uint8_t nibble) {
    static constexpr float kMag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    const float mag = kMag[nibble & 0x7];
    return (nibble & 0x8) ? -mag : mag;
}

float e8m0_to_f32(uint8_t e) {
    if (e == 0xff) return std::numeric_limits<float>::quiet_NaN();
    return std::ldexp(1.0f, static_cast<int>(e) - 127);
}

uint8_t f32_to_fp8_e4m3(float f) {
    if (std::isnan(f)) return 0x7f;
    const uint8_t sign = std::signbit(f) ? 0x80 : 0;
    float a = std::fabs(f);
    if (a >= 448.0f) return sign | 0x7e;  // saturate at the largest finite value
    // Among the 127 non-negative finite codes (monotone in their value), pick the nearest, ties
    // to the even code.
    int lo = 0, hi = 0x7e;
    while (lo < hi) {  // first code with value >= a
        const int mid = (lo + hi) / 2;
        if (fp8_e4m3_to_f32(static_cast<uint8_t>(mid)) >= a)
            hi = mid;
        else
            lo = mid + 1;
    }
    int code = lo;
    if (code > 0) {
        const float up = fp8_e4m3_to_f32(static_cast<uint8_t>(code)),
                    down = fp8_e4m3_to_f32(static_cast<uint8_t>(code - 1));
        if (a - down < up - a || (a - down == up - a && (code - 1) % 2 == 0)) code -= 1;
    }
    return static_cast<uint8_t>(sign | code);
}

Status check_mxfp4_finite(const QuantizedTensor& q, std::string_view name) {
    const auto* v = static_cast<const uint8_t*>(q.values.data);
    const auto* s = static_cast<const uint8_t*>(q.scales.data);
    const int64_t kb = q.k / 32;
    for (int64_t i = 0; i < q.n * kb; ++i) {
        if (s[i] < 253) continue;
        // The largest magnitude that stays finite: 2^(s - 127) * m < 2^128.
        const int max_code = s[i] == 255 ? -1 : s[i] == 254 ? 3 /* 1.5 */ : 5 /* 3.0 */;
        for (int64_t j = 0; j < 16; ++j) {
            const uint8_t byte = v[i * 16 + j];
            const int lo = byte & 0x7, hi = (byte >> 4) & 0x7;
            if (s[i] == 255 || lo > max_code || hi > max_code)
                return invalid_argument(std::string(name) + ": MXFP4 row " + std::to_string(i / kb) + " block " +
                                        std::to_string(i % kb) + " has e8m0 scale " + std::to_string(s[i]) +
                                        (s[i] == 255 ? " (NaN)" : "") +
                                        ", which makes its weights non-finite in f32; refused");
        }
    }
    return ok_status();
}

void dequantize_to_f32(const QuantizedTensor& q, int64_t row_begin, int64_t row_end, float* out) {
    const int64_t k = q.k;
    if (q.format == QuantFormat::kFp8E4M3Block) {
        const auto* v = static_cast<const uint8_t*>(q.values.data);
        const auto* s = static_cast<const float*>(q.scales.data);
        const int64_t sk = (k + q.block_k - 1) / q.block_k;
        for (int64_t i = row_begin; i < row_end; ++i)
            for (int64_t j = 0; j < k; ++j)
                out[(i - row_begin) * k + j] = fp8_e4m3_to_f32(v[i * k + j]) * s[(i / q.block_n) * sk + j / q.block_k];
        return;
    }
    const auto* v = static_cast<const uint8_t*>(q.values.data);
    const auto* s = static_cast<const uint8_t*>(q.scales.data);
    const int64_t kb = k / 32;
    for (int64_t i = row_begin; i < row_end; ++i)
        for (int64_t b = 0; b < kb; ++b) {
            const float scale = e8m0_to_f32(s[i * kb + b]);
            const uint8_t* blk = v + (i * kb + b) * 16;
            float* o = out + (i - row_begin) * k + b * 32;
            for (int j = 0; j < 16; ++j) {
                o[2 * j] = fp4_e2m1_to_f32(blk[j] & 0xf) * scale;
                o[2 * j + 1] = fp4_e2m1_to_f32(blk[j] >> 4) * scale;
            }
        }
}

}  // namespace moe
