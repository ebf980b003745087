#include "tokenizer/normalizer.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace moe::tok {
namespace {

Status too_long(const char* step, size_t bytes, size_t max_bytes) {
    return invalid_argument(fmt::format(
        "normalizer: {} would make the text {} bytes long, over the limit of {} bytes ({} times the input + {})", step,
        bytes, max_bytes, kMaxReplaceGrowth, kNormalizedSlackBytes));
}

class UnicodeForm final : public Normalizer {
public:
    explicit UnicodeForm(int options) : options_(options) {}
    Status normalize(std::string& s, size_t max_bytes) const override {
        if (options_ == (UTF8PROC_STABLE | UTF8PROC_COMPOSE)) {
            s = nfc(s);
            if (s.size() > max_bytes) return too_long("a Unicode normalization", s.size(), max_bytes);
            return ok_status();
        }
        if (s.empty()) return ok_status();
        utf8proc_uint8_t* out = nullptr;
        const utf8proc_ssize_t n =
            utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                         &out, static_cast<utf8proc_option_t>(options_));
        if (n < 0) return invalid_argument(fmt::format("normalizer: {}", utf8proc_errmsg(n)));
        s.assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
        std::free(out);
        if (s.size() > max_bytes) return too_long("a Unicode normalization", s.size(), max_bytes);
        return ok_status();
    }

private:
    int options_;
};

class Lowercase final : public Normalizer {
public:
    Status normalize(std::string& s, size_t max_bytes) const override {
        std::string out;
        out.reserve(s.size());
        size_t i = 0;
        while (i < s.size()) {
            const char32_t cp = next_code_point(s, i);
            append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
        }
        s = std::move(out);
        if (s.size() > max_bytes) return too_long("Lowercase", s.size(), max_bytes);
        return ok_status();
    }
};

class Prepend final : public Normalizer {
public:
    explicit Prepend(std::string p) : prepend_(std::move(p)) {}
    Status normalize(std::string& s, size_t max_bytes) const override {
        if (s.empty()) return ok_status();
        if (prepend_.size() > max_bytes - std::min(max_bytes, s.size()))
            return too_long("Prepend", s.size() + prepend_.size(), max_bytes);
        s = prepend_ + s;
        return ok_status();
    }

private:
    std::string prepend_;
};

class Replace final : public Normalizer {
public:
    Replace(std::string literal, std::unique_ptr<Regex> regex, std::string content)
        : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
    double growth_bound() const override {
        // A regex match is at least one byte: find_all skips empty matches.
        const double min_match = regex_ ? 1.0 : static_cast<double>(literal_.size());
        return std::max(1.0, static_cast<double>(content_.size()) / min_match);
    }
    Status normalize(std::string& s, size_t max_bytes) const override {
        std::vector<std::pair<size_t, size_t>> matches;
        if (regex_) {
            MOE_RETURN_IF_ERROR(regex_->find_all(s, matches));
        } else {
            for (size_t pos = s.find(literal_); pos != std::string::npos;
                 pos = s.find(literal_, pos + literal_.size())) {
                matches.emplace_back(pos, pos + literal_.size());
            }
        }
        if (matches.empty()) return ok_status();
        // The length is known before anything is allocated: refuse rather than build it.
        uint64_t matched = 0;
        for (auto [b, e] : matches) matched += e - b;
        const uint64_t out_size =
            s.size() - matched + static_cast<uint64_t>(matches.size()) * static_cast<uint64_t>(content_.size());
        if (out_size > max_bytes) return too_long("Replace", static_cast<size_t>(out_size), max_bytes);
        std::string out;
        out.reserve(static_cast<size_t>(out_size));
        size_t last = 0;
        for (auto [b, e] : matches) {
            out.append(s, last, b - last);
            out.append(content_);
            last = e;
        }
        out.append(s, last, std::string::npos);
        s = std::move(out);
        return ok_status();
    }

private:
    std::string literal_;
    std::unique_ptr<Regex> regex_;
    std::string content_;
};

class Strip final : public Normalizer {
public:
    Strip(bool left, bool right) : left_(left), right_(right) {}
    Status normalize(std::string& s, size_t /*max_bytes: only shrinks*/) const override {
        size_t b = 0, e = s.size();
        if (left_) {
            while (b < e) {
                size_t i = b;
                if (!is_whitespace(next_code_point(s, i))) break;
                b = i;
            }
        }
        if (right_) {
            while (e > b) {
                size_t start = e - 1;
                while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
                size_t i = start;
                if (!is_whitespace(next_code_point(s, i))) break;
                e = start;
            }
        }
        s = s.substr(b, e - b);
        return ok_status();
    }

private:
    bool left_, right_;
};

class SequenceNormalizer final : public Normalizer {
public:
    explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
    Status normalize(std::string& s, size_t max_bytes) const override {
        for (const auto& n : steps_) MOE_RETURN_IF_ERROR(n->normalize(s, max_bytes));
        return ok_status();
    }
    double growth_bound() const override {
        double g = 1.0;
        for (const auto& n : steps_) g = std::min(g * n->growth_bound(), 1e300);
        return g;
    }

private:
    std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> make_nfc_normalizer() {
    return std::make_unique<UnicodeForm>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
}

StatusOr<std::unique_ptr<Normalizer>> parse_normalizer(const nlohmann::json& j, const std::string& where, int depth) {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
        return invalid_argument(fmt::format("{}: expected an object with a string \"type\"", where));
    }
    const std::string type = j["type"].get<std::string>();
    if (type == "NFC") return make_nfc_normalizer();
    if (type == "NFD") return std::unique_ptr<Normalizer>(new UnicodeForm(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE));
    if (type == "NFKC") {
        return std::unique_ptr<Normalizer>(new UnicodeForm(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
    }
    if (type == "NFKD") {
        return std::unique_ptr<Normalizer>(new UnicodeForm(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
    }
    if (type == "Lowercase") return std::unique_ptr<Normalizer>(new Lowercase());
    if (type == "Prepend") return std::unique_ptr<Normalizer>(new Prepend(j.at("prepend").get<std::string>()));
    if (type == "Strip") {
        return std::unique_ptr<Normalizer>(new Strip(j.value("left", true), j.value("right", true)));
    }
    if (type == "Replace") {
        const auto& pattern = j.at("pattern");
        const std::string content = j.at("content").get<std::string>();
        std::unique_ptr<Normalizer> replace;
        if (pattern.contains("String")) {
            std::string lit = pattern["String"].get<std::string>();
            if (lit.empty()) return invalid_argument(fmt::format("{}: Replace with an empty pattern", where));
            replace.reset(new Replace(std::move(lit), nullptr, content));
        } else if (pattern.contains("Regex")) {
            MOE_ASSIGN_OR_RETURN(auto re, Regex::compile(pattern["Regex"].get<std::string>(), where));
            replace.reset(new Replace("", std::move(re), content));
        } else {
            return invalid_argument(fmt::format("{}: Replace pattern needs \"String\" or \"Regex\"", where));
        }
        if (replace->growth_bound() > kMaxReplaceGrowth) {
            return invalid_argument(fmt::format(
                "{}: Replace content of {} bytes can make text {:.0f} times longer than its pattern matches, over the "
                "limit of {}",
                where, content.size(), replace->growth_bound(), kMaxReplaceGrowth));
        }
        return replace;
    }
    if (type == "Sequence") {
        if (depth >= kMaxSequenceDepth) {
            return invalid_argument(
                fmt::format("{}: Sequence nested deeper than the limit of {} levels", where, kMaxSequenceDepth));
        }
        const auto& list = j.at("normalizers");
        if (!list.is_array()) return invalid_argument(fmt::format("{}: \"normalizers\" must be an array", where));
        std::vector<std::unique_ptr<Normalizer>> steps;
        for (size_t i = 0; i < list.size(); ++i) {
            MOE_ASSIGN_OR_RETURN(auto n,
                                 parse_normalizer(list[i], fmt::format("{}.normalizers[{}]", where, i), depth + 1));
            steps.push_back(std::move(n));
        }
        std::unique_ptr<Normalizer> seq(new SequenceNormalizer(std::move(steps)));
        if (seq->growth_bound() > kMaxReplaceGrowth) {
            return invalid_argument(
                fmt::format("{}: its Replace steps together can make text {:.0f} times longer, over the limit of {}",
                            where, std::min(seq->growth_bound(), 1e18), kMaxReplaceGrowth));
        }
        return seq;
    }
    return unimplemented(fmt::format("{}: normalizer type '{}' is not supported", where, type));
}

}  // namespace moe::tok
