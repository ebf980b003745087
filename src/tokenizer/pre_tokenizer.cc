#include "tokenizer/pre_tokenizer.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace moe::tok {

const char* const kGpt2SplitRegex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kQwen2SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Segment {
    size_t begin, end;
    bool is_match;
};

// Turns the segments that tile a piece into output pieces, following HF's
// SplitDelimiterBehavior rules (including how runs of adjacent matches are merged).
void emit_segments(const Piece& piece, std::vector<Segment> segs, Behavior behavior, std::vector<Piece>& out) {
    std::vector<std::pair<size_t, size_t>> ranges;
    switch (behavior) {
        case Behavior::kRemoved:
            for (const auto& s : segs) {
                if (!s.is_match) ranges.emplace_back(s.begin, s.end);
            }
            break;
        case Behavior::kIsolated:
            for (const auto& s : segs) ranges.emplace_back(s.begin, s.end);
            break;
        case Behavior::kMergedWithPrevious: {
            bool prev_match = false;
            for (const auto& s : segs) {
                if (s.is_match && !prev_match && !ranges.empty()) {
                    ranges.back().second = s.end;
                } else {
                    ranges.emplace_back(s.begin, s.end);
                }
                prev_match = s.is_match;
            }
            break;
        }
        case Behavior::kMergedWithNext: {
            bool prev_match = false;
            for (size_t k = segs.size(); k-- > 0;) {
                const auto& s = segs[k];
                if (s.is_match && !prev_match && !ranges.empty()) {
                    ranges.back().first = s.begin;
                } else {
                    ranges.emplace_back(s.begin, s.end);
                }
                prev_match = s.is_match;
            }
            std::reverse(ranges.begin(), ranges.end());
            break;
        }
        case Behavior::kContiguous: {
            bool prev_match = false;
            for (const auto& s : segs) {
                if (s.is_match == prev_match && !ranges.empty()) {
                    ranges.back().second = s.end;
                } else {
                    ranges.emplace_back(s.begin, s.end);
                }
                prev_match = s.is_match;
            }
            break;
        }
    }
    for (auto [b, e] : ranges) {
        if (e > b) out.push_back(Piece{piece.text.substr(b, e - b), piece.at_input_start && b == 0});
    }
}

std::vector<Segment> tile(size_t size, const std::vector<std::pair<size_t, size_t>>& matches, bool invert) {
    std::vector<Segment> segs;
    segs.reserve(matches.size() * 2 + 1);
    size_t last = 0;
    for (auto [b, e] : matches) {
        if (b > last) segs.push_back({last, b, invert});
        segs.push_back({b, e, !invert});
        last = e;
    }
    if (last < size) segs.push_back({last, size, invert});
    return segs;
}

class SplitPreTokenizer final : public PreTokenizer {
public:
    SplitPreTokenizer(std::unique_ptr<Regex> regex, std::string literal, Behavior behavior, bool invert)
        : regex_(std::move(regex)), literal_(std::move(literal)), behavior_(behavior), invert_(invert) {}

    Status split(std::vector<Piece>& pieces) const override {
        std::vector<Piece> out;
        out.reserve(pieces.size() * 4);
        std::vector<std::pair<size_t, size_t>> matches;
        for (const Piece& p : pieces) {
            matches.clear();
            if (regex_) {
                MOE_RETURN_IF_ERROR(regex_->find_all(p.text, matches));
            } else if (!literal_.empty()) {
                for (size_t pos = p.text.find(literal_); pos != std::string::npos;
                     pos = p.text.find(literal_, pos + literal_.size())) {
                    matches.emplace_back(pos, pos + literal_.size());
                }
            }
            // Isolated and no inversion is by far the common case (every byte-level regex).
            if (behavior_ == Behavior::kIsolated && !invert_) {
                size_t last = 0;
                for (auto [b, e] : matches) {
                    if (b > last) out.push_back(Piece{p.text.substr(last, b - last), p.at_input_start && last == 0});
                    out.push_back(Piece{p.text.substr(b, e - b), p.at_input_start && b == 0});
                    last = e;
                }
                if (last < p.text.size()) out.push_back(Piece{p.text.substr(last), p.at_input_start && last == 0});
            } else {
                emit_segments(p, tile(p.text.size(), matches, invert_), behavior_, out);
            }
        }
        pieces = std::move(out);
        return ok_status();
    }

private:
    std::unique_ptr<Regex> regex_;
    std::string literal_;
    Behavior behavior_;
    bool invert_;
};

// ByteLevel: optional prefix space, optional GPT-2 regex split. The byte->char mapping is left
// to the model (see ParsedPreTokenizer::byte_level).
class ByteLevelPreTokenizer final : public PreTokenizer {
public:
    ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<PreTokenizer> regex_split)
        : add_prefix_space_(add_prefix_space), regex_split_(std::move(regex_split)) {}
    Status split(std::vector<Piece>& pieces) const override {
        if (add_prefix_space_) {
            for (Piece& p : pieces) {
                if (p.text.empty() || p.text[0] != ' ') p.text = " " + p.text;
            }
        }
        if (regex_split_) return regex_split_->split(pieces);
        return ok_status();
    }

private:
    bool add_prefix_space_;
    std::unique_ptr<PreTokenizer> regex_split_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
public:
    MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
        : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
    Status split(std::vector<Piece>& pieces) const override {
        std::vector<Piece> out;
        for (Piece& p : pieces) {
            std::string s;
            s.reserve(p.text.size() + replacement_.size());
            for (char c : p.text) {
                if (c == ' ') {
                    s += replacement_;
                } else {
                    s.push_back(c);
                }
            }
            const bool starts = s.compare(0, replacement_.size(), replacement_) == 0;
            if (!starts &&
                (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_input_start))) {
                s = replacement_ + s;
            }
            if (!split_) {
                out.push_back(Piece{std::move(s), p.at_input_start});
                continue;
            }
            std::vector<std::pair<size_t, size_t>> matches;
            for (size_t pos = s.find(replacement_); pos != std::string::npos;
                 pos = s.find(replacement_, pos + replacement_.size())) {
                matches.emplace_back(pos, pos + replacement_.size());
            }
            Piece whole{std::move(s), p.at_input_start};
            emit_segments(whole, tile(whole.text.size(), matches, false), Behavior::kMergedWithNext, out);
        }
        pieces = std::move(out);
        return ok_status();
    }

private:
    std::string replacement_;
    PrependScheme scheme_;
    bool split_;
};

class DigitsPreTokenizer final : public PreTokenizer {
public:
    explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
    Status split(std::vector<Piece>& pieces) const override {
        std::vector<Piece> out;
        std::vector<std::pair<size_t, size_t>> matches;
        for (const Piece& p : pieces) {
            matches.clear();
            size_t i = 0;
            while (i < p.text.size()) {
                const size_t b = i;
                const char32_t cp = next_code_point(p.text, i);
                const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
                if (cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO) {
                    matches.emplace_back(b, i);
                }
            }
            emit_segments(p, tile(p.text.size(), matches, false),
                          individual_ ? Behavior::kIsolated : Behavior::kContiguous, out);
        }
        pieces = std::move(out);
        return ok_status();
    }

private:
    bool individual_;
};

class SequencePreTokenizer final : public PreTokenizer {
public:
    explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
    Status split(std::vector<Piece>& pieces) const override {
        for (const auto& s : steps_) MOE_RETURN_IF_ERROR(s->split(pieces));
        return ok_status();
    }

private:
    std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

StatusOr<Behavior> parse_behavior(const std::string& s, const std::string& where) {
    if (s == "Removed") return Behavior::kRemoved;
    if (s == "Isolated") return Behavior::kIsolated;
    if (s == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
    if (s == "MergedWithNext") return Behavior::kMergedWithNext;
    if (s == "Contiguous") return Behavior::kContiguous;
    return invalid_argument(fmt::format("{}: unknown split behavior '{}'", where, s));
}

StatusOr<std::unique_ptr<PreTokenizer>> make_regex_split(const std::string& regex, const std::string& where) {
    MOE_ASSIGN_OR_RETURN(auto re, Regex::compile(regex, where));
    return std::unique_ptr<PreTokenizer>(new SplitPreTokenizer(std::move(re), "", Behavior::kIsolated, false));
}

}  // namespace

StatusOr<ParsedPreTokenizer> make_byte_level_regex_pre_tokenizer(const std::string& regex) {
    MOE_ASSIGN_OR_RETURN(auto split, make_regex_split(regex, "pre-tokenizer"));
    ParsedPreTokenizer out;
    out.pre_tokenizer = std::move(split);
    out.byte_level = true;
    return out;
}

StatusOr<ParsedPreTokenizer> parse_pre_tokenizer(const nlohmann::json& j, const std::string& where, int depth) {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
        return invalid_argument(fmt::format("{}: expected an object with a string \"type\"", where));
    }
    const std::string type = j["type"].get<std::string>();
    ParsedPreTokenizer out;
    if (type == "ByteLevel") {
        std::unique_ptr<PreTokenizer> split;
        if (j.value("use_regex", true)) {
            MOE_ASSIGN_OR_RETURN(split, make_regex_split(kGpt2SplitRegex, where));
        }
        out.pre_tokenizer.reset(new ByteLevelPreTokenizer(j.value("add_prefix_space", false), std::move(split)));
        out.byte_level = true;
        return out;
    }
    if (type == "Split") {
        const auto& pattern = j.at("pattern");
        MOE_ASSIGN_OR_RETURN(Behavior behavior, parse_behavior(j.at("behavior").get<std::string>(), where));
        const bool invert = j.value("invert", false);
        if (pattern.contains("Regex")) {
            MOE_ASSIGN_OR_RETURN(auto re, Regex::compile(pattern["Regex"].get<std::string>(), where));
            out.pre_tokenizer.reset(new SplitPreTokenizer(std::move(re), "", behavior, invert));
        } else if (pattern.contains("String")) {
            out.pre_tokenizer.reset(
                new SplitPreTokenizer(nullptr, pattern["String"].get<std::string>(), behavior, invert));
        } else {
            return invalid_argument(fmt::format("{}: Split pattern needs \"String\" or \"Regex\"", where));
        }
        return out;
    }
    if (type == "Metaspace") {
        std::string replacement = j.value("replacement", std::string("\xE2\x96\x81"));
        if (replacement.empty()) return invalid_argument(fmt::format("{}: empty Metaspace replacement", where));
        PrependScheme scheme = PrependScheme::kAlways;
        if (j.contains("prepend_scheme")) {
            const std::string s = j["prepend_scheme"].get<std::string>();
            if (s == "always") {
                scheme = PrependScheme::kAlways;
            } else if (s == "first") {
                scheme = PrependScheme::kFirst;
            } else if (s == "never") {
                scheme = PrependScheme::kNever;
            } else {
                return invalid_argument(fmt::format("{}: unknown prepend_scheme '{}'", where, s));
            }
        } else if (j.contains("add_prefix_space")) {
            scheme = j["add_prefix_space"].get<bool>() ? PrependScheme::kAlways : PrependScheme::kNever;
        }
        out.pre_tokenizer.reset(new MetaspacePreTokenizer(std::move(replacement), scheme, j.value("split", true)));
        return out;
    }
    if (type == "Digits") {
        out.pre_tokenizer.reset(new DigitsPreTokenizer(j.value("individual_digits", false)));
        return out;
    }
    if (type == "Sequence") {
        if (depth >= kMaxSequenceDepth) {
            return invalid_argument(
                fmt::format("{}: Sequence nested deeper than the limit of {} levels", where, kMaxSequenceDepth));
        }
        const auto& list = j.at("pretokenizers");
        if (!list.is_array()) return invalid_argument(fmt::format("{}: \"pretokenizers\" must be an array", where));
        std::vector<std::unique_ptr<PreTokenizer>> steps;
        for (size_t i = 0; i < list.size(); ++i) {
            const std::string w = fmt::format("{}.pretokenizers[{}]", where, i);
            MOE_ASSIGN_OR_RETURN(ParsedPreTokenizer step, parse_pre_tokenizer(list[i], w, depth + 1));
            // Stages after a ByteLevel step would see GPT-2's mapped characters, which this
            // implementation never materialises.
            if (out.byte_level) {
                return unimplemented(fmt::format("{}: a pre-tokenizer after ByteLevel is not supported", w));
            }
            out.byte_level = step.byte_level;
            steps.push_back(std::move(step.pre_tokenizer));
        }
        out.pre_tokenizer.reset(new SequencePreTokenizer(std::move(steps)));
        return out;
    }
    return unimplemented(fmt::format("{}: pre-tokenizer type '{}' is not supported", where, type));
}

}  // namespace moe::tok
