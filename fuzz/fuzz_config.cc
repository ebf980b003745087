// Fuzz target: config.json, optionally followed by "\n#--\n" and generation_config.json,
// loaded as a model directory; an accepted config must survive every derived computation
// (parameter counts, the expected-tensor walk) without overflow or out-of-range access.
#include <cstdint>
#include <filesystem>

#include "fuzz_util.h"
#include "model/config.h"
#include "model/expected_tensors.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    return moe::fuzz::quiet_logs();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::filesystem::path dir = [] {
        const auto d = moe::fuzz::scratch_dir() / "config_model";
        std::filesystem::create_directories(d);
        return d;
    }();
    const auto parts = moe::fuzz::split_parts(data, size, 2);
    moe::fuzz::write_file(dir / "config.json", parts[0]);
    std::error_code ec;
    if (parts.size() > 1) {
        moe::fuzz::write_file(dir / "generation_config.json", parts[1]);
    } else {
        std::filesystem::remove(dir / "generation_config.json", ec);
    }
    auto c = moe::load_model_config(dir);
    if (!c.ok()) return 0;
    volatile int64_t sink = c->total_params() + c->active_params_per_token();
    int visited = 0;
    moe::for_each_expected_tensor(*c, [&](const moe::ExpectedTensor& t) {
        sink = sink + static_cast<int64_t>(t.shape.size());
        return ++visited < 256;
    });
    (void)sink;
    return 0;
}
