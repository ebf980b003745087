// Backend's defaults: a prepared weight that is a plain copy on the device, no memory report.
#include "moe/backend.h"

#include <algorithm>
#include <string>
#include <utility>

namespace moe {
namespace {

// The default form: the weight's own row-major values, copied into the backend's memory.
class PlainWeight final : public PreparedWeight {
public:
    PlainWeight(const Backend& backend, const TensorView& logical, DeviceBuffer buffer)
        : PreparedWeight(backend, logical, buffer.size()), buffer_(std::move(buffer)) {}

private:
    DeviceBuffer buffer_;
};

}  // namespace

Status check_weight_to_prepare(const std::string& name, const TensorView& w) {
    if (w.data == nullptr) return invalid_argument("prepare_weight " + name + ": no data (null pointer)");
    if (w.device.kind != DeviceKind::kCpu)
        return invalid_argument("prepare_weight " + name + ": must be in host memory, is on " + w.device.to_string());
    if (!w.is_contiguous())
        return invalid_argument("prepare_weight " + name + ": " + w.to_string() + " is not contiguous");
    return ok_status();
}

StatusOr<std::unique_ptr<PreparedWeight>> Backend::prepare_weight(const std::string& name, const TensorView& w,
                                                                  WeightUse use) {
    (void)use;
    MOE_RETURN_IF_ERROR(check_weight_to_prepare(name, w));
    MOE_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(*this, std::max<size_t>(w.nbytes(), 1)));
    MOE_RETURN_IF_ERROR(
        copy(buf.data(), device(), w.data, Device{}, w.nbytes()).with_context("prepare_weight " + name));
    TensorView logical = w;
    logical.data = buf.data();
    logical.device = device();
    return std::unique_ptr<PreparedWeight>(std::make_unique<PlainWeight>(*this, logical, std::move(buf)));
}

StatusOr<std::unique_ptr<PreparedWeight>> Backend::prepare_quantized_weight(const std::string& name,
                                                                            const QuantizedTensor& q, WeightUse) {
    MOE_RETURN_IF_ERROR(validate_quantized(q, name));
    return unimplemented(std::string("backend ") + this->name() + " cannot hold " + quant_format_name(q.format) +
                         " weights (" + name + ")");
}

StatusOr<MemoryInfo> Backend::memory_info() const {
    return unimplemented(std::string("backend ") + name() + " does not report its memory");
}

}  // namespace moe
