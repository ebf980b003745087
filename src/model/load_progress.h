// Progress of a long model load, for the log: bytes of the weight files mapped and copied or
// packed into backend memory, as a percentage of the total, every 10% or every 2 s (whichever
// comes first), once the load has run for a second (a small model logs nothing extra).
//
// Used by MoeTransformer::load through the weight source's release() hint, which the loader
// calls once per tensor after its copy or packing. Single-threaded, like the load itself.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace moe {

class LoadProgress {
public:
    using Clock = std::chrono::steady_clock;
    // `emit` receives each progress line; `now` is the clock (tests inject one).
    LoadProgress(uint64_t total_bytes, std::function<void(const std::string&)> emit,
                 std::function<Clock::time_point()> now = Clock::now);

    // `bytes` more are done.
    void add(uint64_t bytes);
    uint64_t done_bytes() const { return done_; }

private:
    uint64_t total_;
    uint64_t done_ = 0;
    std::function<void(const std::string&)> emit_;
    std::function<Clock::time_point()> now_;
    Clock::time_point start_;
    Clock::time_point last_emit_;
    int last_decile_ = 0;  // the last 10% step logged
};

}  // namespace moe
