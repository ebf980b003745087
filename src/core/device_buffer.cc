#include "moe/backend.h"

namespace moe {

StatusOr<DeviceBuffer> DeviceBuffer::allocate(Backend& backend, size_t bytes) {
    MOE_ASSIGN_OR_RETURN(void* p, backend.allocate(bytes));
    DeviceBuffer b;
    b.backend_ = &backend;
    b.data_ = p;
    b.size_ = bytes;
    return b;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : backend_(other.backend_), data_(other.data_), size_(other.size_) {
    other.backend_ = nullptr;
    other.data_ = nullptr;
    other.size_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
        reset();
        backend_ = other.backend_;
        data_ = other.data_;
        size_ = other.size_;
        other.backend_ = nullptr;
        other.data_ = nullptr;
        other.size_ = 0;
    }
    return *this;
}

DeviceBuffer::~DeviceBuffer() {
    reset();
}

void DeviceBuffer::reset() {
    if (backend_ != nullptr && data_ != nullptr) backend_->deallocate(data_);
    backend_ = nullptr;
    data_ = nullptr;
    size_ = 0;
}

}  // namespace moe
