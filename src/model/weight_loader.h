// WeightLoader: copies the tensors a model reads from a WeightSource into memory the backend
// owns, checking each against the shape config.json implies. Shared by MoeTransformer and the
// MLA attention (model/mla_attention.h).
#pragma once

#include <algorithm>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "model/weight_source.h"
#include "moe/backend.h"

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
class WeightLoader {
public:
    WeightLoader(const WeightSource& src, Backend& be, std::vector<DeviceBuffer>& owned,
                 std::vector<std::unique_ptr<PreparedWeight>>& prepared)
        : src_(src), be_(be), owned_(owned), prepared_(prepared) {}

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
        MOE_ASSIGN_OR_RETURN(Host host, host_tensor(name, shape, dtype));
        MOE_ASSIGN_OR_RETURN(std::unique_ptr<PreparedWeight> w,
                             be_.prepare_weight(name, host.view, WeightUse::kStreamedMatmul));
        if (host.mapped) src_.release(host.view.data, host.view.nbytes());
        prepared_.push_back(std::move(w));
        return WeightView(*prepared_.back());
    }

    // ---- for loaders that rearrange a checkpoint tensor before keeping it (gpt-oss's fused,
    // interleaved and transposed expert tensors): the source tensor, checked for shape and for a
    // dtype of f32, bf16 or f16, then copies made from host buffers the caller built.
    StatusOr<WeightRef> source_tensor(const std::string& name, std::initializer_list<int64_t> shape) {
        MOE_ASSIGN_OR_RETURN(WeightRef w, src_.get(name));
        const std::vector<int64_t> want(shape);
        if (w.shape != want)
            return invalid_argument("tensor " + name + " in " + w.origin + ": shape " + shape_string(w.shape) +
                                    ", expected " + shape_string(want) + " from config.json");
        if (w.dtype != DType::kF32 && w.dtype != DType::kBF16 && w.dtype != DType::kF16)
            return invalid_argument("tensor " + name + " in " + w.origin + ": dtype " + dtype_name(w.dtype) +
                                    ", expected f32, bf16 or f16");
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

    StatusOr<Host> host_tensor(const std::string& name, std::initializer_list<int64_t> shape, DType dtype) {
        MOE_ASSIGN_OR_RETURN(WeightRef w, src_.get(name));
        const std::vector<int64_t> want(shape);
        if (w.shape != want)
            return invalid_argument("tensor " + name + " in " + w.origin + ": shape " + shape_string(w.shape) +
                                    ", expected " + shape_string(want) + " from config.json");
        if (w.dtype != DType::kF32 && w.dtype != DType::kBF16 && w.dtype != DType::kF16)
            return invalid_argument("tensor " + name + " in " + w.origin + ": dtype " + dtype_name(w.dtype) +
                                    ", expected f32, bf16 or f16");
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
};

}  // namespace moe
