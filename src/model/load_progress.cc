#include "model/load_progress.h"

#include <fmt/format.h>

#include <algorithm>

namespace moe {

namespace {

constexpr auto kQuiet = std::chrono::seconds(1);     // nothing before this (a small model)
constexpr auto kInterval = std::chrono::seconds(2);  // at least this often after it

std::string gib(uint64_t bytes) {
    return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
}

}  // namespace

LoadProgress::LoadProgress(uint64_t total_bytes, std::function<void(const std::string&)> emit,
                           std::function<Clock::time_point()> now)
    : total_(total_bytes), emit_(std::move(emit)), now_(std::move(now)) {
    start_ = now_();
    last_emit_ = start_;
}

void LoadProgress::add(uint64_t bytes) {
    done_ = std::min(total_, done_ + bytes);
    if (total_ == 0) return;
    const auto t = now_();
    const int percent = static_cast<int>(done_ * 100 / total_);
    const int decile = percent / 10;
    if (t - start_ < kQuiet) {
        last_decile_ = decile;  // steps passed while quiet are not announced late
        return;
    }
    if (decile <= last_decile_ && t - last_emit_ < kInterval) return;
    last_decile_ = decile;
    last_emit_ = t;
    const double seconds = std::chrono::duration<double>(t - start_).count();
    const double mib_s = static_cast<double>(done_) / (1024.0 * 1024.0) / std::max(seconds, 1e-9);
    emit_(fmt::format("loading weights: {}% ({} of {} mapped and copied/packed, {:.1f} s, {:.0f} MiB/s)", percent,
                      gib(done_), gib(total_), seconds, mib_s));
}

}  // namespace moe
