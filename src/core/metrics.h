// Prometheus metrics: counters, gauges and fixed-bucket histograms with label sets, and the text
// exposition format 0.0.4 that a Prometheus server scrapes from GET /metrics.
//
// No C++ Prometheus client is packaged in Debian, and the format is small, so this is our own.
//
// API (what a /metrics handler and an instrumented module use):
//
//   metrics::Registry& reg = engine.metrics();                 // the process's registry
//   auto& errors = reg.counter("moe:request_errors_total", "Requests ended with an error status.",
//                              {"code"});
//   errors.labels({"UNAVAILABLE"}).inc();                      // a child per label-value set
//   auto& ttft = reg.histogram("vllm:time_to_first_token_seconds", "...", {0.01, 0.1, 1}, {"model_name"});
//   metrics::Histogram& h = ttft.labels({"demo"});             // resolve once, keep the reference
//   h.observe(0.042);                                          // lock-free
//
//   std::string body = metrics::render_text(reg);              // the HTTP response body
//   content type: metrics::kTextContentType
//
// Naming: counter names end in `_total` (rendered as given). Names used by vLLM keep vLLM's name
// and `vllm:` prefix where the meaning is the same, so existing dashboards work; our own metrics
// use the `moe:` prefix (docs/ARCHITECTURE.md, "Metrics", lists them).
//
// Thread safety: everything is safe from any thread. Counter::inc, Gauge::set/inc/dec and
// Histogram::observe are lock-free atomics (relaxed: a scrape may see one update of a series and
// not yet another; each series itself is never torn). Registering a family and the first
// labels() of a label-value set take the registry's or family's mutex: callers on hot paths
// (the engine thread) resolve their children once and keep the references, which stay valid for
// the registry's lifetime. render_text takes the same mutexes, never the hot path's.
//
// Errors: metric and label names are fixed by the program, so a bad name, a label count that
// does not match, or a name registered twice with a different type, help, label set or buckets
// is a programmer error (MOE_CHECK). Label values are free text (escaped when rendered).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace moe::metrics {

// The Content-Type of render_text's output.
inline constexpr const char* kTextContentType = "text/plain; version=0.0.4; charset=utf-8";

enum class MetricType { kCounter, kGauge, kHistogram };

// The common base of a family's children (so a family can own them); no virtual call on the
// hot path.
class Metric {
public:
    virtual ~Metric() = default;
};

// A value that only goes up (requests, tokens). Starts at 0.
class Counter final : public Metric {
public:
    // Adds v. A negative or NaN v is ignored (a counter never goes down).
    void inc(double v = 1.0);
    double value() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<double> value_{0.0};
};

// A value that goes up and down (requests running, KV blocks used). Starts at 0.
class Gauge final : public Metric {
public:
    void set(double v) { value_.store(v, std::memory_order_relaxed); }
    void inc(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
    void dec(double v = 1.0) { value_.fetch_sub(v, std::memory_order_relaxed); }
    double value() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<double> value_{0.0};
};

// Observations counted into fixed buckets (upper bounds, inclusive: v <= bound), plus +Inf.
class Histogram final : public Metric {
public:
    // `upper_bounds`: finite, strictly increasing, may be empty (+Inf only). MOE_CHECK otherwise.
    explicit Histogram(std::vector<double> upper_bounds);
    // Counts v into the first bucket whose bound is >= v and adds it to the sum. NaN is ignored.
    void observe(double v);

    struct Snapshot {
        std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
        double sum = 0;
        uint64_t count = 0;
    };
    // Consistent per bucket; count is the +Inf bucket, so the rendered _count always equals
    // the +Inf bucket even while observations land. The sum may lag those by an observation.
    Snapshot snapshot() const;
    const std::vector<double>& upper_bounds() const { return bounds_; }

private:
    std::vector<double> bounds_;
    std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1 (the last is +Inf)
    std::atomic<double> sum_{0.0};
};

// One metric name: its help, type, label names, and one child per label-value set.
class FamilyBase {
public:
    FamilyBase(std::string name, std::string help, MetricType type, std::vector<std::string> label_names,
               std::vector<double> buckets);
    FamilyBase(const FamilyBase&) = delete;
    FamilyBase& operator=(const FamilyBase&) = delete;
    virtual ~FamilyBase() = default;

    const std::string& name() const { return name_; }
    const std::string& help() const { return help_; }
    MetricType type() const { return type_; }
    const std::vector<std::string>& label_names() const { return label_names_; }
    const std::vector<double>& buckets() const { return buckets_; }

    // Calls fn(label_values, metric) for every child, in label-value order, under the family's
    // mutex (fn must not call labels() of the same family).
    template <typename Fn>
    void for_each(Fn&& fn) const {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& [values, metric] : children_) fn(values, *metric);
    }

protected:
    // The child for `values` (one per label name, in order), created at first use.
    Metric& child(const std::vector<std::string>& values);

private:
    std::string name_;
    std::string help_;
    MetricType type_;
    std::vector<std::string> label_names_;
    std::vector<double> buckets_;  // histograms only
    mutable std::mutex mu_;
    std::map<std::vector<std::string>, std::unique_ptr<Metric>> children_;
};

// A family of one metric type. labels() returns a reference valid for the registry's lifetime.
template <typename T>
class Family final : public FamilyBase {
public:
    using FamilyBase::FamilyBase;
    // MOE_CHECK: values.size() == label_names().size().
    T& labels(const std::vector<std::string>& values) { return static_cast<T&>(child(values)); }
    // The one child of a family without labels.
    T& get() { return labels({}); }
};

class Registry {
public:
    Registry() = default;
    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    // Registers a family, or returns the one already registered under `name` when type, help,
    // label names and buckets are the same (so two modules may ask for the same metric). A
    // family without labels gets its single child at once (rendered as 0 before any update).
    // MOE_CHECK on: a name or label name Prometheus would refuse, a label named `le` on a
    // histogram or starting with `__`, a counter name not ending in `_total`, a name whose
    // samples (name, name_bucket/_sum/_count) collide with another family's, or a mismatch with
    // the family already registered.
    Family<Counter>& counter(const std::string& name, const std::string& help,
                             const std::vector<std::string>& label_names = {});
    Family<Gauge>& gauge(const std::string& name, const std::string& help,
                         const std::vector<std::string>& label_names = {});
    Family<Histogram>& histogram(const std::string& name, const std::string& help, const std::vector<double>& buckets,
                                 const std::vector<std::string>& label_names = {});

    // Calls fn(family) for every family in registration order, under the registry's mutex.
    template <typename Fn>
    void for_each(Fn&& fn) const {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& f : families_) fn(static_cast<const FamilyBase&>(*f));
    }

private:
    FamilyBase& add(const std::string& name, const std::string& help, MetricType type,
                    const std::vector<std::string>& label_names, const std::vector<double>& buckets);

    mutable std::mutex mu_;
    std::vector<std::unique_ptr<FamilyBase>> families_;
    std::map<std::string, FamilyBase*> by_name_;
    std::map<std::string, std::string> sample_owner_;  // every sample name -> its family's name
};

// The Prometheus text exposition (format 0.0.4) of every family: `# HELP` and `# TYPE` lines,
// then one line per series; histograms as `_bucket{...,le="..."}` (cumulative, ending with
// le="+Inf"), `_sum` and `_count`. Label values escape `\`, `"` and newline; help escapes `\` and
// newline. Values: shortest round-trip decimal, `+Inf`, `-Inf`, `NaN`.
std::string render_text(const Registry& registry);

// Building blocks of render_text, exposed for tests and other renderers.
std::string format_value(double v);
std::string escape_label_value(std::string_view v);
std::string escape_help(std::string_view v);
bool valid_metric_name(std::string_view name);
bool valid_label_name(std::string_view name);

}  // namespace moe::metrics
