// MoeTransformer: the decoder-only transformer of every supported family (see DESIGN.md's
// table), run over a ragged batch that reads and writes a paged KV cache.
//
// The model knows nothing about requests: the caller says which tokens, at which positions,
// with which block tables (BatchView), and gets logits back.
//
// Thread safety: forward() is called by one thread at a time (the engine thread).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "model/batch.h"
#include "model/config.h"
#include "model/expert_parallel.h"
#include "model/kv_cache.h"
#include "model/mla_attention.h"
#include "model/weight_source.h"
#include "moe/backend.h"
#include "ops/ops.h"

namespace moe {

enum class WeightDType {
    kAuto,  // as stored: f32 and bf16 kept, f16 widened to f32
    kF32,
    kBF16,
};

struct ModelLoadOptions {
    WeightDType weight_dtype = WeightDType::kAuto;
    // Expert parallelism (model/expert_parallel.h): the group and the placement. With a group of
    // more than one rank the model loads only this rank's routed experts (the others' tensors
    // are never read) and every MoE layer exchanges rows with the group.
    ExpertParallelOptions expert_parallel{};
    MlaPath mla_path = MlaPath::kAuto;  // MLA models only: tests pin a path to compare the two
};

class MoeTransformer {
public:
    // Builds the model from `weights`, which must hold every tensor the config implies with the
    // right shape (errors name the tensor, its file and both shapes). Every tensor is copied
    // into memory the backend owns (matrices through Backend::prepare_weight); `weights` is read
    // only during the call and the model keeps no reference to it.
    static StatusOr<std::unique_ptr<MoeTransformer>> create(const ModelConfig& config,
                                                            std::shared_ptr<const WeightSource> weights,
                                                            Backend& backend, const ModelLoadOptions& options);

    // Reads config.json and the safetensors of `dir`, then create().
    static StatusOr<std::unique_ptr<MoeTransformer>> load(const std::filesystem::path& dir, Backend& backend,
                                                          const ModelLoadOptions& options);

    ~MoeTransformer();

    // Runs one step. Errors (bad token id, block table too short, block id out of range) name
    // the sequence and the value; the cache is not written for a batch that fails validation.
    // An empty batch (no sequences) is a legal step: no logits. Under expert parallelism every
    // rank of the group calls forward once per step, with its own batch, empty or not, and a
    // batch this rank refuses still joins the group's collectives (with zero rows) before the
    // error comes back. A local failure after the step's first collective aborts the group
    // (Communicator::abort, logged); a collective's failure (lost peer, timeout) makes this and
    // every later forward fail with UNAVAILABLE (expert_parallel_status()).
    StatusOr<ForwardOutput> forward(const BatchView& batch, KvCache& cache);

    const ModelConfig& config() const { return config_; }
    Backend& backend() const { return *backend_; }
    // Dtype of the large matrices after loading.
    DType matrix_dtype() const { return matrix_dtype_; }
    // Bytes of backend memory held by the model's weights (all of them: nothing stays mapped).
    int64_t owned_weight_bytes() const;

    // ---- expert parallelism (all null / empty / OK without it)
    // The group this model exchanges expert rows with; null without expert parallelism. A group
    // of one rank runs today's single-process path.
    comm::Communicator* expert_group() const { return ep_comm_; }
    // Ok until a collective failed or this rank aborted the group; sticky.
    const Status& expert_parallel_status() const { return ep_status_; }
    // Exchange counters (zero without a group of several ranks).
    ExpertParallelStats expert_parallel_stats() const;
    // Logical experts whose weights this rank holds in `layer_idx` (every expert without expert
    // parallelism; empty for a dense layer).
    std::vector<int32_t> local_experts(int64_t layer_idx) const;
    // Per layer, per logical expert: the (token, slot) pairs this rank's tokens routed to it
    // since the model was built. Counted only with expert parallelism configured (any group
    // size); empty vectors for dense layers.
    const std::vector<std::vector<int64_t>>& expert_load() const { return expert_load_; }

private:
    struct Layer;
    // The sizes of one step's batch.
    struct StepShape {
        int64_t num_seqs = 0;
        int64_t num_tokens = 0;
        int64_t num_logit_rows = 0;
        int64_t max_blocks = 1;  // block-table entries of the longest sequence
    };
    MoeTransformer() = default;
    Status setup_expert_parallel(const ExpertParallelOptions& options);
    Status load_weights(const ModelLoadOptions& options);

    // forward(), step by step.
    StatusOr<StepShape> check_batch(const BatchView& batch, const KvCache& cache) const;
    void prepare_step_metadata(const BatchView& batch, int64_t block_size, const StepShape& shape, ForwardOutput& out);
    Status reserve_workspace(const StepShape& shape);
    Status upload_step_metadata(const StepShape& shape);
    Status layer_forward(int64_t layer_idx, KvCache& cache, int64_t num_tokens);
    // The residual stream h, a block's normed input x and a block's output y: f32 [num_tokens,
    // hidden_size] views of the workspace, as every block reads them.
    struct Residual {
        TensorView h, x, y;
    };
    Residual residual(int64_t num_tokens) const;
    Status attention_block(const Layer& layer, int64_t layer_idx, KvCache& cache, int64_t num_tokens);
    Status dense_mlp(const Layer& layer, int64_t num_tokens);
    Status begin_mla_step(const StepShape& shape, const KvCache& cache);
    Status moe_block(const Layer& layer, int64_t num_tokens);
    // The routed experts under expert parallelism, from top-k ids to out_perm (num_tokens may be 0).
    Status moe_experts_parallel(const Layer& layer, int64_t num_tokens);
    StatusOr<ForwardOutput> forward_expert_parallel(const BatchView& batch, KvCache& cache);
    void count_expert_load(const Layer& layer, const int32_t* offsets);
    Status shared_expert(const Layer& layer, int64_t num_tokens);
    Status final_logits(const StepShape& shape, ForwardOutput& out);

    ModelConfig config_;
    std::shared_ptr<const WeightSource> source_;
    Backend* backend_ = nullptr;
    DType matrix_dtype_ = DType::kF32;
    std::vector<DeviceBuffer> owned_;                        // small tensors and the embedding table
    std::vector<std::unique_ptr<PreparedWeight>> prepared_;  // matrices, in the backend's forms
    std::vector<Layer> layers_;
    TensorView embed_;
    TensorView final_norm_;
    WeightView lm_head_;

    struct Workspace;
    std::unique_ptr<Workspace> ws_;

    comm::Communicator* ep_comm_ = nullptr;
    std::vector<ExpertPlacement> ep_placement_;  // per layer (dense layers: empty placement)
    std::unique_ptr<ExpertExchange> ep_;         // groups of more than one rank only
    Status ep_status_;
    std::vector<std::vector<int64_t>> expert_load_;
    std::vector<int32_t> ep_zero_offsets_;  // an idle rank's offsets (no rows for any slot)
    std::unique_ptr<MlaAttention> mla_;     // MLA models (DeepSeek-V3, Kimi K2) only
    DeviceBuffer rope_inv_freq_;            // GQA with YaRN (gpt-oss): f32 [head_dim / 2]
    float rope_attention_factor_ = 1.0f;
    ExpertActivation expert_activation_ = ExpertActivation::kSwiGLU;  // gpt-oss: clamped
    float swiglu_alpha_ = 1.702f, swiglu_limit_ = 7.0f;
    struct StepMeta {
        int64_t num_seqs = 0;
        int64_t max_blocks = 0;
    } meta_;
};

}  // namespace moe
