// WeightStore: every tensor of a model directory, from `model.safetensors` or from the shards a
// `model.safetensors.index.json` names. Shards are mmap'd and validated when the store opens.
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/safetensors.h"
#include "moe/status.h"

namespace moe {

inline constexpr const char* kSingleWeightsFile = "model.safetensors";
inline constexpr const char* kWeightsIndexFile = "model.safetensors.index.json";

// Whether `dir` has model.safetensors or model.safetensors.index.json at all. When it has
// neither, WeightStore::open fails with kNotFound and a message starting "weights absent".
bool weights_present(const std::filesystem::path& dir);

class WeightStore {
public:
    // Errors: kNotFound "weights absent: ..." (neither file), kNotFound for a shard the index lists
    // but the directory lacks, kInvalidArgument for a bad index (not JSON, path traversal, a shard
    // that lacks a promised tensor) and whatever SafetensorsFile::open reports for a bad shard.
    static StatusOr<WeightStore> open(const std::filesystem::path& dir);

    WeightStore(WeightStore&&) = default;
    WeightStore& operator=(WeightStore&&) = default;

    bool has(const std::string& name) const { return tensors_.count(name) != 0; }
    // kNotFound naming the tensor and the directory.
    StatusOr<TensorInfo> get(const std::string& name) const;
    // get() plus a shape check: "tensor X in model-00001-of-00002.safetensors: shape [8, 64],
    // expected [4, 64] from config.json" (kInvalidArgument).
    StatusOr<TensorInfo> get_checked(const std::string& name, const std::vector<int64_t>& shape) const;
    Status expect(const std::string& name, std::initializer_list<int64_t> shape) const;

    std::vector<std::string> names() const;  // sorted
    uint64_t total_bytes() const;            // sum of tensor payloads
    size_t num_files() const { return files_.size(); }
    // SafetensorsFile::populate for every file.
    void populate() const;
    // SafetensorsFile::release on the file that maps [data, data + bytes), if any.
    void release(const void* data, size_t bytes) const;
    const std::filesystem::path& dir() const { return dir_; }

private:
    WeightStore() = default;

    std::filesystem::path dir_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::map<std::string, TensorInfo> tensors_;
};

}  // namespace moe
