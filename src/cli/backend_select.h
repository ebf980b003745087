// Picks the backend a command runs on: --device cpu | cuda[:N].
#pragma once

#include <memory>
#include <string>

#include "moe/backend.h"

namespace moe::cli {

// "cpu", "cuda", "cuda:1". Unavailable with a clear reason when the build has no CUDA or no
// GPU answers.
StatusOr<std::unique_ptr<Backend>> make_backend(const std::string& device, int cpu_threads);

}  // namespace moe::cli
