// Helpers for the CUDA backend's own tests (backend_test.cc): a fixture that skips visibly without
// a GPU, and status assertions. Op tests do not live here: they run on every backend, the CUDA
// one included, from tests/ops (backend_factories.h).
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <utility>

#include "moe/backend.h"
#include "moe/cuda_backend.h"
#include "moe/status.h"

namespace moe::gpu_test {

// Each test gets its own backend on device 0. No device (any cudaGetDeviceCount error, or zero
// devices) skips the test with the reason; any other failure to create the backend fails it.
class CudaTest : public ::testing::Test {
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

}  // namespace moe::gpu_test

// Fails the test (with the status) when `expr` is not OK.
#define MOE_ASSERT_OK(expr)                                                 \
    do {                                                                    \
        const ::moe::Status moe_test_status_ = (expr);                      \
        ASSERT_TRUE(moe_test_status_.ok()) << moe_test_status_.to_string(); \
    } while (0)

// Binds the value of a StatusOr expression or fails the test.
#define MOE_ASSERT_OK_AND_ASSIGN(lhs, expr) \
    MOE_ASSERT_OK_AND_ASSIGN_IMPL_(MOE_STATUS_CONCAT_(moe_test_or_, __LINE__), lhs, expr)
#define MOE_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
    auto tmp = (expr);                                 \
    ASSERT_TRUE(tmp.ok()) << tmp.status().to_string(); \
    lhs = std::move(tmp).value()
