// `moeserve tokenize`: text to ids (or ids to text with --decode), to check a tokenizer by hand
// against Hugging Face's.
#include <fmt/format.h>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>

#include "cli/command.h"
#include "moe/tokenizer.h"

namespace moe::cli {
namespace {

struct TokenizeArgs {
    std::string tokenizer;
    std::string config;
    std::string text;
    std::string file;
    bool decode = false;
    bool add_special = false;
    bool skip_special = false;
    bool show_pieces = false;
};

StatusOr<std::vector<int32_t>> parse_ids(const std::string& s) {
    std::vector<int32_t> ids;
    size_t pos = 0;
    while (pos < s.size()) {
        while (pos < s.size() && (s[pos] == ',' || s[pos] == ' ' || s[pos] == '\n' || s[pos] == '[' || s[pos] == ']')) {
            ++pos;
        }
        if (pos >= s.size()) break;
        int64_t v = 0;
        auto [ptr, ec] = std::from_chars(s.data() + pos, s.data() + s.size(), v);
        if (ec != std::errc() || ptr == s.data() + pos || v < INT32_MIN || v > INT32_MAX) {
            return invalid_argument(
                fmt::format("--decode: '{}' at offset {} is not a token id", s.substr(pos, 16), pos));
        }
        ids.push_back(static_cast<int32_t>(v));
        pos = static_cast<size_t>(ptr - s.data());
    }
    return ids;
}

Status run(const TokenizeArgs& a) {
    std::string input = a.text;
    if (!a.file.empty()) {
        std::ifstream in(a.file, std::ios::binary);
        if (!in) return not_found(fmt::format("--file: cannot open {}", a.file));
        input.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    TokenizerLoadOptions opts;
    opts.config_file = a.config;
    MOE_ASSIGN_OR_RETURN(auto tok, Tokenizer::load(a.tokenizer, opts));
    if (a.decode) {
        MOE_ASSIGN_OR_RETURN(auto ids, parse_ids(input));
        MOE_ASSIGN_OR_RETURN(std::string text, tok->decode(ids, a.skip_special));
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fputc('\n', stdout);
        return ok_status();
    }
    MOE_ASSIGN_OR_RETURN(auto ids, tok->encode(input, a.add_special));
    if (a.show_pieces) {
        for (int32_t id : ids) fmt::print("{:>8} '{}'\n", id, tok->id_to_token(id).value_or(""));
    } else {
        std::string line;
        for (size_t k = 0; k < ids.size(); ++k) line += fmt::format("{}{}", k ? ", " : "", ids[k]);
        fmt::print("[{}]\n", line);
    }
    fmt::print(stderr, "{} tokens\n", ids.size());
    return ok_status();
}

Registrar reg("tokenize", [](CLI::App& app, int& exit_code) {
    auto args = std::make_shared<TokenizeArgs>();
    CLI::App* cmd = app.add_subcommand("tokenize", "Encode text to token ids, or decode ids to text");
    cmd->add_option("--tokenizer", args->tokenizer, "Directory with tokenizer.json or vocab.json + merges.txt")
        ->required();
    cmd->add_option("--tokenizer-config", args->config, "tokenizer_config.json to use (slow vocab+merges pair)");
    auto* text = cmd->add_option("--text", args->text, "Text to encode (with --decode: comma-separated ids)");
    auto* file = cmd->add_option("--file", args->file, "Read the text (or ids) from this file");
    text->excludes(file);
    cmd->add_flag("--decode", args->decode, "Decode comma-separated ids to text");
    cmd->add_flag("--add-special", args->add_special, "Apply the post-processor (e.g. add BOS)");
    cmd->add_flag("--skip-special", args->skip_special, "With --decode: drop special tokens");
    cmd->add_flag("--pieces", args->show_pieces, "Print one id and its token string per line");
    cmd->callback([args, cmd, &exit_code] {
        if (cmd->count("--text") == 0 && cmd->count("--file") == 0) {
            std::fprintf(stderr, "tokenize: give --text or --file\n");
            exit_code = 2;
            return;
        }
        Status s = run(*args);
        if (!s.ok()) {
            std::fprintf(stderr, "tokenize: %s\n", s.to_string().c_str());
            exit_code = 1;
        }
    });
});

}  // namespace
}  // namespace moe::cli
