#include "tokenizer/decoder.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace moe::tok {
namespace {

class ByteLevelDecoder final : public Decoder {
public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::string bytes;
        for (const std::string& t : tokens) {
            const size_t mark = bytes.size();
            size_t i = 0;
            bool all = true;
            while (i < t.size()) {
                const int b = code_point_to_byte(next_code_point(t, i));
                if (b < 0) {
                    all = false;
                    break;
                }
                bytes.push_back(static_cast<char>(b));
            }
            // A token with a character outside the byte table (an added token such as a run
            // of spaces) passes through as its own UTF-8.
            if (!all) {
                bytes.resize(mark);
                bytes += t;
            }
        }
        std::string text;
        text.reserve(bytes.size());
        append_utf8_lossy(text, bytes);
        tokens.assign(1, std::move(text));
    }
};

class ReplaceDecoder final : public Decoder {
public:
    ReplaceDecoder(std::string literal, std::string content)
        : literal_(std::move(literal)), content_(std::move(content)) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (std::string& t : tokens) {
            std::string out;
            size_t last = 0;
            for (size_t pos = t.find(literal_); pos != std::string::npos; pos = t.find(literal_, last)) {
                out.append(t, last, pos - last);
                out += content_;
                last = pos + literal_.size();
            }
            if (last == 0) continue;
            out.append(t, last, std::string::npos);
            t = std::move(out);
        }
    }

private:
    std::string literal_, content_;
};

int parse_byte_token(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; ++k) {
        const char c = t[static_cast<size_t>(k)];
        int d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        } else {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

class ByteFallbackDecoder final : public Decoder {
public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::vector<std::string> out;
        out.reserve(tokens.size());
        std::string pending;
        auto flush = [&] {
            if (pending.empty()) return;
            if (find_invalid_utf8(pending) == std::string::npos) {
                out.push_back(pending);
            } else {
                // HF emits one U+FFFD per byte when the run is not valid UTF-8 as a whole.
                for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
            }
            pending.clear();
        };
        for (std::string& t : tokens) {
            const int b = parse_byte_token(t);
            if (b >= 0) {
                pending.push_back(static_cast<char>(b));
            } else {
                flush();
                out.push_back(std::move(t));
            }
        }
        flush();
        tokens = std::move(out);
    }
};

class FuseDecoder final : public Decoder {
public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::string all;
        for (const auto& t : tokens) all += t;
        tokens.assign(1, std::move(all));
    }
};

class StripDecoder final : public Decoder {
public:
    StripDecoder(std::string content, size_t start, size_t stop)
        : content_(std::move(content)), start_(start), stop_(stop) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (std::string& t : tokens) {
            size_t b = 0, e = t.size();
            for (size_t k = 0; k < start_ && t.compare(b, content_.size(), content_) == 0 && b < e; ++k) {
                b += content_.size();
            }
            for (size_t k = 0; k < stop_ && e >= b + content_.size() &&
                               t.compare(e - content_.size(), content_.size(), content_) == 0;
                 ++k) {
                e -= content_.size();
            }
            t = t.substr(b, e - b);
        }
    }

private:
    std::string content_;
    size_t start_, stop_;
};

class MetaspaceDecoder final : public Decoder {
public:
    MetaspaceDecoder(std::string replacement, bool prepend) : replacement_(std::move(replacement)), prepend_(prepend) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (size_t i = 0; i < tokens.size(); ++i) {
            std::string out;
            const std::string& t = tokens[i];
            size_t last = 0;
            for (size_t pos = t.find(replacement_); pos != std::string::npos; pos = t.find(replacement_, last)) {
                out.append(t, last, pos - last);
                out += ' ';
                last = pos + replacement_.size();
            }
            out.append(t, last, std::string::npos);
            if (i == 0 && prepend_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
            tokens[i] = std::move(out);
        }
    }

private:
    std::string replacement_;
    bool prepend_;
};

class SequenceDecoder final : public Decoder {
public:
    explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (const auto& s : steps_) s->decode_chain(tokens);
    }

private:
    std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> make_byte_level_decoder() {
    return std::make_unique<ByteLevelDecoder>();
}

StatusOr<std::unique_ptr<Decoder>> parse_decoder(const nlohmann::json& j, const std::string& where, int depth) {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
        return invalid_argument(fmt::format("{}: expected an object with a string \"type\"", where));
    }
    const std::string type = j["type"].get<std::string>();
    if (type == "ByteLevel") return make_byte_level_decoder();
    if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
    if (type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
    if (type == "Replace") {
        const auto& pattern = j.at("pattern");
        if (!pattern.contains("String")) {
            return unimplemented(fmt::format("{}: only String patterns are supported in a Replace decoder", where));
        }
        std::string lit = pattern["String"].get<std::string>();
        if (lit.empty()) return invalid_argument(fmt::format("{}: Replace with an empty pattern", where));
        std::string content = j.at("content").get<std::string>();
        if (static_cast<double>(content.size()) > kMaxReplaceGrowth * static_cast<double>(lit.size())) {
            return invalid_argument(fmt::format(
                "{}: Replace content of {} bytes for a {}-byte pattern can make text more than {} times longer (the "
                "limit)",
                where, content.size(), lit.size(), kMaxReplaceGrowth));
        }
        return std::unique_ptr<Decoder>(new ReplaceDecoder(std::move(lit), std::move(content)));
    }
    if (type == "Strip") {
        const auto start = j.value("start", 0), stop = j.value("stop", 0);
        if (start < 0 || stop < 0 || start > 1024 || stop > 1024) {
            return invalid_argument(fmt::format("{}: Strip start/stop must be in [0, 1024]", where));
        }
        std::string content = j.at("content").get<std::string>();
        if (content.empty()) return invalid_argument(fmt::format("{}: Strip with empty content", where));
        return std::unique_ptr<Decoder>(
            new StripDecoder(std::move(content), static_cast<size_t>(start), static_cast<size_t>(stop)));
    }
    if (type == "Metaspace") {
        bool prepend = true;
        if (j.contains("prepend_scheme")) {
            prepend = j["prepend_scheme"].get<std::string>() != "never";
        } else if (j.contains("add_prefix_space")) {
            prepend = j["add_prefix_space"].get<bool>();
        }
        std::string replacement = j.value("replacement", std::string("\xE2\x96\x81"));
        if (replacement.empty()) return invalid_argument(fmt::format("{}: empty Metaspace replacement", where));
        return std::unique_ptr<Decoder>(new MetaspaceDecoder(std::move(replacement), prepend));
    }
    if (type == "Sequence") {
        if (depth >= kMaxSequenceDepth) {
            return invalid_argument(
                fmt::format("{}: Sequence nested deeper than the limit of {} levels", where, kMaxSequenceDepth));
        }
        const auto& list = j.at("decoders");
        if (!list.is_array()) return invalid_argument(fmt::format("{}: \"decoders\" must be an array", where));
        std::vector<std::unique_ptr<Decoder>> steps;
        for (size_t i = 0; i < list.size(); ++i) {
            MOE_ASSIGN_OR_RETURN(auto d, parse_decoder(list[i], fmt::format("{}.decoders[{}]", where, i), depth + 1));
            steps.push_back(std::move(d));
        }
        return std::unique_ptr<Decoder>(new SequenceDecoder(std::move(steps)));
    }
    return unimplemented(fmt::format("{}: decoder type '{}' is not supported", where, type));
}

}  // namespace moe::tok
