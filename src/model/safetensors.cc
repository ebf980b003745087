#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/json_limits.h"
#include "core/logging.h"

namespace moe {

std::string shape_to_string(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    return s + "]";
}

namespace {

// Closes the descriptor on every path out of open().
struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

// Reads a non-negative integer that fits in uint64 from a JSON value; false otherwise.
bool as_u64(const nlohmann::json& v, uint64_t* out) {
    if (v.is_number_unsigned()) {
        *out = v.get<uint64_t>();
        return true;
    }
    if (v.is_number_integer()) {
        int64_t x = v.get<int64_t>();
        if (x < 0) return false;
        *out = static_cast<uint64_t>(x);
        return true;
    }
    return false;
}

}  // namespace

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::filesystem::path& path) {
    const std::string name = path.string();
    Fd fd;
    // Refuses FIFOs and devices without blocking (a FIFO would hang open() forever).
    MOE_ASSIGN_OR_RETURN(fd.fd, open_regular_file(path));
    struct stat st {};
    if (::fstat(fd.fd, &st) != 0) return internal_error(name + ": fstat failed: " + std::strerror(errno));
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size < 8) {
        return data_loss(name + ": truncated: " + std::to_string(size) +
                         " bytes, shorter than the 8-byte header length");
    }

    std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
    f->path_ = path;
    f->size_ = size;
    f->map_ = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);  // pages mapped on use; see populate()
    if (f->map_ == MAP_FAILED) {
        f->map_ = nullptr;
        return internal_error(name + ": mmap of " + std::to_string(size) + " bytes failed: " + std::strerror(errno));
    }
    const auto* base = static_cast<const unsigned char*>(f->map_);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];  // little-endian on any host
    if (header_len > size - 8) {
        return data_loss(name + ": header length " + std::to_string(header_len) + " exceeds the file size " +
                         std::to_string(size) + " - 8");
    }
    if (header_len > kMaxSafetensorsHeaderBytes) {
        return invalid_argument(name + ": header length " + std::to_string(header_len) + " exceeds the limit of " +
                                std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
    }
    MOE_RETURN_IF_ERROR(f->parse_header(reinterpret_cast<const char*>(base + 8), header_len));
    if (f->owned_bytes_ > 0) {
        log::model().warn("{}: header length {} leaves tensors off their element alignment; copied {} bytes of them",
                          name, header_len, f->owned_bytes_);
    }
    return f;
}

Status SafetensorsFile::parse_header(const char* header, uint64_t header_len) {
    const std::string name = path_.string();
    MOE_RETURN_IF_ERROR(check_json_depth(std::string_view(header, header_len), name + ": header"));
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(header, header + header_len);
    } catch (const nlohmann::json::exception& e) {
        return invalid_argument(name + ": header is not valid JSON: " + e.what());
    }
    if (!j.is_object())
        return invalid_argument(name + ": header must be a JSON object, got " + std::string(j.type_name()));

    const uint64_t data_start = 8 + header_len;
    const uint64_t data_len = size_ - data_start;
    const auto* data_base = static_cast<const char*>(map_) + data_start;
    struct Span {
        uint64_t begin, end;
        const std::string* name;
    };
    std::vector<Span> spans;
    spans.reserve(j.size());

    for (const auto& [key, v] : j.items()) {
        if (key == "__metadata__") {
            if (!v.is_object()) return invalid_argument(name + ": __metadata__ must be a JSON object");
            for (const auto& [mk, mv] : v.items()) metadata_[mk] = mv.is_string() ? mv.get<std::string>() : mv.dump();
            continue;
        }
        const std::string where = name + ": tensor " + key;
        if (!v.is_object()) return invalid_argument(where + ": entry must be a JSON object");
        if (!v.contains("dtype") || !v.at("dtype").is_string())
            return invalid_argument(where + ": dtype missing or not a string");
        const std::string dtype_str = v.at("dtype").get<std::string>();
        // Only the upper-case safetensors spellings; parse_dtype also knows our lower-case names.
        const bool upper = !dtype_str.empty() && std::none_of(dtype_str.begin(), dtype_str.end(), ::islower);
        const auto dtype = upper ? parse_dtype(dtype_str) : std::nullopt;
        if (!dtype) {
            return invalid_argument(where + ": dtype \"" + dtype_str +
                                    "\" is not supported (F32, BF16, F16, I32, I64, U8)");
        }
        if (!v.contains("shape") || !v.at("shape").is_array())
            return invalid_argument(where + ": shape missing or not an array");
        if (v.at("shape").size() > 8) return invalid_argument(where + ": shape has more than 8 dimensions");
        TensorInfo t;
        t.name = key;
        t.dtype = *dtype;
        t.file = name;
        // Element count times element size, refusing anything that would overflow 64 bits.
        uint64_t nbytes = dtype_size(*dtype);
        for (const auto& d : v.at("shape")) {
            uint64_t dim = 0;
            if (!as_u64(d, &dim) || dim > static_cast<uint64_t>(INT64_MAX))
                return invalid_argument(where + ": shape " + v.at("shape").dump() + " must hold non-negative integers");
            if (dim != 0 && nbytes > UINT64_MAX / dim)
                return invalid_argument(where + ": shape " + v.at("shape").dump() + " overflows 64-bit byte size");
            nbytes *= dim;
            t.shape.push_back(static_cast<int64_t>(dim));
        }
        const auto& offs = v.contains("data_offsets") ? v.at("data_offsets") : nlohmann::json();
        uint64_t begin = 0, end = 0;
        if (!offs.is_array() || offs.size() != 2 || !as_u64(offs[0], &begin) || !as_u64(offs[1], &end))
            return invalid_argument(where + ": data_offsets must be [begin, end] with non-negative integers");
        if (end < begin) return invalid_argument(where + ": data_offsets " + offs.dump() + " end before begin");
        if (end > data_len) {
            return data_loss(where + ": data_offsets " + offs.dump() + " past the end of the data region (" +
                             std::to_string(data_len) + " bytes)");
        }
        if (end - begin != nbytes) {
            return invalid_argument(where + ": data_offsets span " + std::to_string(end - begin) + " bytes but shape " +
                                    shape_to_string(t.shape) + " of " + dtype_name(*dtype) + " needs " +
                                    std::to_string(nbytes));
        }
        t.data = data_base + begin;
        t.nbytes = static_cast<size_t>(nbytes);
        // A header length that is not a multiple of 8 (the reference writer pads; others need
        // not) leaves every tensor after it off its element alignment, and typed loads from
        // such a pointer are undefined behaviour. Copy those into aligned memory we own.
        if (t.nbytes > 0 && reinterpret_cast<uintptr_t>(t.data) % dtype_size(*dtype) != 0) {
            std::unique_ptr<std::byte[], AlignedFree> copy(
                static_cast<std::byte*>(::operator new (t.nbytes, std::align_val_t{kOwnedAlignment})));
            std::memcpy(copy.get(), t.data, t.nbytes);
            t.data = copy.get();
            owned_.push_back(std::move(copy));
            owned_bytes_ += t.nbytes;
        }
        auto [it, inserted] = tensors_.emplace(key, std::move(t));
        if (!inserted) return invalid_argument(where + ": listed twice");
        if (end > begin) spans.push_back({begin, end, &it->first});
    }

    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
    for (size_t i = 1; i < spans.size(); ++i) {
        if (spans[i].begin < spans[i - 1].end) {
            return invalid_argument(name + ": tensor " + *spans[i].name + " data_offsets [" +
                                    std::to_string(spans[i].begin) + ", " + std::to_string(spans[i].end) +
                                    ") overlap tensor " + *spans[i - 1].name + " [" +
                                    std::to_string(spans[i - 1].begin) + ", " + std::to_string(spans[i - 1].end) + ")");
        }
    }
    return ok_status();
}

SafetensorsFile::~SafetensorsFile() {
    if (map_) ::munmap(map_, size_);
}

void SafetensorsFile::populate() const {
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif
    if (map_ == nullptr || size_ == 0) return;
    if (::madvise(map_, size_, MADV_POPULATE_READ) != 0) ::madvise(map_, size_, MADV_WILLNEED);
}

void SafetensorsFile::release(const void* data, size_t bytes) const {
    if (map_ == nullptr || size_ == 0 || data == nullptr) return;
    const auto base = reinterpret_cast<uintptr_t>(map_);
    const auto begin = reinterpret_cast<uintptr_t>(data);
    if (begin < base || begin - base > size_ || bytes > size_ - (begin - base)) return;
    const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t first = (begin + page - 1) / page * page;  // whole pages only: neighbours
    const uintptr_t last = (begin + bytes) / page * page;      // may still be in use
    if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

}  // namespace moe
