// Tokenizer throughput: encode and decode MB/s of English text on the Qwen2 vocabulary (the
// serving target is >= 1 MB/s encode per core), plus the streaming detokenizer.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "moe/tokenizer.h"

namespace {

const std::string kQwen2 = std::string(MOE_TEST_DATA_DIR) + "/tokenizers/qwen2";

const moe::Tokenizer& qwen2() {
    static std::unique_ptr<moe::Tokenizer> tok = [] {
        auto t = moe::Tokenizer::load(kQwen2);
        if (!t.ok()) {
            std::fprintf(stderr, "tokenizer_bench: %s\n", t.status().to_string().c_str());
            std::exit(1);
        }
        return std::move(t).value();
    }();
    return *tok;
}

// English prose: the repository's Markdown, repeated to 1 MB, with a generated tail of
// varied words so the word cache does not see only a few hundred distinct words.
const std::string& english_text() {
    static const std::string text = [] {
        std::string s;
        for (const char* rel : {"/README.md", "/benchmarks/served_vs_engine/README.md"}) {
            std::ifstream in(std::string(MOE_SOURCE_DIR) + rel, std::ios::binary);
            if (!in) {
                std::fprintf(stderr, "tokenizer_bench: cannot read %s%s\n", MOE_SOURCE_DIR, rel);
                std::exit(1);
            }
            std::stringstream ss;
            ss << in.rdbuf();
            s += ss.str();
        }
        static const char* kWords[] = {"the",    "model",      "server",    "returns", "tokens",  "quickly",
                                       "while",  "experts",    "route",     "each",    "request", "through",
                                       "layers", "of",         "attention", "and",     "memory",  "bandwidth",
                                       "limits", "throughput", "on",        "shared",  "machines"};
        std::mt19937 rng(7);
        std::string gen;
        while (gen.size() < (256u << 10)) {
            gen += kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
            const unsigned r = rng() % 16;
            gen += r == 0 ? ". " : r == 1 ? ", " : r == 2 ? "\n" : " ";
            if (r == 3) gen += std::to_string(rng() % 10000) + " ";
        }
        std::string out;
        while (out.size() < (1u << 20)) out += s.empty() ? gen : s + gen;
        out.resize(1u << 20);
        // Do not cut a UTF-8 character in half.
        while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
        if (!out.empty() && static_cast<unsigned char>(out.back()) >= 0xC0) out.pop_back();
        return out;
    }();
    return text;
}

void BM_Qwen2Encode(benchmark::State& state) {
    const auto& tok = qwen2();
    const std::string& text = english_text();
    size_t n = 0;
    for (auto _ : state) {
        auto ids = tok.encode(text);
        if (!ids.ok()) state.SkipWithError(ids.status().to_string().c_str());
        n = ids->size();
        benchmark::DoNotOptimize(ids);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
    state.counters["tokens"] = static_cast<double>(n);
}
BENCHMARK(BM_Qwen2Encode)->Unit(benchmark::kMillisecond)->UseRealTime();

// Random letter strings: almost every word is new, so the word cache rarely hits and every
// word goes through the full merge loop (a pessimistic bound for real text).
void BM_Qwen2EncodeUncachedWords(benchmark::State& state) {
    const auto& tok = qwen2();
    std::mt19937 rng(11);
    std::string text;
    while (text.size() < (1u << 20)) {
        const unsigned len = 3 + rng() % 8;
        for (unsigned k = 0; k < len; ++k) text.push_back(static_cast<char>('a' + rng() % 26));
        text.push_back(' ');
    }
    for (auto _ : state) {
        auto ids = tok.encode(text);
        benchmark::DoNotOptimize(ids);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_Qwen2EncodeUncachedWords)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Qwen2Decode(benchmark::State& state) {
    const auto& tok = qwen2();
    const std::string& text = english_text();
    const auto ids = tok.encode(text).value();
    for (auto _ : state) {
        auto out = tok.decode(ids);
        benchmark::DoNotOptimize(out);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_Qwen2Decode)->Unit(benchmark::kMillisecond)->UseRealTime();

// Streaming: one push per generated token, as the engine does.
void BM_Qwen2IncrementalDetokenize(benchmark::State& state) {
    const auto& tok = qwen2();
    const std::string& text = english_text();
    const auto all = tok.encode(text).value();
    const std::vector<int32_t> ids(all.begin(), all.begin() + std::min<size_t>(all.size(), 20000));
    for (auto _ : state) {
        moe::IncrementalDetokenizer detok(tok);
        size_t bytes = 0;
        for (int32_t id : ids) bytes += detok.push(id).value().size();
        benchmark::DoNotOptimize(bytes);
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ids.size()));
}
BENCHMARK(BM_Qwen2IncrementalDetokenize)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
