// Loads a reference fixture made by tests/reference/make_fixtures.py: a tiny Hugging Face model
// plus the logits transformers computed for it.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "model/batch.h"
#include "model/kv_cache.h"
#include "model/moe_transformer.h"
#include "model/safetensors.h"
#include "moe/check.h"

namespace moe::testing {

inline std::filesystem::path fixtures_dir() {
    return std::filesystem::path(MOE_SOURCE_DIR) / "tests/reference/fixtures";
}

inline std::vector<std::string> fixture_names() {
    std::vector<std::string> names;
    if (!std::filesystem::exists(fixtures_dir())) return names;
    for (const auto& e : std::filesystem::directory_iterator(fixtures_dir()))
        if (std::filesystem::exists(e.path() / "reference.json")) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

struct Fixture {
    std::filesystem::path dir;
    std::string family;
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::vector<int32_t>> greedy;
    std::unique_ptr<SafetensorsFile> tensors;

    // f32 [rows, vocab] tensor "prefill_logits.<i>" or "greedy_logits.<i>".
    const float* logits(const std::string& kind, size_t i, int64_t* rows, int64_t* vocab) const {
        const auto& t = tensors->tensors().at(kind + "_logits." + std::to_string(i));
        *rows = t.shape[0];
        *vocab = t.shape[1];
        return static_cast<const float*>(t.data);
    }
};

// Fixtures of quantized checkpoints (tests/reference/quantize_mxfp4.py), compared at their own
// tolerances: not in fixture_names().
inline std::filesystem::path quantized_fixtures_dir() {
    return std::filesystem::path(MOE_SOURCE_DIR) / "tests/reference/fixtures_quant";
}

inline Fixture load_fixture_at(const std::filesystem::path& dir) {
    Fixture f;
    f.dir = dir;
    std::ifstream in(f.dir / "reference.json");
    nlohmann::json j = nlohmann::json::parse(in);
    f.family = j.at("family").get<std::string>();
    f.prompts = j.at("prompts").get<std::vector<std::vector<int32_t>>>();
    f.greedy = j.at("greedy").get<std::vector<std::vector<int32_t>>>();
    auto t = SafetensorsFile::open(f.dir / "reference.safetensors");
    if (!t.ok()) throw std::runtime_error(t.status().to_string());
    f.tensors = std::move(t).value();
    return f;
}

inline Fixture load_fixture(const std::string& name) {
    return load_fixture_at(fixtures_dir() / name);
}

// Hands out cache blocks in a shuffled order so that no sequence gets contiguous blocks: a
// forward pass that ignored the block table would read the wrong keys.
class ShuffledBlocks {
public:
    ShuffledBlocks(int64_t num_blocks, uint32_t seed) {
        for (int64_t b = 0; b < num_blocks; ++b) free_.push_back(static_cast<int32_t>(b));
        std::mt19937 rng(seed);
        std::shuffle(free_.begin(), free_.end(), rng);
    }
    // Grows `table` to cover `num_tokens` tokens of block_size.
    void cover(std::vector<int32_t>& table, int64_t num_tokens, int64_t block_size) {
        while (static_cast<int64_t>(table.size()) * block_size < num_tokens) {
            table.push_back(free_.back());
            free_.pop_back();
        }
    }

private:
    std::vector<int32_t> free_;
};

// max |a - b| over max |ref|
inline double max_rel_error(const float* a, const float* ref, int64_t n) {
    double max_diff = 0, max_ref = 0;
    for (int64_t i = 0; i < n; ++i) {
        max_diff = std::max(max_diff, std::abs(static_cast<double>(a[i]) - ref[i]));
        max_ref = std::max(max_ref, std::abs(static_cast<double>(ref[i])));
    }
    return max_ref > 0 ? max_diff / max_ref : max_diff;
}

inline int32_t argmax(const float* v, int64_t n) {
    return static_cast<int32_t>(std::max_element(v, v + n) - v);
}

}  // namespace moe::testing
