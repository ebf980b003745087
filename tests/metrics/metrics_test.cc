#include "core/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "metrics/exposition_parser.h"

namespace moe::metrics {
namespace {

using testing::Exposition;
using testing::parse_exposition;

Exposition parse_or_fail(const std::string& text) {
    auto e = parse_exposition(text);
    EXPECT_TRUE(e.ok()) << e.status().to_string() << "\n---\n" << text;
    return e.ok() ? std::move(e).value() : Exposition{};
}

TEST(Metrics, CounterOnlyGoesUp) {
    Registry reg;
    Counter& c = reg.counter("t_requests_total", "Requests.").get();
    c.inc();
    c.inc(2.5);
    c.inc(-4);                                        // ignored: a counter never goes down
    c.inc(std::numeric_limits<double>::quiet_NaN());  // ignored
    EXPECT_DOUBLE_EQ(c.value(), 3.5);
}

TEST(Metrics, GaugeSetsAndMoves) {
    Registry reg;
    Gauge& g = reg.gauge("t_running", "Running.").get();
    g.set(7);
    g.inc();
    g.dec(3);
    EXPECT_DOUBLE_EQ(g.value(), 5);
}

TEST(Metrics, HistogramBucketsAreInclusiveUpperBounds) {
    Histogram h({0.1, 1, 10});
    h.observe(0.1);                                       // exactly on a bound: in le=0.1
    h.observe(0.5);                                       // le=1
    h.observe(10);                                        // le=10
    h.observe(11);                                        // +Inf only
    h.observe(-3);                                        // below every bound: le=0.1
    h.observe(std::numeric_limits<double>::quiet_NaN());  // ignored
    const Histogram::Snapshot s = h.snapshot();
    ASSERT_EQ(s.cumulative.size(), 4u);
    EXPECT_EQ(s.cumulative[0], 2u);
    EXPECT_EQ(s.cumulative[1], 3u);
    EXPECT_EQ(s.cumulative[2], 4u);
    EXPECT_EQ(s.cumulative[3], 5u);
    EXPECT_EQ(s.count, 5u);
    EXPECT_DOUBLE_EQ(s.sum, 0.1 + 0.5 + 10 + 11 - 3);
}

// The exact bytes of the format for a small registry: HELP, TYPE, label order as declared, le
// last, cumulative buckets ending in +Inf, _sum and _count, whole numbers as "N.0".
TEST(Metrics, RendersTheTextFormat) {
    Registry reg;
    reg.counter("t_done_total", "Finished requests.", {"model_name", "finished_reason"}).labels({"m", "stop"}).inc(3);
    reg.gauge("t_usage_perc", "KV usage, 0..1.").get().set(0.25);
    auto& h = reg.histogram("t_latency_seconds", "Latency.", {0.5, 2}, {"model_name"});
    h.labels({"m"}).observe(0.25);
    h.labels({"m"}).observe(1.5);
    h.labels({"m"}).observe(100);
    const std::string expected =
        "# HELP t_done_total Finished requests.\n"
        "# TYPE t_done_total counter\n"
        "t_done_total{model_name=\"m\",finished_reason=\"stop\"} 3.0\n"
        "# HELP t_usage_perc KV usage, 0..1.\n"
        "# TYPE t_usage_perc gauge\n"
        "t_usage_perc 0.25\n"
        "# HELP t_latency_seconds Latency.\n"
        "# TYPE t_latency_seconds histogram\n"
        "t_latency_seconds_bucket{model_name=\"m\",le=\"0.5\"} 1\n"
        "t_latency_seconds_bucket{model_name=\"m\",le=\"2.0\"} 2\n"
        "t_latency_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 3\n"
        "t_latency_seconds_sum{model_name=\"m\"} 101.75\n"
        "t_latency_seconds_count{model_name=\"m\"} 3\n";
    EXPECT_EQ(render_text(reg), expected);
}

TEST(Metrics, FormatsValuesAsPrometheusReadsThem) {
    EXPECT_EQ(format_value(0), "0.0");
    EXPECT_EQ(format_value(-2), "-2.0");
    EXPECT_EQ(format_value(1e6), "1000000.0");
    EXPECT_EQ(format_value(0.005), "0.005");
    EXPECT_EQ(format_value(1e300), "1e+300");
    EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
    EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
    EXPECT_EQ(format_value(std::numeric_limits<double>::quiet_NaN()), "NaN");
    // Round trip of an awkward value.
    EXPECT_EQ(std::strtod(format_value(0.1 + 0.2).c_str(), nullptr), 0.1 + 0.2);
}

// Label values are free text: backslash, quote and newline are escaped and read back exactly;
// help text escapes backslash and newline.
TEST(Metrics, EscapesLabelValuesAndHelp) {
    Registry reg;
    const std::string nasty = "a\\b\"c\nd}{,=\xc3\xa9";
    reg.counter("t_odd_total", "Help with \\ and\nnewline.", {"v"}).labels({nasty}).inc();
    const std::string text = render_text(reg);
    EXPECT_NE(text.find("v=\"a\\\\b\\\"c\\nd}{,=\xc3\xa9\""), std::string::npos) << text;
    EXPECT_NE(text.find("# HELP t_odd_total Help with \\\\ and\\nnewline.\n"), std::string::npos) << text;
    const Exposition e = parse_or_fail(text);
    EXPECT_EQ(e.value("t_odd_total", {{"v", nasty}}), 1);
    EXPECT_EQ(e.help.at("t_odd_total"), "Help with \\ and\nnewline.");
}

TEST(Metrics, SameRegistrationReturnsTheSameFamilyAndChildrenAreStable) {
    Registry reg;
    auto& a = reg.counter("t_x_total", "X.", {"k"});
    auto& b = reg.counter("t_x_total", "X.", {"k"});
    EXPECT_EQ(&a, &b);
    Counter& c1 = a.labels({"one"});
    for (int i = 0; i < 100; ++i) a.labels({"v" + std::to_string(i)});  // the map grows
    EXPECT_EQ(&c1, &b.labels({"one"}));
    c1.inc();
    const Exposition e = parse_or_fail(render_text(reg));
    EXPECT_EQ(e.value("t_x_total", {{"k", "one"}}), 1);
    EXPECT_EQ(e.value("t_x_total", {{"k", "v7"}}), 0);
    EXPECT_EQ(e.samples.size(), 101u);
}

TEST(Metrics, UnlabelledFamiliesRenderZeroBeforeAnyUpdate) {
    Registry reg;
    reg.counter("t_a_total", "A.");
    reg.histogram("t_h", "H.", {1});
    reg.gauge("t_l", "Labelled, no child yet.", {"x"});
    const Exposition e = parse_or_fail(render_text(reg));
    EXPECT_EQ(e.value("t_a_total"), 0);
    EXPECT_EQ(e.value("t_h_count"), 0);
    EXPECT_EQ(e.value("t_h_bucket", {{"le", "+Inf"}}), 0);
    EXPECT_EQ(e.type.at("t_l"), "gauge");
}

TEST(MetricsDeathTest, ProgrammerErrorsAreChecked) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_DEATH(
        {
            Registry r;
            r.counter("t-bad-name_total", "x");
        },
        "valid_metric_name");
    EXPECT_DEATH(
        {
            Registry r;
            r.counter("t_no_suffix", "x");
        },
        "_total");
    EXPECT_DEATH(
        {
            Registry r;
            r.histogram("t_h", "x", {1}, {"le"});
        },
        "le");
    EXPECT_DEATH(
        {
            Registry r;
            r.histogram("t_h", "x", {2, 1});
        },
        "<");
    EXPECT_DEATH(
        {
            Registry r;
            r.histogram("t_h", "x", {1});
            r.gauge("t_h_count", "x");  // would duplicate the histogram's _count series
        },
        "sample_owner_");
    EXPECT_DEATH(
        {
            Registry r;
            r.counter("t_c_total", "x", {"a"});
            r.counter("t_c_total", "x", {"b"});  // same name, other labels
        },
        "label_names");
    EXPECT_DEATH(
        {
            Registry r;
            r.counter("t_c_total", "x", {"a"}).labels({"1", "2"});
        },
        "size");
}

// Writers on four threads while a fifth renders: every render parses strictly (no torn line, no
// _count above the +Inf bucket) and the final totals are exact.
TEST(Metrics, ConcurrentUpdatesAndScrapes) {
    Registry reg;
    auto& c = reg.counter("t_tokens_total", "Tokens.", {"t"});
    auto& h = reg.histogram("t_lat", "Latency.", {0.25, 0.5, 0.75});
    constexpr int kThreads = 4;
    constexpr int kIters = 50000;
    std::atomic<bool> stop{false};
    int renders = 0;
    std::thread scraper([&] {
        while (!stop.load()) {
            auto e = parse_exposition(render_text(reg));
            ASSERT_TRUE(e.ok()) << e.status().to_string();
            ++renders;
        }
    });
    std::vector<std::thread> writers;
    for (int t = 0; t < kThreads; ++t) {
        writers.emplace_back([&, t] {
            Counter& mine = c.labels({std::to_string(t % 2)});
            for (int i = 0; i < kIters; ++i) {
                mine.inc();
                h.get().observe((i % 4) * 0.25);
            }
        });
    }
    for (auto& w : writers) w.join();
    stop = true;
    scraper.join();
    const Exposition e = parse_or_fail(render_text(reg));
    EXPECT_EQ(e.value("t_tokens_total", {{"t", "0"}}), 2.0 * kIters);
    EXPECT_EQ(e.value("t_tokens_total", {{"t", "1"}}), 2.0 * kIters);
    EXPECT_EQ(e.value("t_lat_count"), double(kThreads) * kIters);
    EXPECT_EQ(e.value("t_lat_bucket", {{"le", "0.25"}}), double(kThreads) * kIters / 2);  // 0 and 0.25
    EXPECT_DOUBLE_EQ(e.value("t_lat_sum"), kThreads * (kIters / 4) * (0 + 0.25 + 0.5 + 0.75));
    EXPECT_GT(renders, 0);
}

// The strict C++ reader refuses what Prometheus refuses (so that passing it means something).
TEST(Metrics, StrictReaderRefusesMalformedExpositions) {
    const char* bad[] = {
        "x 1\n",                                                                             // no TYPE
        "# TYPE x gauge\nx 1\nx 2\n",                                                        // duplicate series
        "# TYPE x gauge\nx{a=\"1\\t\"} 1\n",                                                 // bad escape
        "# TYPE x gauge\nx{a=\"1\"} one\n",                                                  // bad value
        "# TYPE x_total counter\nx_total -1\n",                                              // negative counter
        "# TYPE h histogram\nh_bucket{le=\"1.0\"} 2\nh_count 2\n",                           // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"1.0\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",  // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",                          // count != +Inf
        "# TYPE x gauge\nx 1",                                                               // no final newline
    };
    for (const char* text : bad) EXPECT_FALSE(parse_exposition(text).ok()) << text;
}

std::string fixture_text() {
    Registry reg;
    reg.counter("vllm:request_success_total", "Finished requests.", {"model_name", "finished_reason"})
        .labels({"demo", "stop"})
        .inc(5);
    reg.counter("vllm:request_success_total", "Finished requests.", {"model_name", "finished_reason"})
        .labels({"demo \"quoted\" \\ \n", "length"})
        .inc(2);
    reg.gauge("vllm:kv_cache_usage_perc", "KV usage.", {"model_name"}).labels({"demo"}).set(0.125);
    reg.gauge("moe:neg", "Negative and huge.").get().set(-1e300);
    auto& h = reg.histogram("vllm:time_to_first_token_seconds", "TTFT.", {0.001, 0.01, 0.1, 1, 2.5}, {"model_name"});
    for (double v : {0.0005, 0.02, 0.02, 3.0}) h.labels({"demo"}).observe(v);
    return render_text(reg);
}

// The official Python client's parser reads our output and sees the same samples as our strict
// reader. Skips (visibly) where python3 or prometheus_client is missing.
TEST(Metrics, PythonPrometheusClientParsesTheOutput) {
#ifndef MOE_PYTHON3
    GTEST_SKIP() << "python3 was not found at configure time";
#else
    const std::string text = fixture_text();
    const Exposition ours = parse_or_fail(text);
    char path[] = "/tmp/moe_metrics_XXXXXX";
    const int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    close(fd);
    const std::string cmd =
        std::string(MOE_PYTHON3) + " " + MOE_SOURCE_DIR "/tests/metrics/check_exposition.py " + path + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[4096];
    size_t n = 0;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    const int status = pclose(p);
    unlink(path);
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (rc == 77) GTEST_SKIP() << "prometheus_client not installed: " << out;
    ASSERT_EQ(rc, 0) << out;
    std::istringstream lines(out);
    std::string line;
    size_t matched = 0;
    while (std::getline(lines, line)) {
        const auto j = nlohmann::json::parse(line);
        std::map<std::string, std::string> labels = j[1].get<std::map<std::string, std::string> >();
        double value = 0;
        if (j[2].is_string())
            ASSERT_TRUE(testing::detail::parse_value(j[2].get<std::string>(), value)) << line;
        else
            value = j[2].get<double>();
        const std::string name = j[0].get<std::string>();
        // prometheus_client spells le as it read it; compare through our reader's samples.
        const double expected = ours.value(name, labels);
        EXPECT_EQ(expected, value) << line;
        ++matched;
    }
    EXPECT_EQ(matched, ours.samples.size()) << out;
#endif
}

}  // namespace
}  // namespace moe::metrics
