#include "backend/cpu/cpu_backend.h"

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

#include "backend/cpu/bf16_panels.h"
#include "backend/cpu/bf16_tiles.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/fp8_block.h"
#include "backend/cpu/host_memory.h"
#include "backend/cpu/onednn_panels.h"
#include "core/allocator.h"
#include "core/cpu_quota.h"
#include "core/logging.h"

namespace moe {
namespace cpu {
namespace {

// 0 means "what the process may really use": the affinity mask (taskset, cpusets) and the
// cgroup CPU quota (containers, Kubernetes limits), either of which can be smaller than the
// machine. Logged once at start, with where the number came from.
int resolve_threads(int requested) {
    if (requested > 0) return requested;
    const CpuBudget& b = process_cpu_budget();
    static const bool logged = [&] {
        log::backend().info("cpu backend: default thread count {}", b.describe());
        return true;
    }();
    (void)logged;
    return b.threads;
}

}  // namespace

CpuBackend::CpuBackend(const CpuBackendOptions& options)
    : pack_weights_(options.pack_weights),
      compress_streamed_(options.compress_streamed),
      pool_(resolve_threads(options.num_threads)),
      gemm_(pool_.size(), &pool_) {
    ops_.embedding = &cpu::embedding;
    ops_.rms_norm = &cpu::rms_norm;
    ops_.rope = &cpu::rope;
    ops_.gemm = &cpu::gemm;
    ops_.silu_mul = &cpu::silu_mul;
    ops_.add = &cpu::add;
    ops_.kv_write = &cpu::kv_write;
    ops_.attention = &cpu::attention;
    ops_.moe_route = &cpu::moe_route;
    ops_.moe_shared_gate = &cpu::moe_shared_gate;
    ops_.moe_permute = &cpu::moe_permute;
    ops_.moe_experts = &cpu::moe_experts;
    ops_.moe_unpermute = &cpu::moe_unpermute;
    ops_.rope_table = &cpu::rope_table;
    ops_.latent_write = &cpu::latent_write;
    ops_.latent_gather = &cpu::latent_gather;
    ops_.mla_expand = &cpu::mla_expand;
    ops_.ragged_attention = &cpu::ragged_attention;
    ops_.mla_attention = &cpu::mla_attention;
    ops_.head_gemm = &cpu::head_gemm;
    ops_.moe_route_grouped = &cpu::moe_route_grouped;
    resolve_matmul(options.matmul);
    log::backend().debug("cpu backend: {} threads, cpu features: {}; bf16 matrix products: {}", pool_.size(),
                         cpu_features().to_string(), matmul_);
}

void CpuBackend::resolve_matmul(CpuMatmul requested) {
    const CpuFeatures& f = cpu_features();
    matmul_ = "own AVX512-BF16 kernels";
    if (!pack_weights_ || !bf16_tiles_available()) {
        matmul_ = bf16_tiles_available() ? "own AVX512-BF16 kernels on the checkpoint layout"
                                         : "oneDNN / OpenBLAS on the checkpoint layout (no AVX512-BF16)";
        if (requested == CpuMatmul::kOnednn || requested == CpuMatmul::kOnednnPrefill)
            log::backend().warn("cpu matmul onednn: needs packed panels and AVX512-BF16; using {}", matmul_);
        return;
    }
    const CpuMatmul choice =
        requested == CpuMatmul::kAuto ? (f.amx_bf16 ? CpuMatmul::kOnednnPrefill : CpuMatmul::kOwn) : requested;
    if (choice == CpuMatmul::kOwn) return;
    StatusOr<std::string> impl = onednn_panels_probe();
    if (!impl.ok()) {
        log::backend().warn("cpu matmul {}: {}; using our own AVX512-BF16 kernels",
                            requested == CpuMatmul::kAuto ? "auto (AMX present)" : "onednn", impl.status().message());
        // NOTE: the route stays kOwn.
        return;
    }
    gemm_.set_panel_route(choice == CpuMatmul::kOnednn ? PanelRoute::kOnednn : PanelRoute::kOnednnPrefill);
    if (choice == CpuMatmul::kOnednnPrefill) {
        matmul_ = "oneDNN " + *impl + " over the packed panels from " + std::to_string(kOnednnPrefillMinRows) +
                  " rows, own AVX512-BF16 kernels below";
        return;
    }
    matmul_ = "oneDNN " + *impl + " over the packed panels";
}

CpuBackend::~CpuBackend() = default;

std::string CpuBackend::describe() const {
    return std::to_string(pool_.size()) + " threads, " + cpu_features().to_string() + "; bf16 products: " + matmul_;
}

StatusOr<void*> CpuBackend::allocate(size_t bytes) {
    return CpuAllocator::allocate(bytes);
}

void CpuBackend::deallocate(void* ptr) {
    CpuAllocator::deallocate(ptr);
}

Status CpuBackend::copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
    if (dst_device.kind != DeviceKind::kCpu || src_device.kind != DeviceKind::kCpu)
        return invalid_argument("cpu backend copy: from " + src_device.to_string() + " to " + dst_device.to_string() +
                                ", but the cpu backend only copies within host memory");
    if (bytes == 0) return ok_status();
    if (dst == nullptr || src == nullptr)
        return invalid_argument("cpu backend copy: null pointer for " + std::to_string(bytes) + " bytes");
    std::memmove(dst, src, bytes);
    return ok_status();
}

namespace {

// Past 1 exception in 1024 values the 12-bit form runs slower than the plain panels.
// gemm_decode_bench --packed 12 --outliers P --matrices 8 (4096 x 2048 each, alternated, 2 threads,
// host memory at 51-58 GB/s), plain / 12-bit time: 1 in 2267 exceptions 0.86x at M=1, 0.94x at
// M=4, 1.05x at M=16; 1 in 981: M=4 0.99x, M=16 1.13x; 1 in 612: 1.05x, 1.07x, 1.22x. (It was
// 1 in 256, chosen on bytes alone: such a matrix ran slower at every M.)
constexpr int64_t kPanels12MaxExceptionsPer = 1024;

bool packable(const TensorView& w) {
    return w.dtype == DType::kBF16 && w.ndim == 2 && w.is_contiguous() && w.data != nullptr &&
           w.device.kind == DeviceKind::kCpu && bf16_tiles_available();
}

}  // namespace

StatusOr<DeviceBuffer> CpuBackend::pack_panels12(const TensorView& w) {
    const int64_t n = w.dim(0), k = w.dim(1);
    const auto* src = static_cast<const uint16_t*>(w.data);
    const Bf16Panels12Plan plan = plan_bf16_panels12(src, n, k, &pool_);
    // A matrix whose high bytes spread wider than 16 values would keep many exceptions (8 bytes
    // and a scalar term per row each): past 1 in 1024 values keep it plain (measured, above).
    if (plan.bytes < 0 || plan.exceptions > n * k / kPanels12MaxExceptionsPer) return DeviceBuffer{};
    MOE_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(*this, static_cast<size_t>(plan.bytes)));
    auto* dst = static_cast<uint8_t*>(buf.data());
    const int64_t panels = bf16_panel_count(n);
    // The range that starts at panel 0 also writes the header and the exception offsets.
    pool_.parallel_for(panels, [&](int64_t begin, int64_t end) { pack_bf16_panels12(src, plan, begin, end, dst); });
    return buf;
}

StatusOr<DeviceBuffer> CpuBackend::pack_panels(const TensorView& w) {
    const int64_t n = w.dim(0), k = w.dim(1);
    MOE_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(
                                               *this, static_cast<size_t>(bf16_panels_elems(n, k)) * sizeof(uint16_t)));
    // Panels are independent: split them over the pool (a 151936 x 2048 lm_head is 600 MB).
    const int64_t panels = bf16_panel_count(n);
    const auto* src = static_cast<const uint16_t*>(w.data);
    auto* dst = static_cast<uint16_t*>(buf.data());
    const int64_t panel_elems = bf16_panels_elems(kBf16PanelCols, k);
    pool_.parallel_for(panels, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
            const int64_t c0 = p * kBf16PanelCols;
            pack_bf16_panels(src + c0 * k, std::min(kBf16PanelCols, n - c0), k, dst + p * panel_elems);
        }
    });
    return buf;
}

StatusOr<std::unique_ptr<PreparedWeight>> CpuBackend::prepare_weight(const std::string& name, const TensorView& w,
                                                                     WeightUse use) {
    MOE_RETURN_IF_ERROR(check_weight_to_prepare(name, w));
    TensorView logical = w;
    logical.device = device();
    CpuMatrix m{.layout = CpuLayout::kRowMajor,
                .dtype = w.dtype,
                .n = w.ndim > 0 ? w.dim(0) : 1,
                .k = w.ndim > 1 ? w.dim(1) : 1,
                .data = nullptr};
    DeviceBuffer buf;
    if (pack_weights_ && packable(w)) {
        // The panel forms replace the values: the logical view has no data of its own.
        logical.data = nullptr;
        if (use == WeightUse::kStreamedMatmul && compress_streamed_) {
            MOE_ASSIGN_OR_RETURN(buf, pack_panels12(w));
            m.layout = CpuLayout::kPanels12;
        }
        if (buf.data() == nullptr) {
            MOE_ASSIGN_OR_RETURN(buf, pack_panels(w));
            m.layout = CpuLayout::kPanels;
        }
    } else {
        MOE_ASSIGN_OR_RETURN(buf, DeviceBuffer::allocate(*this, std::max<size_t>(w.nbytes(), 1)));
        std::memcpy(buf.data(), w.data, w.nbytes());
        logical.data = buf.data();
    }
    m.data = buf.data();
    return std::unique_ptr<PreparedWeight>(
        std::make_unique<CpuWeight>(*this, logical, m, std::move(buf), &weight_counts_));
}

StatusOr<std::unique_ptr<PreparedWeight>> CpuBackend::prepare_quantized_weight(const std::string& name,
                                                                               const QuantizedTensor& q,
                                                                               WeightUse use) {
    MOE_RETURN_IF_ERROR(validate_quantized(q, name));
    switch (q.format) {
        case QuantFormat::kFp8E4M3Block: {
            MOE_ASSIGN_OR_RETURN(Fp8Prepared fp8, prepare_fp8_weight(*this, q));
            // The logical view: [n, k] bf16 without data (only these kernels read the form).
            const TensorView logical = TensorView::make(nullptr, DType::kBF16, {q.n, q.k}, device());
            return std::unique_ptr<PreparedWeight>(
                std::make_unique<CpuWeight>(*this, logical, fp8.matrix, std::move(fp8.buffer), &weight_counts_));
        }
        case QuantFormat::kMxfp4:
            return prepare_mxfp4(name, q);
    }
    return Backend::prepare_quantized_weight(name, q, use);
}

std::string CpuBackend::weight_summary() const {
    std::string out;
    const std::pair<CpuLayout, const char*> parts[] = {{CpuLayout::kFp8Block, " in FP8 e4m3 with block scales"},
                                                       {CpuLayout::kMxfp4, " in MXFP4"},
                                                       {CpuLayout::kPanels12, " in the lossless 12-bit form"},
                                                       {CpuLayout::kPanels, " in bf16 column panels"},
                                                       {CpuLayout::kRowMajor, " row-major"}};
    for (const auto& [layout, what] : parts) {
        const int64_t count = weight_counts_.matrices[static_cast<size_t>(layout)].load(std::memory_order_relaxed);
        if (count > 0) out += (out.empty() ? "" : ", ") + std::to_string(count) + what;
    }
    if (out.empty()) return out;
    char mib[32];
    std::snprintf(mib, sizeof(mib), "%.1f",
                  static_cast<double>(weight_counts_.bytes.load(std::memory_order_relaxed)) / (1 << 20));
    return out + "; " + mib + " MiB";
}

bool CpuBackend::moe_experts_round_input_to_bf16(DType weight_dtype) const {
    // NOTE: the condition moe_experts() picks its bf16 route by; the other routes keep f32 rows.
    return weight_dtype == DType::kBF16 && bf16_tiles_available() && gemm_.bf16_tiles_max_rows() > 0;
}

StatusOr<MemoryInfo> CpuBackend::memory_info() const {
    return host_memory_info();
}

}  // namespace cpu

StatusOr<CpuMatmul> parse_cpu_matmul(const std::string& name) {
    if (name == "auto") return CpuMatmul::kAuto;
    if (name == "own") return CpuMatmul::kOwn;
    if (name == "onednn") return CpuMatmul::kOnednn;
    if (name == "onednn-prefill") return CpuMatmul::kOnednnPrefill;
    return invalid_argument("--cpu-matmul must be auto, own, onednn or onednn-prefill, got \"" + name + "\"");
}

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options) {
    return std::make_unique<cpu::CpuBackend>(options);
}

}  // namespace moe
