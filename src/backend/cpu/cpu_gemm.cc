#include "backend/cpu/cpu_gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/cpu/bf16_matmul.h"
#include "backend/cpu/bf16_tiles.h"
#include "backend/cpu/fp8_block.h"
#include "backend/cpu/gemm_f32_narrow.h"
#include "backend/cpu/mxfp4_block.h"

namespace moe::cpu {
namespace {

// Everything that changes the oneDNN primitive: shapes, bias, accumulate (sum post-op) and the
// output row stride (part of the dst memory descriptor).
struct PrimitiveKey {
    int64_t m, n, k, ldy;
    bool bias, accumulate;
    bool operator==(const PrimitiveKey&) const = default;
};

struct PrimitiveKeyHash {
    size_t operator()(const PrimitiveKey& key) const {
        size_t h = std::hash<int64_t>()(key.m);
        for (int64_t v : {key.n, key.k, key.ldy, int64_t{key.bias} * 2 + int64_t{key.accumulate}})
            h = h * 1000003u ^ std::hash<int64_t>()(v);
        return h;
    }
};

// Rows of f32 weights widened from bf16 per fallback panel: bounds the scratch to a few MB.
constexpr int64_t kFallbackPanelElems = int64_t{1} << 20;

}  // namespace

struct GemmEngine::Dnnl {
    dnnl::engine engine{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream{engine};
    struct Entry {
        dnnl::matmul prim;
        std::string impl;
    };
    std::unordered_map<PrimitiveKey, Entry, PrimitiveKeyHash> cache;
    bool unavailable = false;  // oneDNN could not build a bf16 matmul here: use the fallback
    std::string last_impl;
    std::vector<uint16_t> x_bf16;
    std::vector<float> w_f32;
};

GemmEngine::GemmEngine(int num_threads, ThreadPool* pool)
    : num_threads_(std::max(1, num_threads)), pool_(pool), dnnl_(std::make_unique<Dnnl>()) {
    // NOTE: a process-wide setting; the backend owns the process's BLAS threading.
    openblas_set_num_threads(num_threads_);
}

GemmEngine::~GemmEngine() = default;

const std::string& GemmEngine::last_bf16_impl() const {
    return dnnl_->last_impl;
}

size_t GemmEngine::cached_primitives() const {
    return dnnl_->cache.size();
}

Status GemmEngine::run(const GemmProblem& p) {
    if (p.m == 0) return ok_status();
    if (p.w.layout == CpuLayout::kMxfp4) return mxfp4_matmul(p, pool_);
    if (p.w.layout == CpuLayout::kFp8Block) {
        // FP8 block-scaled (fp8_block.h): our kernels through bf16_matmul's column split, or the
        // scalar kernel without AVX512-BF16. oneDNN never sees these matrices.
        if (bf16_tiles_available()) return bf16_matmul(p, pool_, PanelRoute::kOwn);
        return fp8_gemm_f32(p, pool_);
    }
    if (p.w.dtype == DType::kF32) {
        if (f32_narrow_applies(p)) {
            f32_narrow_gemm(p, pool_);
            return ok_status();
        }
        return run_f32(p);
    }
    if (p.w.dtype == DType::kBF16) {
        // NOTE: a matrix in panels has no row-major copy: our kernels (or oneDNN over the panels)
        // take it whatever the row count.
        if (p.w.panels() || bf16_matmul_applies(p, tiles_max_rows_)) {
            return bf16_matmul(p, pool_, route_);
        }
        if (!dnnl_->unavailable) return run_bf16(p);
        return run_bf16_fallback(p);
    }
    return unimplemented(std::string("cpu gemm: weights of dtype ") + dtype_name(p.w.dtype) + " are not supported");
}

Status GemmEngine::run_f32(const GemmProblem& p) {
    float beta = p.accumulate ? 1.0f : 0.0f;
    if (p.bias != nullptr) {
        // Bias first, then the product accumulates onto it (beta = 1).
        for (int64_t i = 0; i < p.m; ++i) {
            float* y = p.y + i * p.ldy;
            if (p.accumulate) {
                for (int64_t j = 0; j < p.n; ++j) y[j] += p.bias[j];
            } else {
                std::memcpy(y, p.bias, static_cast<size_t>(p.n) * sizeof(float));
            }
        }
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(p.m), static_cast<blasint>(p.n),
                static_cast<blasint>(p.k), 1.0f, p.x, static_cast<blasint>(p.ldx), static_cast<const float*>(p.w.data),
                static_cast<blasint>(p.k), beta, p.y, static_cast<blasint>(p.ldy));
    return ok_status();
}

Status GemmEngine::run_bf16(const GemmProblem& p) {
    using dnnl::memory;
    Dnnl& d = *dnnl_;
    const PrimitiveKey key{p.m, p.n, p.k, p.ldy, p.bias != nullptr, p.accumulate};
    // oneDNN reports errors as exceptions; none may leave this module.
    try {
        auto it = d.cache.find(key);
        if (it == d.cache.end()) {
            const memory::desc src_md({p.m, p.k}, memory::data_type::bf16, memory::dims{p.k, 1});
            // w is [N, K] row-major, i.e. a K x N matrix with strides (1, K): no reorder needed.
            const memory::desc wei_md({p.k, p.n}, memory::data_type::bf16, memory::dims{1, p.k});
            const memory::desc bias_md =
                p.bias ? memory::desc({1, p.n}, memory::data_type::f32, memory::dims{p.n, 1}) : memory::desc();
            const memory::desc dst_md({p.m, p.n}, memory::data_type::f32, memory::dims{p.ldy, 1});
            dnnl::primitive_attr attr;
            if (p.accumulate) {
                dnnl::post_ops ops;
                ops.append_sum(1.0f);
                attr.set_post_ops(ops);
            }
            const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, wei_md, bias_md, dst_md), attr, d.engine);
            it = d.cache.emplace(key, Dnnl::Entry{dnnl::matmul(pd), pd.impl_info_str()}).first;
        }
        d.last_impl = it->second.impl;

        // x (f32, row stride ldx) -> packed bf16 [M, K]
        d.x_bf16.resize(static_cast<size_t>(p.m * p.k));
        uint16_t* xb = d.x_bf16.data();
        pool_->parallel_for(p.m, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i)
                for (int64_t j = 0; j < p.k; ++j) xb[i * p.k + j] = f32_to_bf16(p.x[i * p.ldx + j]);
        });

        memory src(memory::desc({p.m, p.k}, memory::data_type::bf16, memory::dims{p.k, 1}), d.engine, xb);
        memory wei(memory::desc({p.k, p.n}, memory::data_type::bf16, memory::dims{1, p.k}), d.engine,
                   const_cast<void*>(p.w.data));
        memory dst(memory::desc({p.m, p.n}, memory::data_type::f32, memory::dims{p.ldy, 1}), d.engine, p.y);
        std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
        if (p.bias)
            args.emplace(DNNL_ARG_BIAS, memory(memory::desc({1, p.n}, memory::data_type::f32, memory::dims{p.n, 1}),
                                               d.engine, const_cast<float*>(p.bias)));
        // oneDNN runs on OpenMP; the setting is per calling thread, so set it where we call.
        omp_set_num_threads(num_threads_);
        it->second.prim.execute(d.stream, args);
        d.stream.wait();
    } catch (const dnnl::error& e) {
        if (e.status == dnnl_unimplemented) {
            // No bf16 matmul on this ISA: remember, and widen the weights ourselves from now on.
            d.unavailable = true;
            return run_bf16_fallback(p);
        }
        return internal_error(std::string("cpu gemm: oneDNN matmul failed: ") + e.what());
    } catch (const std::exception& e) {
        return internal_error(std::string("cpu gemm: ") + e.what());
    }
    return ok_status();
}

Status GemmEngine::run_bf16_fallback(const GemmProblem& p) {
    Dnnl& d = *dnnl_;
    d.last_impl = "blas-fallback";
    const int64_t panel_rows = std::max<int64_t>(1, std::min<int64_t>(p.n, kFallbackPanelElems / p.k));
    d.w_f32.resize(static_cast<size_t>(panel_rows * p.k));
    const auto* w = static_cast<const uint16_t*>(p.w.data);
    for (int64_t n0 = 0; n0 < p.n; n0 += panel_rows) {
        const int64_t rows = std::min(panel_rows, p.n - n0);
        convert_to_f32(w + n0 * p.k, DType::kBF16, d.w_f32.data(), static_cast<size_t>(rows * p.k));
        GemmProblem sub = p;
        sub.n = rows;
        sub.w = CpuMatrix{
            .layout = CpuLayout::kRowMajor, .dtype = DType::kF32, .n = rows, .k = p.k, .data = d.w_f32.data()};
        sub.bias = p.bias ? p.bias + n0 : nullptr;
        sub.y = p.y + n0;
        MOE_RETURN_IF_ERROR(run_f32(sub));
    }
    return ok_status();
}

}  // namespace moe::cpu
