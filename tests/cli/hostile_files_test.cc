// The file-side probes of #18 against the moeserve binary: for each hostile file (deep JSON in
// every JSON file, a FIFO in place of a weight file, a misaligned safetensors header, nested
// tokenizer Sequences, a multiplying Replace, a config whose claimed sizes are all at the limit)
// the command ends on its own, quickly, with an exit code and a message naming the file; no
// signal, no hang, no allocation in proportion to what the file claims. A good model still
// loads and generates afterwards.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct Outcome {
    int exit_code = -1;  // -1: killed by a signal (see signal) or by the timeout
    int signal = 0;
    bool timed_out = false;
    double seconds = 0;
    long max_rss_kib = 0;
    std::string out;  // stdout and stderr
};

// Runs moeserve with `args`, killing it after `timeout_s`; the child's own peak RSS from wait4.
Outcome run(const std::vector<std::string>& args, double timeout_s = 20) {
    Outcome r;
    char log_template[] = "/tmp/moe_cli_hostile_XXXXXX";
    const int log_fd = ::mkstemp(log_template);
    if (log_fd < 0) return r;
    const auto start = std::chrono::steady_clock::now();
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(log_fd, 1);
        ::dup2(log_fd, 2);
        std::vector<char*> argv;
        std::string bin = MOESERVE_BIN;
        argv.push_back(bin.data());
        std::vector<std::string> copy = args;
        for (auto& a : copy) argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(bin.c_str(), argv.data());
        ::_exit(127);
    }
    int status = 0;
    rusage ru{};
    while (true) {
        const pid_t done = ::wait4(pid, &status, WNOHANG, &ru);
        if (done == pid) break;
        if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(timeout_s)) {
            r.timed_out = true;
            ::kill(pid, SIGKILL);
            ::wait4(pid, &status, 0, &ru);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.max_rss_kib = ru.ru_maxrss;
    if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
    std::ifstream in(log_template, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    r.out = ss.str();
    ::close(log_fd);
    ::unlink(log_template);
    return r;
}

std::string fixture(const std::string& name) {
    return std::string(MOE_SOURCE_DIR) + "/tests/reference/fixtures/" + name;
}

class Scratch {
public:
    explicit Scratch(const std::string& tag) {
        path_ = fs::temp_directory_path() / ("moe_cli_hostile_" + tag + "_" + std::to_string(::getpid()));
        fs::remove_all(path_);
        fs::create_directories(path_);
    }
    ~Scratch() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    fs::path operator/(const std::string& n) const { return path_ / n; }
    std::string str() const { return path_.string(); }

private:
    fs::path path_;
};

void write_file(const fs::path& p, const std::string& text) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
}

std::string nest(size_t n, const std::string& open, const std::string& close, const std::string& inner) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s += open;
    s += inner;
    for (size_t i = 0; i < n; ++i) s += close;
    return s;
}

std::string splice(const nlohmann::json& j, const std::string& raw) {
    std::string s = j.dump();
    return s.replace(s.find("\"@@\""), 4, raw);
}

nlohmann::json read_json(const fs::path& p) {
    std::ifstream in(p);
    return nlohmann::json::parse(in);
}

// The fixture's files copied into `dir` (config, generation config, weights).
void copy_fixture(const std::string& name, const Scratch& dir) {
    for (const auto& e : fs::directory_iterator(fixture(name)))
        fs::copy_file(e.path(), dir / e.path().filename().string(), fs::copy_options::overwrite_existing);
}

// Safetensors bytes: little-endian header length, header, data.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
    return out + header + data;
}

std::vector<std::string> run_args(const std::string& dir) {
    return {"run",    "--model",   dir, "--prompt-ids", "6,147,254", "--max-tokens",       "4",    "--ignore-eos",
            "--json", "--threads", "1", "--dtype",      "f32",       "--compress-weights", "false"};
}

// The hostile run ended by itself, quickly, with a failure exit code and `needles` in its output.
void expect_refused(const Outcome& r, std::initializer_list<std::string> needles, double max_seconds = 10) {
    EXPECT_FALSE(r.timed_out) << "hung; output: " << r.out;
    EXPECT_EQ(r.signal, 0) << "killed by signal " << r.signal << "; output: " << r.out;
    EXPECT_NE(r.exit_code, 0) << r.out;
    EXPECT_NE(r.exit_code, -1) << r.out;
    EXPECT_LT(r.seconds, max_seconds) << r.out;
    for (const auto& n : needles) EXPECT_NE(r.out.find(n), std::string::npos) << "no '" << n << "' in: " << r.out;
}

std::string good_ids() {
    Outcome r = run(run_args(fixture("qwen3_moe")));
    EXPECT_EQ(r.exit_code, 0) << r.out;
    const size_t at = r.out.find("{\"");
    return at == std::string::npos ? ""
                                   : nlohmann::json::parse(r.out.substr(at, r.out.find('\n', at) - at))["ids"].dump();
}

TEST(HostileFiles, DeepJsonInEveryModelFileIsRefused) {
    const std::string deep_arrays = nest(100000, "[", "]", "1");
    const std::string deep_objects = nest(300000, "{\"a\":", "}", "1");
    for (const char* key : {"hidden_size", "eos_token_id", "architectures"}) {
        SCOPED_TRACE(key);
        Scratch dir(std::string("cfg_") + key);
        copy_fixture("qwen3_moe", dir);
        nlohmann::json c = read_json(dir / "config.json");
        c[key] = "@@";
        write_file(dir / "config.json", splice(c, deep_arrays));
        expect_refused(run(run_args(dir.str())), {"config.json", "nested deeper than the limit of 64"});
        expect_refused(run({"info", "--model", dir.str()}), {"config.json", "nested deeper"});
    }
    {
        Scratch dir("gen");
        copy_fixture("qwen3_moe", dir);
        write_file(dir / "generation_config.json", splice({{"eos_token_id", "@@"}}, deep_arrays));
        expect_refused(run(run_args(dir.str())), {"generation_config.json", "nested deeper"});
    }
    {
        Scratch dir("header");
        copy_fixture("qwen3_moe", dir);
        const std::string header =
            R"({"__metadata__": )" + deep_objects + R"(, "t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
        write_file(dir / "model.safetensors", safetensors_bytes(header, std::string(4, '\0')));
        expect_refused(run(run_args(dir.str())), {"model.safetensors", "nested deeper"});
        expect_refused(run({"info", "--model", dir.str()}), {"model.safetensors", "nested deeper"});
    }
    {
        Scratch dir("index");
        copy_fixture("qwen3_moe", dir);
        write_file(dir / "model.safetensors.index.json",
                   splice({{"metadata", "@@"}, {"weight_map", {{"t", "model.safetensors"}}}}, deep_objects));
        expect_refused(run(run_args(dir.str())), {"model.safetensors.index.json", "nested deeper"});
    }
    EXPECT_EQ(good_ids().size() > 2, true);
}

TEST(HostileFiles, FifoInPlaceOfAWeightFileIsRefusedAtOnce) {
    for (const char* name : {"model.safetensors", "config.json", "generation_config.json"}) {
        SCOPED_TRACE(name);
        Scratch dir(std::string("fifo_") + name);
        copy_fixture("qwen3_moe", dir);
        fs::remove(dir / name);
        ASSERT_EQ(::mkfifo((dir / name).c_str(), 0600), 0) << std::strerror(errno);
        expect_refused(run(run_args(dir.str()), 10), {name, "not a regular file"}, 5);
        expect_refused(run({"info", "--model", dir.str()}, 10), {name, "not a regular file"}, 5);
    }
    EXPECT_GT(good_ids().size(), 2u);
}

// Rewrites the fixture's safetensors with a header one byte longer than a multiple of 8, so
// every tensor sits off its alignment; the model must still load and give the same ids.
TEST(HostileFiles, MisalignedSafetensorsStillServesTheSameIds) {
    Scratch dir("offset");
    copy_fixture("qwen3_moe", dir);
    std::ifstream in(dir / "model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    uint64_t len = 0;
    for (int i = 7; i >= 0; --i) len = (len << 8) | static_cast<unsigned char>(bytes[i]);
    std::string header = bytes.substr(8, len);
    while (!header.empty() && header.back() == ' ') header.pop_back();
    while ((8 + header.size()) % 8 != 1) header += ' ';
    write_file(dir / "model.safetensors", safetensors_bytes(header, bytes.substr(8 + len)));
    Outcome r = run(run_args(dir.str()));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_EQ(r.out.find("runtime error"), std::string::npos) << r.out;  // UBSan, in the sanitizer build
    const size_t at = r.out.find("{\"");
    ASSERT_NE(at, std::string::npos) << r.out;
    EXPECT_EQ(nlohmann::json::parse(r.out.substr(at, r.out.find('\n', at) - at))["ids"].dump(), good_ids());
}

TEST(HostileFiles, HostileTokenizersAreRefused) {
    nlohmann::json tiny;
    tiny["version"] = "1.0";
    tiny["normalizer"] = nullptr;
    tiny["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}};
    tiny["decoder"] = {{"type", "ByteLevel"}};
    tiny["model"] = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}};
    struct Case {
        const char* what;
        std::string tokenizer_json;
        const char* needle;
    };
    nlohmann::json seq = tiny;
    seq["normalizer"] = "@@";
    nlohmann::json rep = tiny;
    rep["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", "a"}}}, {"content", std::string(1 << 20, 'b')}};
    nlohmann::json seq20 = tiny;
    nlohmann::json n = {{"type", "NFC"}};
    for (int i = 0; i < 20; ++i) n = {{"type", "Sequence"}, {"normalizers", {n}}};
    seq20["normalizer"] = n;
    const Case cases[] = {
        {"10k nested Sequences",
         splice(seq, nest(10000, R"({"type": "Sequence", "normalizers": [)", "]}", R"({"type": "NFC"})")),
         "nested deeper"},
        {"20 nested Sequences", seq20.dump(), "Sequence nested deeper than the limit of 16"},
        {"1 MiB Replace", rep.dump(), "Replace content of 1048576 bytes"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.what);
        Scratch dir("tok");
        write_file(dir / "tokenizer.json", c.tokenizer_json);
        expect_refused(run({"tokenize", "--tokenizer", dir.str(), "--text", std::string(1000, 'a')}),
                       {"tokenizer.json", c.needle});
    }
    Scratch dir("tok_fifo");
    ASSERT_EQ(::mkfifo((dir / "tokenizer.json").c_str(), 0600), 0);
    expect_refused(run({"tokenize", "--tokenizer", dir.str(), "--text", "ab"}, 10), {"not a regular file"}, 5);
    Scratch good("tok_good");
    write_file(good / "tokenizer.json", tiny.dump());
    Outcome ok = run({"tokenize", "--tokenizer", good.str(), "--text", "ab"});
    EXPECT_EQ(ok.exit_code, 0) << ok.out;
}

// Every size at its allowed maximum (~864k T parameters, ~12M tensors claimed) next to a
// one-tensor safetensors file: `info` answers at once, in little memory (7.6 s and 2.2 GB before).
TEST(HostileFiles, InfoDoesNotAllocateByClaimedSizes) {
    Scratch dir("maxcfg");
    const nlohmann::json c = {{"architectures", {"MixtralForCausalLM"}},
                              {"vocab_size", 1 << 24},
                              {"hidden_size", 65536},
                              {"num_hidden_layers", 1024},
                              {"num_attention_heads", 1024},
                              {"num_key_value_heads", 1024},
                              {"num_local_experts", 4096},
                              {"num_experts_per_tok", 2},
                              {"intermediate_size", 1 << 20},
                              {"max_position_embeddings", 1 << 30}};
    write_file(dir / "config.json", c.dump());
    write_file(
        dir / "model.safetensors",
        safetensors_bytes(R"({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", std::string(16, '\0')));
    // The binary's own footprint (its libraries: cuBLAS, UCX, MPI; sanitizer shadow) is the
    // baseline; `info` may add little to it whatever the config claims.
    const Outcome base = run({"--help"});
    ASSERT_EQ(base.exit_code, 0) << base.out;
    for (bool as_json : {false, true}) {
        std::vector<std::string> args = {"info", "--model", dir.str()};
        if (as_json) args.push_back("--json");
        Outcome r = run(args);
        EXPECT_FALSE(r.timed_out);
        EXPECT_EQ(r.signal, 0) << r.out;
        EXPECT_EQ(r.exit_code, 1) << r.out;  // the weights do not match the config
        EXPECT_NE(r.out.find("model.embed_tokens.weight"), std::string::npos) << r.out;
        EXPECT_LT(r.seconds, 2.0) << r.out;
        EXPECT_LT(r.max_rss_kib, base.max_rss_kib + 64 * 1024)
            << "peak RSS in KiB; `moeserve --help` peaks at " << base.max_rss_kib;
    }
}

}  // namespace
