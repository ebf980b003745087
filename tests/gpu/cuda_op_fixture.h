// A fixture for CUDA op tests built on tests/ops/op_test_util.h (DeviceArena, Rng, expect_close),
// so that the cases and tolerances read the same as the CPU tests. Skips with "no CUDA device: ..."
// when no GPU answers; any other failure to create the backend fails the test.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "moe/cuda_backend.h"
#include "ops/op_test_util.h"

namespace moe::testing {

class CudaOpTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto be = make_cuda_backend(0);
        if (!be.ok()) {
            if (be.status().code() == StatusCode::kUnavailable) GTEST_SKIP() << be.status().message();
            FAIL() << "make_cuda_backend(0): " << be.status().to_string();
        }
        be_ = std::move(be).value();
    }
    Backend& be() { return *be_; }
    std::unique_ptr<Backend> be_;
};

}  // namespace moe::testing
