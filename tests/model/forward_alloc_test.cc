// A steady decode step allocates nothing on the heap but its own result (ForwardOutput's two
// vectors): the workspace, the kernels' scratch and the step metadata are all kept across
// steps. On the `auto` and `onednn-prefill` CPU matmul routes. Counted with a global operator new replacement, on every
// thread (the backend's pool workers included).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "model/kv_cache.h"
#include "model/moe_transformer.h"
#include "model/random_model.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<int64_t> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
    if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
// Every other non-aligned form too: under ASan a form left out goes to ASan's allocator while its
// delete comes here (std::stable_sort's nothrow buffer), an alloc-dealloc mismatch.
void* operator new[](std::size_t n) {
    return ::operator new(n);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept {
    return ::operator new(n, t);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}

namespace moe::testing {
namespace {

TEST(ForwardAllocations, SteadyDecodeStepAllocatesOnlyItsOutput) {
    for (DType dtype : {DType::kBF16, DType::kF32})
        // onednn-prefill (auto's choice on an AMX CPU) runs decode-sized products on our kernels.
        // (The onednn route is not allocation free: oneDNN's dnnl_primitive_execute allocates its
        // argument maps on every call, ~2 blocks a product; measured 740 over these 4 steps.)
        for (CpuMatmul matmul : {CpuMatmul::kAuto, CpuMatmul::kOnednnPrefill}) {
            SCOPED_TRACE(std::string(dtype_name(dtype)) + (matmul == CpuMatmul::kAuto ? " auto" : " onednn-prefill"));
            auto be = make_cpu_backend({.num_threads = 2, .matmul = matmul});
            auto cfg = parse_model_config(random_model_config_json(RandomModelShape{}), "random");
            ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
            auto model_or = MoeTransformer::create(
                *cfg, make_random_weights(*cfg, 7, dtype), *be,
                {.weight_dtype = dtype == DType::kBF16 ? WeightDType::kBF16 : WeightDType::kF32});
            ASSERT_TRUE(model_or.ok()) << model_or.status().to_string();
            auto& model = *model_or.value();
            constexpr int64_t kSeqs = 3, kBlockSize = 16, kBlocksPerSeq = 4;
            auto cache_or =
                KvCache::create(*be, model.config(), {.num_blocks = kSeqs * kBlocksPerSeq, .block_size = kBlockSize});
            ASSERT_TRUE(cache_or.ok());
            KvCache cache = std::move(cache_or).value();
            std::vector<std::vector<int32_t>> tables(kSeqs), tokens(kSeqs);
            for (int64_t s = 0; s < kSeqs; ++s) {
                for (int64_t b = 0; b < kBlocksPerSeq; ++b)
                    tables[s].push_back(static_cast<int32_t>(s * kBlocksPerSeq + b));
                tokens[s] = {static_cast<int32_t>(3 + s), 17, 42, 9, 100};
            }
            BatchView prefill;
            for (int64_t s = 0; s < kSeqs; ++s) prefill.sequences.push_back({tokens[s], 0, tables[s]});
            ASSERT_TRUE(model.forward(prefill, cache).ok());

            BatchView decode;
            std::vector<int32_t> next(kSeqs, 5);
            for (int64_t s = 0; s < kSeqs; ++s)
                decode.sequences.push_back({std::span<const int32_t>(&next[s], 1), 5, tables[s]});
            auto step = [&](int64_t i) {
                for (int64_t s = 0; s < kSeqs; ++s) decode.sequences[s].num_cached = 5 + i;
                auto out = model.forward(decode, cache);
                ASSERT_TRUE(out.ok()) << out.status().to_string();
            };
            step(0);  // warm-up: workspace and scratch sized for this batch
            step(1);
            g_allocations = 0;
            g_counting = true;
            constexpr int64_t kSteps = 4;
            for (int64_t i = 2; i < 2 + kSteps; ++i) step(i);
            g_counting = false;
            // ForwardOutput: logits and row_start, one allocation each per step.
            EXPECT_LE(g_allocations.load(), 2 * kSteps);
        }
}

}  // namespace
}  // namespace moe::testing
