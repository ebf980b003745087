// The synthetic workload and statistics of `moeserve bench`, shared with the in-process engine
// mode of benchmarks/moe_engine_bench, so that a seed gives both the same prompts and lengths
// and both report the same percentiles (benchmarks/served_vs_engine compares the two).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace moe::cli {

// Appends `count` requests to `jobs` (any type with `std::vector<int32_t> ids` and
// `int max_tokens`): for each, a prompt length uniform in [input_min, max(input_min,
// input_max)], that many token ids uniform in [0, vocab_size), then an output length uniform in
// [output_min, max(output_min, output_max)], all drawn from `rng` in that order.
template <typename Job>
void append_synthetic_jobs(std::mt19937_64& rng, int count, int64_t vocab_size, int input_min, int input_max,
                           int output_min, int output_max, std::vector<Job>& jobs) {
    std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab_size - 1));
    std::uniform_int_distribution<int> in_len(input_min, std::max(input_min, input_max));
    std::uniform_int_distribution<int> out_len(output_min, std::max(output_min, output_max));
    for (int i = 0; i < count; ++i) {
        Job job;
        job.ids.resize(static_cast<size_t>(in_len(rng)));
        for (int32_t& id : job.ids) id = token(rng);
        job.max_tokens = out_len(rng);
        jobs.push_back(std::move(job));
    }
}

// The p-th percentile (0..100) of v, linearly interpolated between order statistics; NaN if
// v is empty.
inline double percentile(std::vector<double> v, double p) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(rank));
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

}  // namespace moe::cli
