// Shared by the fuzz targets: a per-process scratch directory the loaders read files from
// (they take paths: the file is the interface under test, FIFO checks and all).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/logging.h"

namespace moe::fuzz {

// Loaders log warnings (e.g. copied misaligned tensors); at thousands of inputs a second that
// is all the fuzzer would do. Every target calls this from LLVMFuzzerInitialize.
inline int quiet_logs() {
    moe::log::set_level("off");
    return 0;
}

// /dev/shm when it exists (no disk writes per execution), else the temp directory.
inline const std::filesystem::path& scratch_dir() {
    static const std::filesystem::path dir = [] {
        std::error_code ec;
        std::filesystem::path base = std::filesystem::is_directory("/dev/shm", ec)
                                         ? std::filesystem::path("/dev/shm")
                                         : std::filesystem::temp_directory_path();
        std::filesystem::path d = base / ("moe_fuzz_" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        return d;
    }();
    return dir;
}

inline void write_file(const std::filesystem::path& p, std::string_view bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Splits the input at each "\n#--\n" into at most `max_parts` parts (the last takes the rest):
// one fuzz input can then hold several files (config.json + generation_config.json, ...).
inline std::vector<std::string_view> split_parts(const uint8_t* data, size_t size, size_t max_parts) {
    std::string_view all(reinterpret_cast<const char*>(data), size);
    static constexpr std::string_view kSep = "\n#--\n";
    std::vector<std::string_view> parts;
    while (parts.size() + 1 < max_parts) {
        const size_t at = all.find(kSep);
        if (at == std::string_view::npos) break;
        parts.push_back(all.substr(0, at));
        all.remove_prefix(at + kSep.size());
    }
    parts.push_back(all);
    return parts;
}

}  // namespace moe::fuzz
