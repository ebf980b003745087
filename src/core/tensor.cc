#include "moe/tensor.h"

#include <sstream>

#include "moe/check.h"

namespace moe {

std::string Device::to_string() const {
    return kind == DeviceKind::kCpu ? std::string("cpu") : "cuda:" + std::to_string(index);
}

TensorView TensorView::make(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device) {
    MOE_CHECK_LE(shape.size(), static_cast<size_t>(kMaxDims));
    TensorView t;
    t.data = data;
    t.dtype = dtype;
    t.device = device;
    t.ndim = static_cast<int>(shape.size());
    int i = 0;
    for (int64_t s : shape) t.shape[static_cast<size_t>(i++)] = s;
    int64_t stride = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
        t.strides[static_cast<size_t>(d)] = stride;
        stride *= t.shape[static_cast<size_t>(d)];
    }
    return t;
}

int64_t TensorView::numel() const {
    if (ndim == 0) return data ? 1 : 0;
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[static_cast<size_t>(d)];
    return n;
}

bool TensorView::is_contiguous() const {
    int64_t stride = 1;
    for (int d = ndim - 1; d >= 0; --d) {
        if (shape[static_cast<size_t>(d)] != 1 && strides[static_cast<size_t>(d)] != stride) return false;
        stride *= shape[static_cast<size_t>(d)];
    }
    return true;
}

std::string TensorView::to_string() const {
    std::ostringstream os;
    os << dtype_name(dtype) << "[";
    for (int d = 0; d < ndim; ++d) os << (d ? ", " : "") << shape[static_cast<size_t>(d)];
    os << "] " << device.to_string();
    return os.str();
}

bool same_shape(const TensorView& a, const TensorView& b) {
    if (a.ndim != b.ndim) return false;
    for (int d = 0; d < a.ndim; ++d)
        if (a.shape[static_cast<size_t>(d)] != b.shape[static_cast<size_t>(d)]) return false;
    return true;
}

}  // namespace moe
