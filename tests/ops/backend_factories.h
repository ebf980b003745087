// The backends every op test (tests/ops) and every whole-model fixture test (tests/reference)
// runs on: the op-test driver's one list. Add a backend here and both suites run on it.
//
// A suite is value-parameterized over backend_factories(): MOE_BACKEND_TEST_SUITE(OpsGemm) then
// TEST_P(OpsGemm, ...) runs each case once per backend, against the same naive reference with the
// same inputs and tolerances, as Backends/OpsGemm.<case>/<Backend> ("/Cpu", "/CpuOnednn", "/Cuda").
// A backend that cannot run on this machine (the CUDA backend when no device answers) makes each
// of its instances skip with the reason (GTEST_SKIP): a skip, never a pass.
//
// The CUDA factory is compiled in when the build has the CUDA backend: tests/CMakeLists.txt then
// links moe_cuda, defines MOE_HAVE_CUDA_BACKEND, and gives the instances whose names end in "Cuda"
// the ctest label "gpu" as well (moe_add_test's GPU_TESTS), so `ctest -L gpu` selects them and
// `-LE gpu` leaves them out.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "moe/backend.h"
#include "moe/cpu_backend.h"
#include "moe/status.h"

#ifdef MOE_HAVE_CUDA_BACKEND
#include "moe/cuda_backend.h"
#endif

namespace moe::testing {

struct BackendFactory {
    // In traces and messages: "cpu", "cpu-onednn", "cuda".
    std::string name;
    // In test names (letters and digits only): "Cpu", "CpuOnednn", "Cuda". Instances on a device
    // that CI machines lack end in that device's name, which the ctest labels key on.
    std::string test_name;
    // The backend; kUnavailable where it cannot run on this machine (its tests skip). Any other
    // error fails the test.
    std::function<StatusOr<std::unique_ptr<Backend>>()> make;
};

inline std::vector<BackendFactory> backend_factories() {
    std::vector<BackendFactory> list;
    // Two threads: the machines that run the tests are small, and more than one thread makes
    // the determinism checks meaningful.
    list.push_back({"cpu", "Cpu", []() -> StatusOr<std::unique_ptr<Backend>> {
                        return make_cpu_backend({.num_threads = 2, .matmul = CpuMatmul::kOwn});
                    }});
    // oneDNN multiplies by the packed panels (the route CpuMatmul::kAuto takes on a CPU with AMX),
    // so every case covers both CPU routes whatever this CPU has.
    list.push_back({"cpu-onednn", "CpuOnednn", []() -> StatusOr<std::unique_ptr<Backend>> {
                        return make_cpu_backend({.num_threads = 2, .matmul = CpuMatmul::kOnednn});
                    }});
#ifdef MOE_HAVE_CUDA_BACKEND
    // Device 0. kUnavailable "no CUDA device: ..." when cudaGetDeviceCount fails (any error: no
    // driver, no GPU) or finds none.
    list.push_back({"cuda", "Cuda", []() { return make_cuda_backend(0); }});
#endif
    return list;
}

// gtest prints parameters in failure messages: the backend's name, not the std::function's bytes.
inline void PrintTo(const BackendFactory& f, std::ostream* os) {
    *os << f.name;
}

// The instance suffix INSTANTIATE_TEST_SUITE_P gives each backend's tests.
inline std::string backend_test_name(const ::testing::TestParamInfo<BackendFactory>& info) {
    return info.param.test_name;
}

// The skip message for a backend that cannot run on this machine.
inline std::string unavailable_message(const BackendFactory& f, const Status& s) {
    return f.name + " backend not available on this machine: " + s.to_string();
}

// The fixture of a suite over every backend: be() is the parameter's backend, made in SetUp;
// kUnavailable skips the test, any other error fails it.
class BackendTest : public ::testing::TestWithParam<BackendFactory> {
protected:
    void SetUp() override {
        auto be = GetParam().make();
        if (!be.ok() && be.status().code() == StatusCode::kUnavailable)
            GTEST_SKIP() << unavailable_message(GetParam(), be.status());
        ASSERT_TRUE(be.ok()) << "making the " << GetParam().name << " backend: " << be.status().to_string();
        be_ = std::move(be).value();
    }
    Backend& be() { return *be_; }
    const std::string& backend_name() const { return GetParam().name; }

    std::unique_ptr<Backend> be_;
};

}  // namespace moe::testing

// Declares `suite` as a test suite over every backend of backend_factories(); its cases are
// TEST_P(suite, Case) with be() and backend_name().
#define MOE_BACKEND_TEST_SUITE(suite)                                                                   \
    class suite : public ::moe::testing::BackendTest {};                                                \
    INSTANTIATE_TEST_SUITE_P(Backends, suite, ::testing::ValuesIn(::moe::testing::backend_factories()), \
                             ::moe::testing::backend_test_name)
