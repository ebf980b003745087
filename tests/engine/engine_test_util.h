// Helpers shared by the engine tests: a sink that records a request's events, and the greedy
// reference of a Hugging Face fixture (tests/reference/fixtures/<name>).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace moe::testing {

class CollectSink : public RequestSink {
public:
    void on_delta(DeltaEvent&& d) override {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& t : d.tokens) tokens_.push_back(t.token);
        text_ += d.text;
        ++num_deltas_;
    }
    void on_final(FinalEvent&& f) override {
        std::lock_guard<std::mutex> lock(mu_);
        final_ = std::move(f);
        ++num_finals_;
        cv_.notify_all();
    }
    bool wait(std::chrono::seconds timeout = std::chrono::seconds(60)) {
        std::unique_lock<std::mutex> lock(mu_);
        return cv_.wait_for(lock, timeout, [&] { return num_finals_ > 0; });
    }
    std::vector<int32_t> tokens() const {
        std::lock_guard<std::mutex> l(mu_);
        return tokens_;
    }
    std::string text() const {
        std::lock_guard<std::mutex> l(mu_);
        return text_;
    }
    FinalEvent final_event() const {
        std::lock_guard<std::mutex> l(mu_);
        return final_;
    }
    int num_finals() const {
        std::lock_guard<std::mutex> l(mu_);
        return num_finals_;
    }
    int num_deltas() const {
        std::lock_guard<std::mutex> l(mu_);
        return num_deltas_;
    }

private:
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::vector<int32_t> tokens_;
    std::string text_;
    FinalEvent final_;
    int num_finals_ = 0;
    int num_deltas_ = 0;
};

inline std::string fixture_dir(const std::string& name) {
    return std::string(MOE_SOURCE_DIR) + "/tests/reference/fixtures/" + name;
}

struct Reference {
    std::vector<std::vector<int32_t>> prompts, greedy;
};

inline Reference load_reference(const std::string& name) {
    std::ifstream in(fixture_dir(name) + "/reference.json");
    EXPECT_TRUE(in.good()) << "missing " << fixture_dir(name) << "/reference.json";
    auto j = nlohmann::json::parse(in);
    return {j["prompts"].get<std::vector<std::vector<int32_t>>>(),
            j["greedy"].get<std::vector<std::vector<int32_t>>>()};
}

}  // namespace moe::testing
