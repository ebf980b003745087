// Bounds on what a tokenizer file may ask for, so that a hostile tokenizer.json gets an error at
// load instead of exhausting the stack or memory later.
#pragma once

#include <cstddef>

namespace moe::tok {

// `Sequence` normalizers, pre-tokenizers, decoders and post-processors nest at most this deep
// (published tokenizers nest 1 or 2 levels). Each level is parsed recursively.
inline constexpr int kMaxSequenceDepth = 16;

// A `Replace` normalizer or decoder may make text at most this many times longer: its content
// may hold at most kMaxReplaceGrowth bytes per byte of the shortest text its pattern matches
// (1 byte for a regex), and the product over a normalizer Sequence is bounded the same way.
// Published tokenizers replace " " by "\u2581" (3x).
inline constexpr double kMaxReplaceGrowth = 16.0;

// At run time one normalize() of n bytes may produce at most
// min(kMaxNormalizedBytes, kMaxReplaceGrowth * n + kNormalizedSlackBytes) bytes (the slack covers
// Prepend and Unicode decompositions of short inputs); past it the text is refused.
inline constexpr size_t kNormalizedSlackBytes = 4096;
inline constexpr size_t kMaxNormalizedBytes = size_t{256} << 20;

inline size_t normalized_byte_limit(size_t input_bytes) {
    const size_t grown = input_bytes > (kMaxNormalizedBytes / static_cast<size_t>(kMaxReplaceGrowth))
                             ? kMaxNormalizedBytes
                             : input_bytes * static_cast<size_t>(kMaxReplaceGrowth) + kNormalizedSlackBytes;
    return grown < kMaxNormalizedBytes ? grown : kMaxNormalizedBytes;
}

}  // namespace moe::tok
