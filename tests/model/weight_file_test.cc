// Serving does not depend on the weight file after load (#18 D): every tensor the forward reads
// lives in memory the backend owns, and the file's mapping is gone once the model is built. A
// file truncated (or overwritten) under a loaded model used to kill the process with SIGBUS at
// the next forward (f32 weights and unpacked bf16 were read from the mapping at request time).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "model/kv_cache.h"
#include "model/moe_transformer.h"
#include "model/test_files.h"
#include "model/weights.h"
#include "moe/cpu_backend.h"

namespace moe::testing {
namespace {

const std::filesystem::path kFixture = std::filesystem::path(MOE_SOURCE_DIR) / "tests/reference/fixtures/qwen3_moe";

// The fixture's model directory in `dir`, its weights in `dtype` ("F32" as stored, or "BF16").
void copy_fixture(const std::filesystem::path& dir, const std::string& dtype) {
    for (const char* f : {"config.json", "generation_config.json"})
        if (std::filesystem::exists(kFixture / f)) std::filesystem::copy_file(kFixture / f, dir / f);
    if (dtype == "F32") {
        std::filesystem::copy_file(kFixture / "model.safetensors", dir / "model.safetensors");
        return;
    }
    auto store = WeightStore::open(kFixture);
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    std::vector<TestTensor> tensors;
    for (const std::string& name : store->names()) {
        auto t = store->get(name);
        ASSERT_TRUE(t.ok());
        ASSERT_EQ(t->dtype, DType::kF32) << name;
        const size_t n = t->nbytes / 4;
        std::vector<float> f32(n);
        std::memcpy(f32.data(), t->data, t->nbytes);
        std::string bytes(n * 2, '\0');
        convert_from_f32(f32.data(), bytes.data(), DType::kBF16, n);
        tensors.push_back({name, "BF16", t->shape, bytes});
    }
    write_safetensors(dir / "model.safetensors", tensors);
}

// Logits of a two-sequence prefill on a fresh cache.
std::vector<float> forward_logits(MoeTransformer& model, Backend& be) {
    auto cache = KvCache::create(be, model.config(), {.num_blocks = 8, .block_size = 16});
    EXPECT_TRUE(cache.ok()) << cache.status().to_string();
    if (!cache.ok()) return {};
    const std::vector<int32_t> a = {1, 5, 9, 2, 7, 3}, b = {4, 4, 8};
    const std::vector<int32_t> ta = {0, 1}, tb = {2, 3};
    BatchView batch;
    batch.sequences.push_back({a, 0, ta, true});
    batch.sequences.push_back({b, 0, tb, false});
    auto out = model.forward(batch, *cache);
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    return out.ok() ? out->logits : std::vector<float>{};
}

TEST(WeightFile, TruncatedOrOverwrittenAfterLoadChangesNothing) {
    if (!std::filesystem::exists(kFixture / "model.safetensors"))
        FAIL() << "test data missing: " << (kFixture / "model.safetensors").string();
    struct Case {
        const char* name;
        const char* file_dtype;
        WeightDType weight_dtype;
        bool pack_weights;
    };
    // f32 and unpacked bf16 were read from the mapping at request time; packed bf16 kept its
    // norms and biases there.
    for (const Case& c :
         {Case{"f32", "F32", WeightDType::kAuto, true}, Case{"bf16 unpacked", "BF16", WeightDType::kAuto, false},
          Case{"bf16 packed", "BF16", WeightDType::kAuto, true},
          Case{"f32 file as bf16", "F32", WeightDType::kBF16, false}}) {
        SCOPED_TRACE(c.name);
        ScratchDir dir;
        copy_fixture(dir.path(), c.file_dtype);
        const std::filesystem::path file = dir / "model.safetensors";
        auto be = make_cpu_backend({.num_threads = 2, .pack_weights = c.pack_weights});
        auto model = MoeTransformer::load(dir.path(), *be, {.weight_dtype = c.weight_dtype});
        ASSERT_TRUE(model.ok()) << model.status().to_string();
        const std::vector<float> before = forward_logits(**model, *be);
        ASSERT_FALSE(before.empty());

        const auto size = std::filesystem::file_size(file);
        std::filesystem::resize_file(file, 0);  // pages past the end of a mapping raise SIGBUS
        const std::vector<float> truncated = forward_logits(**model, *be);
        ASSERT_EQ(truncated.size(), before.size());
        EXPECT_EQ(std::memcmp(truncated.data(), before.data(), before.size() * sizeof(float)), 0);

        {
            std::ofstream out(file, std::ios::binary | std::ios::trunc);
            out << std::string(size, '\x7f');  // other values where the weights were
        }
        const std::vector<float> overwritten = forward_logits(**model, *be);
        ASSERT_EQ(overwritten.size(), before.size());
        EXPECT_EQ(std::memcmp(overwritten.data(), before.data(), before.size() * sizeof(float)), 0);
    }
}

}  // namespace
}  // namespace moe::testing
