#include "core/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "moe/check.h"

namespace moe::metrics {

// ---- values ------------------------------------------------------------------------------------

void Counter::inc(double v) {
    if (!(v >= 0)) return;  // negative or NaN
    value_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
    for (size_t i = 0; i < bounds_.size(); ++i) {
        MOE_CHECK(std::isfinite(bounds_[i]));
        if (i > 0) MOE_CHECK_LT(bounds_[i - 1], bounds_[i]);
    }
    for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) {
    if (std::isnan(v)) return;
    // lower_bound: the first bound >= v, since Prometheus buckets are `le` (inclusive).
    const size_t idx = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
    counts_[idx].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
    Snapshot s;
    s.cumulative.resize(bounds_.size() + 1);
    uint64_t running = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
        running += counts_[i].load(std::memory_order_relaxed);
        s.cumulative[i] = running;
    }
    s.count = running;
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
}

// ---- families ----------------------------------------------------------------------------------

FamilyBase::FamilyBase(std::string name, std::string help, MetricType type, std::vector<std::string> label_names,
                       std::vector<double> buckets)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)),
      buckets_(std::move(buckets)) {}

Metric& FamilyBase::child(const std::vector<std::string>& values) {
    MOE_CHECK_EQ(values.size(), label_names_.size());
    std::lock_guard<std::mutex> lock(mu_);
    auto it = children_.find(values);
    if (it != children_.end()) return *it->second;
    std::unique_ptr<Metric> m;
    switch (type_) {
        case MetricType::kCounter:
            m = std::make_unique<Counter>();
            break;
        case MetricType::kGauge:
            m = std::make_unique<Gauge>();
            break;
        case MetricType::kHistogram:
            m = std::make_unique<Histogram>(buckets_);
            break;
    }
    Metric& ref = *m;
    children_.emplace(values, std::move(m));
    return ref;
}

// ---- registry ----------------------------------------------------------------------------------

namespace {

bool name_char(char c, bool first, bool colon_ok) {
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_ok && c == ':');
    return first ? alpha : (alpha || (c >= '0' && c <= '9'));
}

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::vector<std::string> sample_names(const std::string& name, MetricType type) {
    if (type == MetricType::kHistogram) return {name + "_bucket", name + "_sum", name + "_count"};
    return {name};
}

}  // namespace

bool valid_metric_name(std::string_view name) {
    if (name.empty()) return false;
    for (size_t i = 0; i < name.size(); ++i)
        if (!name_char(name[i], i == 0, /*colon_ok=*/true)) return false;
    return true;
}

bool valid_label_name(std::string_view name) {
    if (name.empty() || name.substr(0, 2) == "__") return false;
    for (size_t i = 0; i < name.size(); ++i)
        if (!name_char(name[i], i == 0, /*colon_ok=*/false)) return false;
    return true;
}

FamilyBase& Registry::add(const std::string& name, const std::string& help, MetricType type,
                          const std::vector<std::string>& label_names, const std::vector<double>& buckets) {
    MOE_CHECK(valid_metric_name(name));
    if (type == MetricType::kCounter) MOE_CHECK(ends_with(name, "_total"));
    for (size_t i = 0; i < label_names.size(); ++i) {
        MOE_CHECK(valid_label_name(label_names[i]));
        if (type == MetricType::kHistogram) MOE_CHECK(label_names[i] != "le");
        for (size_t j = 0; j < i; ++j) MOE_CHECK(label_names[i] != label_names[j]);
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = by_name_.find(name); it != by_name_.end()) {
        FamilyBase& f = *it->second;
        MOE_CHECK(f.type() == type);
        MOE_CHECK(f.help() == help);
        MOE_CHECK(f.label_names() == label_names);
        MOE_CHECK(f.buckets() == buckets);
        return f;
    }
    const std::vector<std::string> samples = sample_names(name, type);
    for (const auto& s : samples) MOE_CHECK(sample_owner_.count(s) == 0);
    std::unique_ptr<FamilyBase> f;
    switch (type) {
        case MetricType::kCounter:
            f = std::make_unique<Family<Counter>>(name, help, type, label_names, std::vector<double>{});
            break;
        case MetricType::kGauge:
            f = std::make_unique<Family<Gauge>>(name, help, type, label_names, std::vector<double>{});
            break;
        case MetricType::kHistogram:
            f = std::make_unique<Family<Histogram>>(name, help, type, label_names, buckets);
            break;
    }
    FamilyBase& ref = *f;
    for (const auto& s : samples) sample_owner_[s] = name;
    by_name_[name] = f.get();
    families_.push_back(std::move(f));
    return ref;
}

Family<Counter>& Registry::counter(const std::string& name, const std::string& help,
                                   const std::vector<std::string>& label_names) {
    auto& f = static_cast<Family<Counter>&>(add(name, help, MetricType::kCounter, label_names, {}));
    if (label_names.empty()) f.get();
    return f;
}

Family<Gauge>& Registry::gauge(const std::string& name, const std::string& help,
                               const std::vector<std::string>& label_names) {
    auto& f = static_cast<Family<Gauge>&>(add(name, help, MetricType::kGauge, label_names, {}));
    if (label_names.empty()) f.get();
    return f;
}

Family<Histogram>& Registry::histogram(const std::string& name, const std::string& help,
                                       const std::vector<double>& buckets,
                                       const std::vector<std::string>& label_names) {
    // Checked here too (not only per child) so that a bad bucket list fails at registration.
    for (size_t i = 0; i < buckets.size(); ++i) {
        MOE_CHECK(std::isfinite(buckets[i]));
        if (i > 0) MOE_CHECK_LT(buckets[i - 1], buckets[i]);
    }
    auto& f = static_cast<Family<Histogram>&>(add(name, help, MetricType::kHistogram, label_names, buckets));
    if (label_names.empty()) f.get();
    return f;
}

// ---- text exposition ---------------------------------------------------------------------------

std::string format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    // Whole numbers as Python's prometheus_client writes them ("3.0", not "3e+00" or "3"), so that
    // `le` label values match a vLLM server's byte for byte (a dashboard may select le="1.0").
    if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<int64_t>(v)) + ".0";
    char buf[64];
    // Otherwise the shortest form that parses back to the same double (Go's ParseFloat reads it too).
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
    MOE_CHECK(ec == std::errc());
    return std::string(buf, end);
}

std::string escape_label_value(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string escape_help(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

namespace {

const char* type_name(MetricType t) {
    switch (t) {
        case MetricType::kCounter:
            return "counter";
        case MetricType::kGauge:
            return "gauge";
        case MetricType::kHistogram:
            return "histogram";
    }
    return "untyped";
}

// `{a="x",b="y"}` (with `extra_name="extra_value"` last, for `le`), or "" when there are none.
void append_labels(std::string& out, const std::vector<std::string>& names, const std::vector<std::string>& values,
                   const char* extra_name = nullptr, const std::string& extra_value = {}) {
    if (names.empty() && extra_name == nullptr) return;
    out += '{';
    for (size_t i = 0; i < names.size(); ++i) {
        if (i > 0) out += ',';
        out += names[i];
        out += "=\"";
        out += escape_label_value(values[i]);
        out += '"';
    }
    if (extra_name != nullptr) {
        if (!names.empty()) out += ',';
        out += extra_name;
        out += "=\"";
        out += extra_value;
        out += '"';
    }
    out += '}';
}

}  // namespace

std::string render_text(const Registry& registry) {
    std::string out;
    registry.for_each([&](const FamilyBase& f) {
        out += "# HELP ";
        out += f.name();
        out += ' ';
        out += escape_help(f.help());
        out += "\n# TYPE ";
        out += f.name();
        out += ' ';
        out += type_name(f.type());
        out += '\n';
        f.for_each([&](const std::vector<std::string>& values, const Metric& m) {
            switch (f.type()) {
                case MetricType::kCounter:
                case MetricType::kGauge: {
                    const double v = f.type() == MetricType::kCounter ? static_cast<const Counter&>(m).value()
                                                                      : static_cast<const Gauge&>(m).value();
                    out += f.name();
                    append_labels(out, f.label_names(), values);
                    out += ' ';
                    out += format_value(v);
                    out += '\n';
                    break;
                }
                case MetricType::kHistogram: {
                    const auto& h = static_cast<const Histogram&>(m);
                    const Histogram::Snapshot s = h.snapshot();
                    const auto& bounds = h.upper_bounds();
                    for (size_t i = 0; i <= bounds.size(); ++i) {
                        out += f.name();
                        out += "_bucket";
                        append_labels(out, f.label_names(), values, "le",
                                      i < bounds.size() ? format_value(bounds[i]) : std::string("+Inf"));
                        out += ' ';
                        out += std::to_string(s.cumulative[i]);
                        out += '\n';
                    }
                    out += f.name();
                    out += "_sum";
                    append_labels(out, f.label_names(), values);
                    out += ' ';
                    out += format_value(s.sum);
                    out += '\n';
                    out += f.name();
                    out += "_count";
                    append_labels(out, f.label_names(), values);
                    out += ' ';
                    out += std::to_string(s.count);
                    out += '\n';
                    break;
                }
            }
        });
    });
    return out;
}

}  // namespace moe::metrics
