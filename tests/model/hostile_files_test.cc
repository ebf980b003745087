// Hostile model files (#18 defects B, C, E, H): each is refused with an error that names the
// file and the limit, quickly and without a crash, a hang or an allocation in proportion to
// what the file claims.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/json_limits.h"
#include "model/config.h"
#include "model/expected_tensors.h"
#include "model/safetensors.h"
#include "model/test_files.h"
#include "model/weights.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::write_raw;
using testing::write_safetensors;

// `n` levels of `open` ... `inner` ... `close`.
std::string nest(size_t n, const std::string& open, const std::string& close, const std::string& inner) {
    std::string s;
    s.reserve(n * (open.size() + close.size()) + inner.size());
    for (size_t i = 0; i < n; ++i) s += open;
    s += inner;
    for (size_t i = 0; i < n; ++i) s += close;
    return s;
}
std::string nested_arrays(size_t n) {
    return nest(n, "[", "]", "1");
}
std::string nested_objects(size_t n) {
    return nest(n, "{\"a\":", "}", "1");
}

// `j` dumped, with the string value "@@" replaced by `raw` (a JSON text too deep to build as a value).
std::string splice(const nlohmann::json& j, const std::string& raw) {
    std::string s = j.dump();
    const size_t at = s.find("\"@@\"");
    EXPECT_NE(at, std::string::npos);
    return s.replace(at, 4, raw);
}

void write_file(const fs::path& p, const std::string& text) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
}

void expect_error(const Status& s, std::initializer_list<std::string> needles) {
    ASSERT_FALSE(s.ok()) << "accepted";
    for (const auto& n : needles)
        EXPECT_NE(s.message().find(n), std::string::npos) << "no '" << n << "' in: " << s.to_string();
}

nlohmann::json fixture_config() {
    std::ifstream in(std::string(MOE_SOURCE_DIR) + "/tests/reference/fixtures/qwen3_moe/config.json");
    return nlohmann::json::parse(in);
}

// ---- B: nesting depth ---------------------------------------------------------------------

TEST(JsonDepth, ScanCountsBracketsOutsideStringsOnly) {
    EXPECT_TRUE(check_json_depth(R"({"a": "[[[[{{{{", "b": [1, [2]]})", "x", 3).ok());
    EXPECT_TRUE(check_json_depth(R"({"a": "\"[[[[", "b": [1]})", "x", 2).ok());
    EXPECT_TRUE(check_json_depth(R"(["\\", [1]])", "x", 2).ok());  // an escaped backslash ends the string
    expect_error(check_json_depth("[[[1]]]", "f.json", 2), {"f.json", "limit of 2 levels", "byte 2"});
    EXPECT_TRUE(check_json_depth(nested_arrays(kMaxJsonDepth), "x").ok());
    expect_error(check_json_depth(nested_arrays(kMaxJsonDepth + 1), "x"), {"limit of 64"});
    auto parsed = parse_json_bounded(nested_objects(100000), "deep.json");
    expect_error(parsed.status(), {"deep.json", "nested deeper", "64"});
    expect_error(parse_json_bounded("{\"a\": ", "cut.json").status(), {"cut.json", "not valid JSON"});
}

TEST(JsonDepth, DeepConfigJsonIsRefusedNamingTheFile) {
    for (const char* key : {"hidden_size", "eos_token_id", "architectures"}) {
        SCOPED_TRACE(key);
        ScratchDir dir;
        nlohmann::json j = fixture_config();
        j[key] = "@@";
        write_file(dir / "config.json", splice(j, nested_arrays(100000)));
        expect_error(load_model_config(dir.path()).status(),
                     {(dir / "config.json").string(), "nested deeper than the limit of 64"});
    }
}

TEST(JsonDepth, DeepGenerationConfigIsRefused) {
    ScratchDir dir;
    write_file(dir / "config.json", fixture_config().dump());
    ASSERT_TRUE(load_model_config(dir.path()).ok());
    nlohmann::json g = {{"eos_token_id", "@@"}};
    write_file(dir / "generation_config.json", splice(g, nested_arrays(100000)));
    expect_error(load_model_config(dir.path()).status(), {"generation_config.json", "nested deeper"});
}

TEST(JsonDepth, DeepSafetensorsHeaderIsRefused) {
    const std::string good_entry = R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})";
    struct Case {
        const char* what;
        std::string header;
    };
    const Case cases[] = {
        {"__metadata__", "{\"__metadata__\": " + nested_objects(300000) + ", \"t\": " + good_entry + "}"},
        {"shape", R"({"t": {"dtype": "F32", "shape": )" + nested_arrays(300000) + R"(, "data_offsets": [0, 4]}})"},
        {"data_offsets", R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": )" + nested_arrays(300000) + "}}"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.what);
        ScratchDir dir;
        write_raw(dir / "model.safetensors", c.header, std::string(4, '\0'));
        auto f = SafetensorsFile::open(dir / "model.safetensors");
        expect_error(f.status(), {(dir / "model.safetensors").string(), "header", "nested deeper", "64"});
        expect_error(WeightStore::open(dir.path()).status(), {"model.safetensors", "nested deeper"});
    }
}

TEST(JsonDepth, DeepIndexIsRefused) {
    ScratchDir dir;
    write_safetensors(dir / "s1.safetensors", {{"t", "F32", {1}, ""}});
    nlohmann::json idx = {{"metadata", "@@"}, {"weight_map", {{"t", "s1.safetensors"}}}};
    write_file(dir / kWeightsIndexFile, splice(idx, nested_objects(300000)));
    expect_error(WeightStore::open(dir.path()).status(), {kWeightsIndexFile, "nested deeper"});
}

// ---- C: non-regular files -----------------------------------------------------------------

// Runs `load` on another thread; a load that blocks on the FIFO is released by opening its write
// end (so the test fails instead of hanging) and reported.
Status load_without_blocking(const fs::path& fifo, const std::function<Status()>& load) {
    auto done = std::async(std::launch::async, load);
    if (done.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
        ADD_FAILURE() << "loading blocked on the FIFO " << fifo;
        const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
        if (fd >= 0) ::close(fd);
    }
    return done.get();
}

TEST(NonRegularFiles, FifoInPlaceOfAnyModelFileIsRefusedAtOnce) {
    const char* names[] = {"model.safetensors", "model.safetensors.index.json", "config.json",
                           "generation_config.json"};
    for (const char* name : names) {
        SCOPED_TRACE(name);
        ScratchDir dir;
        write_file(dir / "config.json", fixture_config().dump());
        if (std::string(name) != "model.safetensors") write_safetensors(dir / "model.safetensors", {});
        fs::remove(dir / name);
        ASSERT_EQ(::mkfifo((dir / name).c_str(), 0600), 0) << std::strerror(errno);
        const auto start = std::chrono::steady_clock::now();
        Status s = load_without_blocking(dir / name, [&] {
            if (std::string(name).find("config") != std::string::npos) return load_model_config(dir.path()).status();
            return WeightStore::open(dir.path()).status();
        });
        expect_error(s, {name, "not a regular file", "FIFO"});
        EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
    }
    ScratchDir dir;
    ASSERT_EQ(::mkfifo((dir / "x.safetensors").c_str(), 0600), 0);
    expect_error(load_without_blocking(dir / "x.safetensors",
                                       [&] { return SafetensorsFile::open(dir / "x.safetensors").status(); }),
                 {"x.safetensors", "not a regular file"});
}

TEST(NonRegularFiles, DirectoriesAndDevicesAreRefused) {
    ScratchDir dir;
    fs::create_directories(dir / "model.safetensors");
    expect_error(SafetensorsFile::open(dir / "model.safetensors").status(), {"not a regular file", "directory"});
    expect_error(read_regular_file("/dev/zero", 1 << 20).status(), {"/dev/zero", "character device"});
    expect_error(read_regular_file(dir / "missing.json", 10).status(), {"missing.json", "no such file"});
    write_file(dir / "big.json", std::string(100, ' '));
    expect_error(read_regular_file(dir / "big.json", 99).status(), {"big.json", "100 bytes", "limit of 99"});
}

// ---- E: misaligned tensors ----------------------------------------------------------------

TEST(Misaligned, TensorsOffTheirAlignmentAreCopiedIntoAlignedMemory) {
    ScratchDir dir;
    const float values[3] = {1.5f, -2.25f, 3.0f};
    std::string bytes(12, '\0');
    std::memcpy(bytes.data(), values, 12);
    const std::string raw(reinterpret_cast<const char*>(values), 12);
    std::string header = R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},)"
                         R"( "v": {"dtype": "F32", "shape": [0], "data_offsets": [12, 12]}})";
    // 8 + header length = 1 (mod 4): every F32 in the data region sits off its alignment.
    while ((8 + header.size()) % 4 != 1) header += ' ';
    write_raw(dir / "model.safetensors", header, bytes);
    auto f = SafetensorsFile::open(dir / "model.safetensors");
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    const TensorInfo& t = (*f)->tensors().at("w");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % alignof(float), 0u) << "tensor left misaligned";
    ASSERT_EQ(t.nbytes, 12u);
    EXPECT_EQ(std::memcmp(t.data, values, 12), 0);
    EXPECT_EQ((*f)->owned_bytes(), 12u);
    // A padded (aligned) file is still served from the mapping, not copied.
    write_safetensors(dir / "aligned.safetensors", {{"w", "F32", {3}, raw}});
    auto g = SafetensorsFile::open(dir / "aligned.safetensors");
    ASSERT_TRUE(g.ok()) << g.status().to_string();
    EXPECT_EQ((*g)->owned_bytes(), 0u);
    EXPECT_EQ(std::memcmp((*g)->tensors().at("w").data, values, 12), 0);
}

// ---- H: claimed sizes do not drive allocations --------------------------------------------

// Every size at the limit config.json accepts: ~12M expected tensors.
nlohmann::json max_config() {
    return {{"architectures", {"MixtralForCausalLM"}},
            {"vocab_size", 1 << 24},
            {"hidden_size", 65536},
            {"num_hidden_layers", 1024},
            {"num_attention_heads", 1024},
            {"num_key_value_heads", 1024},
            {"num_local_experts", 4096},
            {"num_experts_per_tok", 2},
            {"intermediate_size", 1 << 20},
            {"max_position_embeddings", 1 << 30}};
}

TEST(ClaimedSizes, CheckWeightsStopsAtTheFirstMissingTensorInConstantMemory) {
    ScratchDir dir;
    write_file(dir / "config.json", max_config().dump());
    auto c = load_model_config(dir.path());
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    write_safetensors(dir / "model.safetensors", {{"x", "F32", {4}, ""}});
    auto w = WeightStore::open(dir.path());
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    rusage before{};
    ::getrusage(RUSAGE_SELF, &before);
    const auto start = std::chrono::steady_clock::now();
    const Status s = check_weights(*c, *w);
    const auto took = std::chrono::steady_clock::now() - start;
    rusage after{};
    ::getrusage(RUSAGE_SELF, &after);
    EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.to_string();
    EXPECT_NE(s.message().find("model.embed_tokens.weight"), std::string::npos) << s.to_string();
    EXPECT_LT(took, std::chrono::milliseconds(500));
    EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 64 * 1024) << "KiB of peak RSS added";  // was 2.2 GB
    // The visitor sees the same order as the list, and stops when told to.
    int seen = 0;
    for_each_expected_tensor(*c, [&](const ExpectedTensor& e) {
        EXPECT_EQ(e.name, seen == 0 ? "model.embed_tokens.weight" : "model.layers.0.input_layernorm.weight");
        return ++seen < 2;
    });
    EXPECT_EQ(seen, 2);
}

}  // namespace
}  // namespace moe
