// SHA-256 (FIPS 180-4), for prefix-cache block hashes. Small and dependency-free.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moe {

using Sha256Digest = std::array<uint8_t, 32>;

class Sha256 {
public:
    Sha256();
    void update(const void* data, size_t len);
    Sha256Digest finish();

    static Sha256Digest of(std::string_view data);
    static std::string hex(const Sha256Digest& d);

private:
    void block(const uint8_t* p);
    std::array<uint32_t, 8> h_;
    std::array<uint8_t, 64> buf_{};
    size_t buf_len_ = 0;
    uint64_t total_ = 0;
};

}  // namespace moe
