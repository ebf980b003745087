// Fuzz target: bytes as model.safetensors.index.json next to two small valid shards, opened as
// a WeightStore (shard names, traversal checks, tensors promised by the index).
#include <cstdint>
#include <filesystem>

#include "fuzz_util.h"
#include "model/weights.h"

namespace {

// Shard with tensors "a" (F32 [2]) and "b" (BF16 [3]); header padded to 8 bytes.
std::string shard_bytes(const std::string& a, const std::string& b) {
    std::string header = "{\"" + a + "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"" + b +
                         "\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[8,14]}}";
    header.append((8 - header.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
    return out + header + std::string(14, '\x01');
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    return moe::fuzz::quiet_logs();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::filesystem::path dir = [] {
        const auto d = moe::fuzz::scratch_dir() / "index_model";
        std::filesystem::create_directories(d);
        moe::fuzz::write_file(d / "model-00001-of-00002.safetensors", shard_bytes("x.a", "x.b"));
        moe::fuzz::write_file(d / "model-00002-of-00002.safetensors", shard_bytes("y.a", "y.b"));
        return d;
    }();
    moe::fuzz::write_file(dir / moe::kWeightsIndexFile, std::string_view(reinterpret_cast<const char*>(data), size));
    auto store = moe::WeightStore::open(dir);
    if (store.ok()) {
        for (const auto& name : store->names()) (void)store->get(name);
    }
    return 0;
}
