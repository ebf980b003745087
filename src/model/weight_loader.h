// WeightLoader: copies the tensors a model reads from a WeightSource into memory the backend
// owns, checking each against the shape config.json implies. Shared by MoeTransformer and the
// MLA attention (model/mla_attention.h).
#pragma once

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weight_source.h"
#include "moe/backend.h"
#include "moe/quant.h"

namespace moe {

inline std::string shape_string(const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

// Copies every tensor the forward reads into memory the backend owns: small ones (norms,
// biases, the router, the embedding table) as plain DeviceBuffers, matrices through
// Backend::prepare_weight. Nothing the model keeps points into the source, so the source (a
// file mapping) can go once the model is built. Each tensor's source pages are released as soon
// as it is copied, so the peak is the copies made so far plus one tensor (plus one converted
// host copy when the dtype changes).
//
// FP8 checkpoints (#20; set_quantization with QuantizationConfig::fp8): a matrix the checkpoint
// stores as F8_E4M3 comes with `<name minus .weight>.weight_scale_inv`; matrix() hands both to
// Backend::prepare_quantized_weight (1 byte per weight, never expanded), get() expands it
// (dequantize_to_f32, then `dtype`) for the few tensors the model reads plain (MLA's kv_b_proj).
// Which tensors are FP8 follows the checkpoint's dtypes; every shape and count is checked
// against config.json and the block size before use.
class WeightLoader {
public:
    WeightLoader(const WeightSource& src, Backend& be, std::vector<DeviceBuffer>& owned,
                 std::vector<std::unique_ptr<PreparedWeight>>& prepared)
        : src_(src), be_(be), owned_(owned), prepared_(prepared) {}

    // The checkpoint's quantization_config (none by default).
    void set_quantization(const QuantizationConfig& q) { quant_ = q; }

    // What the FP8 path did so far: matrices kept in FP8 (and their values + scales bytes), and
    // FP8 tensors expanded at load because the model reads them plain.
    struct Fp8Stats {
        int64_t matrices = 0, weights = 0, bytes = 0;
        int64_t dequantized = 0, dequantized_weights = 0;
    };
    const Fp8Stats& fp8_stats() const { return fp8_stats_; }

    // A tensor of exactly `shape`, converted to `dtype` (f32, bf16), in backend memory.
    StatusOr<TensorView> get(const std::string& name, std::initializer_list<int64_t> shape, DType dtype) {
        MOE_ASSIGN_OR_RETURN(Host host, host_tensor(name, shape, dtype));
        TensorView view = host.view;
        const size_t bytes = view.nbytes();
        MOE_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(be_, std::max<size_t>(bytes, 1)));
        MOE_RETURN_IF_ERROR(be_.copy(buf.data(), be_.device(), view.data, Device{}, bytes));
        if (host.mapped) src_.release(view.data, bytes);
        view.data = buf.data();
        view.device = be_.device();
        owned_.push_back(std::move(buf));
        return view;
    }

    // A matrix of exactly `shape` in `dtype`, prepared by the backend for its GEMMs. Every matrix
    // of the model is one a decode step streams from memory for a few rows (the attention
    // projections, the experts, lm_head): WeightUse::kStreamedMatmul.
    StatusOr<WeightView> matrix(const std::string& name, std::initializer_list<int64_t> shape, DType dtype) {
        MOE_ASSIGN_OR_RETURN(WeightRef ref, src_.get(name));
        if (ref.dtype == DType::kF8E4M3) {
            MOE_ASSIGN_OR_RETURN(Fp8Host q, fp8_tensor(name, ref, shape));
            MOE_ASSIGN_OR_RETURN(std::unique_ptr<PreparedWeight> w,
                                 be_.prepare_quantized_weight(name, q.q, WeightUse::kStreamedMatmul));
            src_.release(q.q.values.data, q.q.values.nbytes());
            if (q.scales_mapped) src_.release(q.q.scales.data, q.q.scales.nbytes());
            fp8_stats_.matrices += 1;
            fp8_stats_.weights += q.q.n * q.q.k;
            fp8_stats_.bytes += q.q.nbytes();
            prepared_.push_back(std::move(w));
            return WeightView(*prepared_.back());
        }
        MOE_ASSIGN_OR_RETURN(Host host, host_tensor(name, shape, dtype));
        MOE_ASSIGN_OR_RETURN(std::unique_ptr<PreparedWeight> w,
                             be_.prepare_weight(name, host.view, WeightUse::kStreamedMatmul));
        if (host.mapped) src_.release(host.view.data, host.view.nbytes());
        prepared_.push_back(std::move(w));
        return WeightView(*prepared_.back());
    }

    // Rows of a matrix taken from a larger one: first, first + step, ... (count of them).
    struct RowSelection {
        int64_t first = 0, step = 1, count = 0;
    };

    // Expert `expert` of an MXFP4 expert tensor as gpt-oss checkpoints store it (#24; moe/quant.h):
    // `name`_blocks u8 [num_experts, rows, k / 32, 16] and `name`_scales u8 [num_experts, rows,
    // k / 32], both checked against the shape config.json implies. One matrix per selection of
    // rows (gate_up_proj interleaves gate and up: rows 0::2 and 1::2), prepared through
    // Backend::prepare_quantized_weight: the blocks run along k, so taking rows needs no
    // requantization. The expert's mapped pages are released after. Errors name the tensor.
    StatusOr<std::vector<WeightView>> mxfp4_expert(const std::string& name, int64_t num_experts, int64_t rows,
                                                   int64_t k, int64_t expert, std::initializer_list<RowSelection> sel) {
        if (k <= 0 || k % 32 != 0)
            return invalid_argument(name + ": MXFP4 needs the reduction size (" + std::to_string(k) +
                                    ") to be a positive multiple of 32");
        if (expert < 0 || expert >= num_experts)
            return invalid_argument(name + ": expert " + std::to_string(expert) + " out of range [0, " +
                                    std::to_string(num_experts) + ")");
        const int64_t kb = k / 32;
        MOE_ASSIGN_OR_RETURN(WeightRef blocks, src_.get(name + "_blocks"));
        MOE_ASSIGN_OR_RETURN(WeightRef scales, src_.get(name + "_scales"));
        const std::vector<int64_t> want_blocks = {num_experts, rows, kb, 16}, want_scales = {num_experts, rows, kb};
        for (const auto& [ref, want] :
             {std::pair<const WeightRef&, const std::vector<int64_t>&>{blocks, want_blocks}, {scales, want_scales}}) {
            if (ref.dtype != DType::kU8 || ref.shape != want)
                return invalid_argument("tensor " + ref.name + " in " + ref.origin + ": " + dtype_name(ref.dtype) +
                                        " " + shape_string(ref.shape) + ", expected u8 " + shape_string(want) +
                                        " (MXFP4, from config.json)");
        }
        const auto* bsrc = static_cast<const uint8_t*>(blocks.data) + expert * rows * kb * 16;
        const auto* ssrc = static_cast<const uint8_t*>(scales.data) + expert * rows * kb;
        std::vector<WeightView> out;
        std::vector<uint8_t> values, scale_bytes;
        for (const RowSelection& s : sel) {
            if (s.count < 1 || s.step < 1 || s.first < 0 || s.first + (s.count - 1) * s.step >= rows)
                return invalid_argument(name + ": row selection " + std::to_string(s.first) + " + i * " +
                                        std::to_string(s.step) + " for " + std::to_string(s.count) +
                                        " rows leaves [0, " + std::to_string(rows) + ")");
            values.resize(static_cast<size_t>(s.count * kb * 16));
            scale_bytes.resize(static_cast<size_t>(s.count * kb));
            for (int64_t i = 0; i < s.count; ++i) {
                const int64_t r = s.first + i * s.step;
                std::memcpy(values.data() + i * kb * 16, bsrc + r * kb * 16, static_cast<size_t>(kb * 16));
                std::memcpy(scale_bytes.data() + i * kb, ssrc + r * kb, static_cast<size_t>(kb));
            }
            QuantizedTensor q;
            q.format = QuantFormat::kMxfp4;
            q.n = s.count;
            q.k = k;
            q.block_n = 1;
            q.block_k = 32;
            q.values = TensorView::make(values.data(), DType::kU8, {s.count, kb, 16});
            q.scales = TensorView::make(scale_bytes.data(), DType::kU8, {s.count, kb});
            const std::string what =
                name + "[" + std::to_string(expert) + "]" +
                (sel.size() > 1 ? " rows " + std::to_string(s.first) + "::" + std::to_string(s.step) : std::string());
            MOE_ASSIGN_OR_RETURN(std::unique_ptr<PreparedWeight> w,
                                 be_.prepare_quantized_weight(what, q, WeightUse::kStreamedMatmul));
            prepared_.push_back(std::move(w));
            out.emplace_back(*prepared_.back());
        }
        src_.release(bsrc, static_cast<size_t>(rows * kb * 16));
        src_.release(ssrc, static_cast<size_t>(rows * kb));
        return out;
    }

    // ---- for loaders that rearrange a checkpoint tensor before keeping it (gpt-oss's fused,
    // interleaved and transposed expert tensors): the source tensor, checked for shape and for a
    // dtype of f32, bf16 or f16, then copies made from host buffers the caller built.
    StatusOr<WeightRef> source_tensor(const std::string& name, std::initializer_list<int64_t> shape) {
        MOE_ASSIGN_OR_RETURN(WeightRef w, src_.get(name));
        MOE_RETURN_IF_ERROR(check_plain(name, w, std::vector<int64_t>(shape)));
        return w;
    }
    // The pages of a source tensor are no longer needed.
    void release(const WeightRef& w) {
        size_t n = 1;
        for (int64_t d : w.shape) n *= static_cast<size_t>(d);
        src_.release(w.data, n * dtype_size(w.dtype));
    }
    // A host tensor (any layout the caller made, contiguous) copied into backend memory.
    StatusOr<TensorView> copy_from_host(const TensorView& host) {
        const size_t bytes = host.nbytes();
        MOE_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(be_, std::max<size_t>(bytes, 1)));
        MOE_RETURN_IF_ERROR(be_.copy(buf.data(), be_.device(), host.data, Device{}, bytes));
        TensorView view = host;
        view.data = buf.data();
        view.device = be_.device();
        owned_.push_back(std::move(buf));
        return view;
    }
    // A host matrix prepared by the backend, as matrix() does.
    StatusOr<WeightView> matrix_from_host(const std::string& name, const TensorView& host) {
        MOE_ASSIGN_OR_RETURN(std::unique_ptr<PreparedWeight> w,
                             be_.prepare_weight(name, host, WeightUse::kStreamedMatmul));
        prepared_.push_back(std::move(w));
        return WeightView(*prepared_.back());
    }

private:
    // A tensor in host memory: the source's own (mapped) or a converted copy.
    struct Host {
        TensorView view;
        bool mapped = false;
        std::vector<uint8_t> converted;
    };

    // An FP8 matrix and its scales from the checkpoint, checked; the scales converted to f32
    // when the file holds them in bf16.
    struct Fp8Host {
        QuantizedTensor q;
        bool scales_mapped = false;
        std::vector<float> scales;
    };

    StatusOr<Fp8Host> fp8_tensor(const std::string& name, const WeightRef& w, std::initializer_list<int64_t> shape) {
        const std::vector<int64_t> want(shape);
        if (!quant_.fp8)
            return invalid_argument("tensor " + name + " in " + w.origin +
                                    ": dtype f8_e4m3, but config.json has no FP8 quantization_config (quant_method "
                                    "\"fp8\" with weight_block_size)");
        if (w.shape != want || want.size() != 2)
            return invalid_argument("tensor " + name + " in " + w.origin + ": shape " + shape_string(w.shape) +
                                    ", expected " + shape_string(want) + " from config.json");
        const std::string suffix = ".weight";
        if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
            return invalid_argument("tensor " + name + " in " + w.origin +
                                    ": an FP8 tensor must be named <module>.weight (its scales are "
                                    "<module>.weight_scale_inv)");
        const std::string scale_name = name + "_scale_inv";
        auto s = src_.get(scale_name);
        if (!s.ok())
            return invalid_argument("tensor " + name + " is f8_e4m3 but its block scales " + scale_name +
                                    " are missing: " + s.status().message());
        const int64_t n = want[0], k = want[1];
        const std::vector<int64_t> scale_shape = {(n + quant_.block_n - 1) / quant_.block_n,
                                                  (k + quant_.block_k - 1) / quant_.block_k};
        if (s->shape != scale_shape)
            return invalid_argument("tensor " + scale_name + " in " + s->origin + ": shape " + shape_string(s->shape) +
                                    ", expected " + shape_string(scale_shape) + " for " + name + " " +
                                    shape_string(want) + " in blocks of weight_block_size [" +
                                    std::to_string(quant_.block_n) + ", " + std::to_string(quant_.block_k) + "]");
        if (s->dtype != DType::kF32 && s->dtype != DType::kBF16)
            return invalid_argument("tensor " + scale_name + " in " + s->origin + ": dtype " + dtype_name(s->dtype) +
                                    ", expected f32 (or bf16)");
        Fp8Host h;
        h.q.format = QuantFormat::kFp8E4M3Block;
        h.q.n = n;
        h.q.k = k;
        h.q.block_n = quant_.block_n;
        h.q.block_k = quant_.block_k;
        h.q.values = TensorView::make(const_cast<void*>(w.data), DType::kF8E4M3, {n, k});
        const size_t num_scales = static_cast<size_t>(scale_shape[0] * scale_shape[1]);
        if (s->dtype == DType::kF32) {
            h.q.scales = TensorView::make(const_cast<void*>(s->data), DType::kF32, {scale_shape[0], scale_shape[1]});
            h.scales_mapped = true;
        } else {
            h.scales.resize(num_scales);
            convert_to_f32(s->data, s->dtype, h.scales.data(), num_scales);
            h.q.scales = TensorView::make(h.scales.data(), DType::kF32, {scale_shape[0], scale_shape[1]});
        }
        MOE_RETURN_IF_ERROR(validate_quantized(h.q, name));
        return h;
    }

    // A tensor read as plain values: exactly the shape config.json implies, in f32, bf16 or f16.
    static Status check_plain(const std::string& name, const WeightRef& w, const std::vector<int64_t>& want) {
        if (w.shape != want)
            return invalid_argument("tensor " + name + " in " + w.origin + ": shape " + shape_string(w.shape) +
                                    ", expected " + shape_string(want) + " from config.json");
        if (w.dtype != DType::kF32 && w.dtype != DType::kBF16 && w.dtype != DType::kF16)
            return invalid_argument("tensor " + name + " in " + w.origin + ": dtype " + dtype_name(w.dtype) +
                                    ", expected f32, bf16 or f16");
        return ok_status();
    }

    StatusOr<Host> host_tensor(const std::string& name, std::initializer_list<int64_t> shape, DType dtype) {
        MOE_ASSIGN_OR_RETURN(WeightRef w, src_.get(name));
        const std::vector<int64_t> want(shape);
        if (w.dtype == DType::kF8E4M3) {
            // Read plain by the model (MLA's kv_b_proj, for weight absorption): expanded here.
            MOE_ASSIGN_OR_RETURN(Fp8Host q, fp8_tensor(name, w, shape));
            Host h;
            h.view = TensorView::make(nullptr, dtype, {q.q.n, q.q.k});
            std::vector<float> f32(static_cast<size_t>(q.q.n * q.q.k));
            dequantize_to_f32(q.q, 0, q.q.n, f32.data());
            h.converted.resize(f32.size() * dtype_size(dtype));
            convert_from_f32(f32.data(), h.converted.data(), dtype, f32.size());
            h.view.data = h.converted.data();
            src_.release(q.q.values.data, q.q.values.nbytes());
            if (q.scales_mapped) src_.release(q.q.scales.data, q.q.scales.nbytes());
            fp8_stats_.dequantized += 1;
            fp8_stats_.dequantized_weights += q.q.n * q.q.k;
            return h;
        }
        MOE_RETURN_IF_ERROR(check_plain(name, w, want));
        Host h;
        h.view.dtype = dtype;
        h.view.ndim = static_cast<int>(want.size());
        int64_t stride = 1;
        for (int d = h.view.ndim - 1; d >= 0; --d) {
            h.view.shape[static_cast<size_t>(d)] = want[static_cast<size_t>(d)];
            h.view.strides[static_cast<size_t>(d)] = stride;
            stride *= want[static_cast<size_t>(d)];
        }
        const size_t numel = static_cast<size_t>(h.view.numel());
        if (w.dtype == dtype) {
            h.view.data = const_cast<void*>(w.data);  // NOTE: read only, and only during load
            h.mapped = true;
            return h;
        }
        std::vector<float> f32(w.dtype == DType::kF32 ? 0 : numel);
        const float* as_f32 = static_cast<const float*>(w.data);
        if (w.dtype != DType::kF32) {
            convert_to_f32(w.data, w.dtype, f32.data(), numel);
            as_f32 = f32.data();
        }
        h.converted.resize(numel * dtype_size(dtype));
        convert_from_f32(as_f32, h.converted.data(), dtype, numel);
        src_.release(w.data, numel * dtype_size(w.dtype));
        h.view.data = h.converted.data();
        return h;
    }

    const WeightSource& src_;
    Backend& be_;
    std::vector<DeviceBuffer>& owned_;
    std::vector<std::unique_ptr<PreparedWeight>>& prepared_;
    QuantizationConfig quant_;
    Fp8Stats fp8_stats_;
};

}  // namespace moe
