// Helpers for model tests: a scratch directory and a minimal safetensors writer, so hostile and
// valid files can be built byte by byte.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moe::testing {

class ScratchDir {
public:
    ScratchDir() {
        static std::atomic<int> counter{0};
        path_ = std::filesystem::temp_directory_path() /
                ("moe_model_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    ~ScratchDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

// Writes `header_len` (little-endian) + `header` + `data`.
inline void write_raw(const std::filesystem::path& p, uint64_t header_len, const std::string& header,
                      const std::string& data) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(header_len >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out << header << data;
}

inline void write_raw(const std::filesystem::path& p, const std::string& header, const std::string& data) {
    write_raw(p, header.size(), header, data);
}

struct TestTensor {
    std::string name;
    std::string dtype;  // "F32", "BF16", ...
    std::vector<int64_t> shape;
    std::string bytes;  // empty: zero-filled to the shape's size
};

inline size_t test_dtype_size(const std::string& d) {
    if (d == "F32" || d == "I32") return 4;
    if (d == "BF16" || d == "F16") return 2;
    if (d == "I64") return 8;
    return 1;
}

// A well-formed file holding `tensors` back to back.
inline void write_safetensors(const std::filesystem::path& p, const std::vector<TestTensor>& tensors) {
    nlohmann::json h = nlohmann::json::object();
    h["__metadata__"] = {{"format", "pt"}};
    std::string data;
    for (const auto& t : tensors) {
        size_t n = test_dtype_size(t.dtype);
        for (int64_t d : t.shape) n *= static_cast<size_t>(d);
        std::string bytes = t.bytes.empty() ? std::string(n, '\0') : t.bytes;
        h[t.name] = {
            {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + bytes.size()}}};
        data += bytes;
    }
    std::string header = h.dump();
    header.append((8 - header.size() % 8) % 8, ' ');  // the reference writer pads to 8 bytes
    write_raw(p, header, data);
}

}  // namespace moe::testing
