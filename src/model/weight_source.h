// Where a model's weights come from: safetensors files on disk (WeightStore), or tensors made
// in memory (the built-in demo model, tests). The model asks by Hugging Face tensor name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "moe/dtype.h"
#include "moe/status.h"

namespace moe {

struct WeightRef {
    std::string name;
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
    const void* data = nullptr;  // host memory, valid while the source lives
    std::string origin;          // file name (for errors)
};

class WeightSource {
public:
    virtual ~WeightSource() = default;
    // NotFound naming the tensor when absent.
    virtual StatusOr<WeightRef> get(const std::string& name) const = 0;
    virtual bool has(const std::string& name) const = 0;
    // What the source is, for errors ("/models/x", "demo model").
    virtual std::string describe() const = 0;
    // Hint: the caller has copied [data, data + bytes) (a tensor get() returned) and will not
    // read it again soon. A mapped source may drop those pages from memory; reading them later
    // still works (they are mapped back from the file). The default does nothing.
    virtual void release(const void* data, size_t bytes) const {
        (void)data;
        (void)bytes;
    }
};

}  // namespace moe
