#include "tokenizer/normalizer.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace moe::tok {
namespace {

class UnicodeForm final : public Normalizer {
public:
    explicit UnicodeForm(int options) : options_(options) {}
    Status normalize(std::string& s) const override {
        if (options_ == (UTF8PROC_STABLE | UTF8PROC_COMPOSE)) {
            s = nfc(s);
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
        return ok_status();
    }

private:
    int options_;
};

class Lowercase final : public Normalizer {
public:
    Status normalize(std::string& s) const override {
        std::string out;
        out.reserve(s.size());
        size_t i = 0;
        while (i < s.size()) {
            const char32_t cp = next_code_point(s, i);
            append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
        }
        s = std::move(out);
        return ok_status();
    }
};

class Prepend final : public Normalizer {
public:
    explicit Prepend(std::string p) : prepend_(std::move(p)) {}
    Status normalize(std::string& s) const override {
        if (!s.empty()) s = prepend_ + s;
        return ok_status();
    }

private:
    std::string prepend_;
};

class Replace final : public Normalizer {
public:
    Replace(std::string literal, std::unique_ptr<Regex> regex, std::string content)
        : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
    Status normalize(std::string& s) const override {
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
        std::string out;
        out.reserve(s.size() + matches.size() * content_.size());
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
    Status normalize(std::string& s) const override {
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
    Status normalize(std::string& s) const override {
        for (const auto& n : steps_) MOE_RETURN_IF_ERROR(n->normalize(s));
        return ok_status();
    }

private:
    std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> make_nfc_normalizer() {
    return std::make_unique<UnicodeForm>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
}

StatusOr<std::unique_ptr<Normalizer>> parse_normalizer(const nlohmann::json& j, const std::string& where) {
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
        if (pattern.contains("String")) {
            std::string lit = pattern["String"].get<std::string>();
            if (lit.empty()) return invalid_argument(fmt::format("{}: Replace with an empty pattern", where));
            return std::unique_ptr<Normalizer>(new Replace(std::move(lit), nullptr, content));
        }
        if (pattern.contains("Regex")) {
            MOE_ASSIGN_OR_RETURN(auto re, Regex::compile(pattern["Regex"].get<std::string>(), where));
            return std::unique_ptr<Normalizer>(new Replace("", std::move(re), content));
        }
        return invalid_argument(fmt::format("{}: Replace pattern needs \"String\" or \"Regex\"", where));
    }
    if (type == "Sequence") {
        const auto& list = j.at("normalizers");
        if (!list.is_array()) return invalid_argument(fmt::format("{}: \"normalizers\" must be an array", where));
        std::vector<std::unique_ptr<Normalizer>> steps;
        for (size_t i = 0; i < list.size(); ++i) {
            MOE_ASSIGN_OR_RETURN(auto n, parse_normalizer(list[i], fmt::format("{}.normalizers[{}]", where, i)));
            steps.push_back(std::move(n));
        }
        return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(steps)));
    }
    return unimplemented(fmt::format("{}: normalizer type '{}' is not supported", where, type));
}

}  // namespace moe::tok
