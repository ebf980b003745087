// Parsing JSON from files without trusting their shape: one place that bounds nesting depth
// and size, used by every loader (config.json, generation_config.json, the safetensors header,
// model.safetensors.index.json, tokenizer.json, vocab.json, tokenizer_config.json).
//
// nlohmann's parser is iterative, but dump(), comparisons and our own walks over a value
// recurse, so a file nested 100k levels deep overflows the stack somewhere later. The depth is
// checked before parsing by a scan of the brackets outside strings, which costs one pass and
// allocates nothing.
#pragma once

#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "moe/status.h"

namespace moe {

// No model or tokenizer file nests deeper than ~8 levels; 64 leaves room and keeps every
// recursive walk far from the stack limit.
inline constexpr int kMaxJsonDepth = 64;

// kInvalidArgument naming `origin`, the limit and the byte offset when `text` has arrays or
// objects nested deeper than `max_depth`. Only counts brackets outside strings; malformed JSON
// is left to the parser (which stops at the first error, before any depth the scan missed).
Status check_json_depth(std::string_view text, const std::string& origin, int max_depth = kMaxJsonDepth);

// check_json_depth, then nlohmann::json::parse. Syntax errors are kInvalidArgument naming `origin`.
StatusOr<nlohmann::json> parse_json_bounded(std::string_view text, const std::string& origin,
                                            int max_depth = kMaxJsonDepth);

// Reads a whole regular file of at most `max_bytes`. FIFOs, sockets, devices and directories
// are refused without blocking (opened with O_NONBLOCK, then fstat). Errors: kNotFound when the
// file does not exist, kInvalidArgument when it is not a regular file or is larger than
// `max_bytes` (message names the path and the limit), kDataLoss on a short read.
StatusOr<std::string> read_regular_file(const std::filesystem::path& path, size_t max_bytes);

// Opens `path` read-only for a loader that maps or reads it itself: same refusals as
// read_regular_file (no size limit). Returns the descriptor (O_CLOEXEC, blocking mode
// restored); the caller closes it.
StatusOr<int> open_regular_file(const std::filesystem::path& path);

// read_regular_file + parse_json_bounded.
StatusOr<nlohmann::json> read_json_file(const std::filesystem::path& path, size_t max_bytes,
                                        int max_depth = kMaxJsonDepth);

}  // namespace moe
