// One named spdlog logger per subsystem: server, sched, engine, kv, model, ops, cuda, comm, cli.
// Info is for lifecycle events only; per-request detail goes to debug. Ops and kernels never log.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string_view>

namespace moe::log {

// The logger named `name`, created on first use (stderr, shared format and level).
std::shared_ptr<spdlog::logger> get(std::string_view name);

// Sets the level of every logger, present and future ("trace".."off"). Returns false if unknown.
bool set_level(std::string_view level);

inline spdlog::logger& model() {
    static auto l = get("model");
    return *l;
}
inline spdlog::logger& engine() {
    static auto l = get("engine");
    return *l;
}
inline spdlog::logger& kv() {
    static auto l = get("kv");
    return *l;
}
inline spdlog::logger& cli() {
    static auto l = get("cli");
    return *l;
}
inline spdlog::logger& backend() {
    static auto l = get("backend");
    return *l;
}

}  // namespace moe::log
