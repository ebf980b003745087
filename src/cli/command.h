// Subcommands of the moeserve binary. Each lives in its own cmd_<name>.cc and registers itself
// with a static Registrar, so adding a command touches no other file.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace moe::cli {

// A registration function adds a subcommand to `app`. The subcommand's callback sets
// `exit_code` (0 on success) when it runs.
using RegisterFn = std::function<void(CLI::App& app, int& exit_code)>;

std::vector<std::pair<std::string, RegisterFn>>& registry();

struct Registrar {
    Registrar(const std::string& name, RegisterFn fn) { registry().emplace_back(name, std::move(fn)); }
};

}  // namespace moe::cli
