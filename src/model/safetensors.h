// Read-only, validated view of one .safetensors file (mmap'd).
//
// Format: 8-byte little-endian header length N, N bytes of JSON header, then the data region.
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end)} with offsets
// relative to the data region; "__metadata__" holds free-form strings.
//
// Everything in the header is checked before a pointer is handed out: known dtype, shape of
// non-negative integers whose byte size (overflow-checked) equals end - begin, offsets inside
// the data region, no two tensors overlapping. Tensors stored off their element alignment are
// copied into owned, aligned memory at open. Error codes:
//   kDataLoss        the file is shorter than it claims (truncated, header or offsets past the end)
//   kInvalidArgument malformed content (header not a JSON object, unknown dtype, bad shape, overlap)
//   kNotFound        the file does not exist
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "moe/dtype.h"
#include "moe/status.h"

namespace moe {

// Header lengths past this are refused: real headers are a few MB even for 1000s of tensors.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

struct TensorInfo {
    std::string name;
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
    // Into the mapping, or into memory the SafetensorsFile owns when the file left the tensor
    // off its element alignment (see SafetensorsFile::owned_bytes()); valid while the owning
    // SafetensorsFile lives. Always aligned to dtype_size(dtype).
    const void* data = nullptr;
    size_t nbytes = 0;
    std::string file;  // path of the .safetensors file holding it
};

// "[8, 64]"
std::string shape_to_string(const std::vector<int64_t>& shape);

class SafetensorsFile {
public:
    static StatusOr<std::unique_ptr<SafetensorsFile>> open(const std::filesystem::path& path);

    SafetensorsFile(const SafetensorsFile&) = delete;
    SafetensorsFile& operator=(const SafetensorsFile&) = delete;
    ~SafetensorsFile();

    const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    const std::filesystem::path& path() const { return path_; }
    uint64_t file_size() const { return size_; }
    // Bytes of tensors copied out of the mapping at open because the file stored them off their
    // element alignment (a header length that is not a multiple of the element size).
    uint64_t owned_bytes() const { return owned_bytes_; }
    // Maps every page of the file now (MADV_POPULATE_READ; MADV_WILLNEED where the kernel lacks
    // it), so that serving does not page-fault on the first use of each expert. Best effort.
    void populate() const;
    // Drops the whole pages inside [data, data + bytes) from this process's memory if that
    // range lies in this file's mapping (nothing otherwise): the mapping is private and never
    // written, so a later read maps the file's bytes back in. For tensors copied elsewhere
    // (packed weights) so that they do not count twice in the resident set.
    void release(const void* data, size_t bytes) const;

private:
    SafetensorsFile() = default;
    Status parse_header(const char* header, uint64_t header_len);

    std::filesystem::path path_;
    void* map_ = nullptr;
    uint64_t size_ = 0;
    std::map<std::string, TensorInfo> tensors_;
    std::map<std::string, std::string> metadata_;

    struct AlignedFree {
        void operator()(std::byte* p) const { ::operator delete (p, std::align_val_t{kOwnedAlignment}); }
    };
    static constexpr size_t kOwnedAlignment = 64;
    std::vector<std::unique_ptr<std::byte[], AlignedFree>> owned_;  // misaligned tensors, copied
    uint64_t owned_bytes_ = 0;
};

}  // namespace moe
