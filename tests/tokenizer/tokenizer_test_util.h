// Helpers shared by the tokenizer tests: the test data paths (tests/data), the llama.cpp vector format,
// and tokenizers loaded once per process.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "moe/tokenizer.h"

namespace moe::testing {

inline std::string test_data(const std::string& rel) {
    return std::string(MOE_TEST_DATA_DIR) + "/" + rel;
}
inline std::string source_path(const std::string& rel) {
    return std::string(MOE_SOURCE_DIR) + "/" + rel;
}

// A missing or unreadable file throws: GoogleTest fails the test with the message instead of
// the test comparing two empty lists and passing.
inline std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open test data file " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// `.inp`: strings each followed by "\n__ggml_vocab_test__\n".
inline std::vector<std::string> read_inp(const std::string& path) {
    const std::string data = read_all(path);
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < data.size()) {
        const size_t next = data.find(sep, pos);
        if (next == std::string::npos) break;
        out.push_back(data.substr(pos, next - pos));
        pos = next + sep.size();
    }
    return out;
}

// `.out`: one line of space-prefixed ids per string.
inline std::vector<std::vector<int32_t>> read_out(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open test data file " + path);
    std::vector<std::vector<int32_t>> out;
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::vector<int32_t> ids;
        int32_t id;
        while (ls >> id) ids.push_back(id);
        out.push_back(std::move(ids));
    }
    return out;
}

// Loads each tokenizer once; the big vocabularies take a noticeable fraction of a second. A
// tokenizer that does not load (e.g. a missing data file) throws, which fails the calling test
// with the message and lets the others run.
inline const Tokenizer& cached_tokenizer(const std::string& dir, const std::string& config = "") {
    static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
    const std::string key = dir + "|" + config;
    auto it = cache.find(key);
    if (it == cache.end()) {
        TokenizerLoadOptions opts;
        opts.config_file = config;
        auto t = Tokenizer::load(dir, opts);
        if (!t.ok()) {
            throw std::runtime_error("loading " + dir + ": " + t.status().to_string());
        }
        it = cache.emplace(key, std::move(t).value()).first;
    }
    return *it->second;
}

inline std::string ids_str(const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += " " + std::to_string(id);
    return s;
}

}  // namespace moe::testing
