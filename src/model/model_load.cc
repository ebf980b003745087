// MoeTransformer::load: config.json + safetensors from a Hugging Face model directory.
#include <fmt/format.h>

#include <memory>
#include <string>

#include "core/logging.h"
#include "model/load_progress.h"
#include "model/moe_transformer.h"
#include "model/weights.h"

namespace moe {
namespace {

class StoreSource final : public WeightSource {
public:
    explicit StoreSource(WeightStore store)
        : store_(std::move(store)),
          progress_(store_.total_bytes(), [](const std::string& line) { log::model().info("{}", line); }) {}
    StatusOr<WeightRef> get(const std::string& name) const override {
        MOE_ASSIGN_OR_RETURN(TensorInfo t, store_.get(name));
        return WeightRef{.name = t.name, .dtype = t.dtype, .shape = t.shape, .data = t.data, .origin = t.file};
    }
    bool has(const std::string& name) const override { return store_.has(name); }
    std::string describe() const override { return store_.dir().string(); }
    // The loader calls this once per tensor, after copying or packing it: the progress log.
    void release(const void* data, size_t bytes) const override {
        store_.release(data, bytes);
        progress_.add(bytes);
    }

private:
    WeightStore store_;
    // NOTE: mutable: release() is a const hint; the load runs on one thread.
    mutable LoadProgress progress_;
};

}  // namespace

StatusOr<std::unique_ptr<MoeTransformer>> MoeTransformer::load(const std::filesystem::path& dir, Backend& backend,
                                                               const ModelLoadOptions& options) {
    MOE_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(dir));
    if (!config.supported)
        return unimplemented(dir.string() + ": " + config.architecture +
                             " cannot be served by this build: " + config.unsupported_reason);
    MOE_ASSIGN_OR_RETURN(WeightStore store, WeightStore::open(dir));
    // NOTE: not populated: the model copies each tensor into backend memory and releases its
    // pages (the file is read once, in order); the mapping goes when the model is built.
    auto source = std::make_shared<StoreSource>(std::move(store));
    MOE_ASSIGN_OR_RETURN(auto model, create(config, source, backend, options));
    log::model().info("loaded {} ({} layers, {} experts, top-{}) from {}: matrices {}{}", config.architecture,
                      config.num_layers, config.num_experts, config.num_experts_per_tok, dir.string(),
                      dtype_name(model->matrix_dtype()),
                      backend.weight_summary().empty() ? std::string() : ", " + backend.weight_summary());
    return model;
}

}  // namespace moe
