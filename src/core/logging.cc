#include "core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>
#include <string>

namespace moe::log {
namespace {
std::mutex g_mu;
spdlog::level::level_enum g_level = spdlog::level::info;
}  // namespace

std::shared_ptr<spdlog::logger> get(std::string_view name) {
    std::lock_guard<std::mutex> lock(g_mu);
    std::string n(name);
    if (auto existing = spdlog::get(n)) return existing;
    auto logger = spdlog::stderr_color_mt(n);
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ [%n] %v");
    logger->set_level(g_level);
    return logger;
}

bool set_level(std::string_view level) {
    auto lvl = spdlog::level::from_str(std::string(level));
    if (lvl == spdlog::level::off && level != "off") return false;
    std::lock_guard<std::mutex> lock(g_mu);
    g_level = lvl;
    spdlog::set_level(lvl);
    return true;
}

}  // namespace moe::log
