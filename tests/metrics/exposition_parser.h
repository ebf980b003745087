// A strict reader of the Prometheus text exposition format 0.0.4, for tests: it refuses what a
// Prometheus server would refuse and what our renderer must never write (a sample before its
// family's TYPE, a duplicate series, a bad escape, histogram buckets that are not cumulative or
// lack le="+Inf", a _count that differs from the +Inf bucket), and returns every sample.
#pragma once

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "moe/status.h"

namespace moe::metrics::testing {

struct Sample {
    std::string name;                           // the sample name (x_bucket, x_sum, ...)
    std::map<std::string, std::string> labels;  // unescaped
    double value = 0;
};

struct Exposition {
    std::map<std::string, std::string> type;  // family name -> counter/gauge/histogram
    std::map<std::string, std::string> help;  // family name -> unescaped help
    std::vector<Sample> samples;              // in order

    // The value of the one sample with this name and exactly these labels; NaN when absent.
    double value(const std::string& name, const std::map<std::string, std::string>& labels = {}) const;
    // Sum over every sample of this name whose labels include `labels`.
    double sum(const std::string& name, const std::map<std::string, std::string>& labels = {}) const;
};

// ---- implementation (header-only so that the engine and server tests can use it too) ---------

namespace detail {

inline bool is_name_char(char c, bool first, bool colon_ok) {
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_ok && c == ':');
    return first ? alpha : (alpha || (c >= '0' && c <= '9'));
}

// Reads a name at `pos`; empty when there is none.
inline std::string read_name(const std::string& s, size_t& pos, bool colon_ok) {
    const size_t start = pos;
    while (pos < s.size() && is_name_char(s[pos], pos == start, colon_ok)) ++pos;
    return s.substr(start, pos - start);
}

// Go's ParseFloat subset the format allows: decimal, exponent, +Inf, -Inf, NaN.
inline bool parse_value(const std::string& s, double& out) {
    if (s == "+Inf") return out = std::numeric_limits<double>::infinity(), true;
    if (s == "-Inf") return out = -std::numeric_limits<double>::infinity(), true;
    if (s == "NaN") return out = std::numeric_limits<double>::quiet_NaN(), true;
    if (s.empty()) return false;
    for (char c : s)
        if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')) return false;
    char* end = nullptr;
    out = std::strtod(s.c_str(), &end);
    return end == s.c_str() + s.size();
}

inline std::string family_of(const std::string& sample, const std::map<std::string, std::string>& types) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        const std::string suf(suffix);
        if (sample.size() > suf.size() && sample.compare(sample.size() - suf.size(), suf.size(), suf) == 0) {
            const std::string base = sample.substr(0, sample.size() - suf.size());
            auto it = types.find(base);
            if (it != types.end() && it->second == "histogram") return base;
        }
    }
    return sample;
}

}  // namespace detail

inline double Exposition::value(const std::string& name, const std::map<std::string, std::string>& labels) const {
    for (const auto& s : samples)
        if (s.name == name && s.labels == labels) return s.value;
    return std::numeric_limits<double>::quiet_NaN();
}

inline double Exposition::sum(const std::string& name, const std::map<std::string, std::string>& labels) const {
    double total = 0;
    for (const auto& s : samples) {
        if (s.name != name) continue;
        bool match = true;
        for (const auto& [k, v] : labels) {
            auto it = s.labels.find(k);
            if (it == s.labels.end() || it->second != v) match = false;
        }
        if (match) total += s.value;
    }
    return total;
}

inline StatusOr<Exposition> parse_exposition(const std::string& text) {
    Exposition e;
    if (!text.empty() && text.back() != '\n') return invalid_argument("exposition does not end with a newline");
    std::set<std::string> series_seen;
    std::set<std::string> families_with_samples;
    std::string last_family;
    std::istringstream in(text);
    std::string line;
    int line_no = 0;
    auto fail = [&](const std::string& why) {
        return invalid_argument("line " + std::to_string(line_no) + ": " + why + ": " + line);
    };
    while (std::getline(in, line)) {
        ++line_no;
        if (line.empty()) return fail("empty line");
        if (line[0] == '#') {
            // "# HELP name text" / "# TYPE name type"; other comments are allowed by the format
            // but our renderer writes none.
            size_t pos = 2;
            if (line.compare(0, 7, "# HELP ") == 0 || line.compare(0, 7, "# TYPE ") == 0) {
                const bool is_help = line[2] == 'H';
                pos = 7;
                const std::string name = detail::read_name(line, pos, true);
                if (name.empty()) return fail("no metric name");
                if (is_help) {
                    if (pos < line.size() && line[pos] != ' ') return fail("bad HELP");
                    std::string help;
                    for (size_t i = pos + (pos < line.size() ? 1 : 0); i < line.size(); ++i) {
                        if (line[i] == '\\') {
                            if (i + 1 >= line.size()) return fail("dangling escape in HELP");
                            const char n = line[++i];
                            if (n == '\\')
                                help += '\\';
                            else if (n == 'n')
                                help += '\n';
                            else
                                return fail("bad escape in HELP");
                        } else {
                            help += line[i];
                        }
                    }
                    if (e.help.count(name)) return fail("second HELP");
                    e.help[name] = help;
                } else {
                    if (pos >= line.size() || line[pos] != ' ') return fail("bad TYPE");
                    const std::string type = line.substr(pos + 1);
                    if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" &&
                        type != "untyped")
                        return fail("unknown type");
                    if (e.type.count(name)) return fail("second TYPE");
                    if (families_with_samples.count(name)) return fail("TYPE after samples");
                    e.type[name] = type;
                }
                continue;
            }
            return fail("unexpected comment");
        }
        Sample s;
        size_t pos = 0;
        s.name = detail::read_name(line, pos, true);
        if (s.name.empty()) return fail("no sample name");
        if (pos < line.size() && line[pos] == '{') {
            ++pos;
            bool first = true;
            while (true) {
                if (pos >= line.size()) return fail("unterminated labels");
                if (line[pos] == '}') {
                    ++pos;
                    break;
                }
                if (!first) {
                    if (line[pos] != ',') return fail("expected ','");
                    ++pos;
                    if (pos < line.size() && line[pos] == '}') return fail("trailing ','");
                }
                first = false;
                const std::string lname = detail::read_name(line, pos, false);
                if (lname.empty()) return fail("no label name");
                if (pos + 1 >= line.size() || line[pos] != '=' || line[pos + 1] != '"') return fail("expected =\"");
                pos += 2;
                std::string value;
                while (true) {
                    if (pos >= line.size()) return fail("unterminated label value");
                    const char c = line[pos++];
                    if (c == '"') break;
                    if (c == '\\') {
                        if (pos >= line.size()) return fail("dangling escape");
                        const char n = line[pos++];
                        if (n == '\\')
                            value += '\\';
                        else if (n == '"')
                            value += '"';
                        else if (n == 'n')
                            value += '\n';
                        else
                            return fail("bad escape in label value");
                    } else {
                        value += c;
                    }
                }
                if (!s.labels.emplace(lname, value).second) return fail("label repeated");
            }
        }
        if (pos >= line.size() || line[pos] != ' ') return fail("expected ' ' before the value");
        ++pos;
        const std::string value_text = line.substr(pos);
        if (value_text.find(' ') != std::string::npos) return fail("timestamps are not written by us");
        if (!detail::parse_value(value_text, s.value)) return fail("bad value");
        const std::string family = detail::family_of(s.name, e.type);
        if (!e.type.count(family)) return fail("sample before its TYPE");
        if (family != last_family && families_with_samples.count(family)) return fail("family split in two");
        last_family = family;
        families_with_samples.insert(family);
        const std::string& type = e.type[family];
        if (type == "counter" && (s.value < 0 || std::isnan(s.value))) return fail("counter negative or NaN");
        if (s.name.size() > family.size() && s.name.compare(s.name.size() - 7, 7, "_bucket") == 0) {
            if (!s.labels.count("le")) return fail("bucket without le");
        } else if (s.labels.count("le") && type == "histogram") {
            return fail("le on a non-bucket sample");
        }
        std::string key = s.name;
        for (const auto& [k, v] : s.labels) key += "\x1f" + k + "=" + v;
        if (!series_seen.insert(key).second) return fail("duplicate series");
        e.samples.push_back(std::move(s));
    }
    // Histogram invariants per series (labels without le): buckets cumulative and ascending in
    // le, a +Inf bucket, and _count equal to it.
    for (const auto& [family, type] : e.type) {
        if (type != "histogram") continue;
        std::map<std::map<std::string, std::string>, std::vector<std::pair<double, double>>> buckets;
        std::map<std::map<std::string, std::string>, double> counts;
        for (const auto& s : e.samples) {
            if (s.name == family + "_bucket") {
                auto labels = s.labels;
                double le = 0;
                if (!detail::parse_value(labels["le"], le)) return invalid_argument("bad le in " + family);
                labels.erase("le");
                buckets[labels].emplace_back(le, s.value);
            } else if (s.name == family + "_count") {
                counts[s.labels] = s.value;
            }
        }
        for (const auto& [labels, list] : buckets) {
            for (size_t i = 1; i < list.size(); ++i)
                if (!(list[i - 1].first < list[i].first) || list[i - 1].second > list[i].second)
                    return invalid_argument(family + ": buckets not ascending or not cumulative");
            if (list.empty() || !std::isinf(list.back().first)) return invalid_argument(family + ": no +Inf bucket");
            if (!counts.count(labels) || counts[labels] != list.back().second)
                return invalid_argument(family + ": _count differs from the +Inf bucket");
        }
        if (counts.size() != buckets.size()) return invalid_argument(family + ": a _count without buckets");
    }
    return e;
}

}  // namespace moe::metrics::testing
