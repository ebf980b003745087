// moeserve: one binary, several subcommands (see command.h).
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "cli/command.h"
#include "core/logging.h"

namespace moe::cli {
std::vector<std::pair<std::string, RegisterFn>>& registry() {
    static std::vector<std::pair<std::string, RegisterFn>> r;
    return r;
}
}  // namespace moe::cli

int main(int argc, char** argv) {
    CLI::App app{"moeserve: a Mixture-of-Experts inference server"};
    app.require_subcommand(1);
    app.fallthrough();  // global flags (--log-level) may follow the subcommand too
    app.set_version_flag("--version", "moeserve 0.1.0");
    std::string log_level = "info";
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")->envname("MOESERVE_LOG_LEVEL");
    // MOESERVE_COMPRESS_EXPERTS: the earlier name of MOESERVE_COMPRESS_WEIGHTS (--compress-weights),
    // still honoured when the new one is not set.
    if (const char* old = std::getenv("MOESERVE_COMPRESS_EXPERTS"); old != nullptr)
        setenv("MOESERVE_COMPRESS_WEIGHTS", old, /*overwrite=*/0);
    int exit_code = 0;
    auto& reg = moe::cli::registry();
    std::sort(reg.begin(), reg.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [name, fn] : reg) fn(app, exit_code);
    app.parse_complete_callback([&] {
        if (!moe::log::set_level(log_level)) std::fprintf(stderr, "unknown --log-level %s\n", log_level.c_str());
    });
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    return exit_code;
}
