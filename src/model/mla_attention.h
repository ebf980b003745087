// Multi-head latent attention (DeepSeek-V2/V3, Kimi K2) over the latent KV cache.
//
// Per layer, with x the normed hidden state (T tokens):
//   q      = q_b(norm(q_a(x)))  or  q_proj(x)                 [T, nh, nope + rope]
//   ckv    = kv_a_proj_with_mqa(x) = (latent [L], k_rope [R])   per token
//   latent = kv_a_layernorm(latent); rope on q's rope part and on k_rope (YaRN table)
//   cache  <- (latent, k_rope)                                   L + R values per token
// then one of two equal paths (chosen per step, see MlaPath):
//   expanded: gather the sequences' cached rows, K/V = kv_b(latent) per head (+ k_rope), causal
//             attention with a head dim of nope + rope for q.k and v_head_dim for v;
//   absorbed: q_latent = q_nope * W_UK (kv_b's k rows, per head), attention over the latent rows
//             themselves (score = q_latent . latent + q_rope . k_rope, value = latent), then
//             W_UV (kv_b's v rows) per head.
// and h += o_proj(attention output).
//
// Thread safety: used by the model's forward, one thread at a time.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weight_loader.h"
#include "moe/backend.h"

namespace moe {

// Which attention path MLA runs. kAuto: per step, the one with fewer multiply-adds for the
// step's shape (cheaper_path): expanded for prompts, absorbed for decodes and for mixed steps
// whose decode contexts outweigh the prompt.
enum class MlaPath { kAuto, kExpanded, kAbsorbed };

struct MlaWeights {
    WeightView q_a, q_b;   // q_lora_rank > 0
    TensorView q_a_norm;   // f32 [q_lora_rank]
    WeightView q_proj;     // q_lora_rank == 0
    WeightView kv_a;       // [L + R, H]
    TensorView kv_a_norm;  // f32 [L]
    TensorView kv_b;       // [nh * (nope + v), L], plain: read by gemm and by head_gemm's slices
    WeightView o_proj;     // [H, nh * v]
};

// RoPE frequencies and cos/sin factor as transformers computes them (f32), plain or YaRN; and
// the softmax scale with YaRN's mscale correction.
struct MlaRope {
    std::vector<float> inv_freq;  // [qk_rope_head_dim / 2]
    float attention_factor = 1.0f;
    float softmax_scale = 1.0f;
};
MlaRope mla_rope(const ModelConfig& c);
// The same for `dim` rotary dims of a head whose q.k runs over `qk` dims (GQA families with YaRN:
// gpt-oss), honouring rope_scaling's truncate.
MlaRope rope_frequencies(const ModelConfig& c, int64_t dim, int64_t qk);

// kExpanded or kAbsorbed, whichever costs fewer multiply-adds for a step of these sequences
// (query_start [S + 1], kv_lens [S], on the host).
MlaPath cheaper_path(const ModelConfig& c, std::span<const int32_t> query_start, std::span<const int32_t> kv_lens);

// The step's metadata, as the transformer uploaded it (device views) and on the host.
struct MlaStep {
    TensorView positions;     // i32 [T]
    TensorView slots;         // i64 [T]
    TensorView block_tables;  // i32 [S, max_blocks]
    TensorView query_start;   // i32 [S + 1]
    TensorView kv_lens;       // i32 [S]
    std::span<const int32_t> host_query_start, host_kv_lens, host_tables;
    int64_t max_blocks = 0;
    int64_t block_size = 0;
};

class MlaAttention {
public:
    static StatusOr<std::unique_ptr<MlaAttention>> create(const ModelConfig& c, Backend& be, MlaPath path);
    static StatusOr<MlaWeights> load_weights(WeightLoader& wl, const ModelConfig& c, const std::string& prefix,
                                             DType matrix_dtype);
    ~MlaAttention();

    // Once per step, before the layers: picks the path and prepares its buffers and metadata.
    Status begin_step(const MlaStep& step);
    // One layer: h += o_proj(mla(x)), the new tokens' latent rows written to `cache`
    // ([num_blocks, block_size, L + R], KvCache::latent).
    Status forward(const MlaWeights& w, const TensorView& x, const TensorView& h, const TensorView& cache);

    // The path of the current step (kExpanded or kAbsorbed).
    MlaPath step_path() const { return step_path_; }

private:
    MlaAttention() = default;
    Status reserve(DeviceBuffer& b, size_t bytes);
    Status expanded(const MlaWeights& w, const TensorView& cache, const TensorView& attn_out);
    Status absorbed(const MlaWeights& w, const TensorView& cache, const TensorView& attn_out);

    ModelConfig c_;
    Backend* be_ = nullptr;
    MlaPath path_ = MlaPath::kAuto;
    MlaPath step_path_ = MlaPath::kAbsorbed;
    MlaRope rope_;
    DeviceBuffer inv_freq_;
    MlaStep step_;
    int64_t T_ = 0, S_ = 0, N_ = 0;  // tokens, sequences, gathered kv rows (expanded)
    // activations
    DeviceBuffer q_, qa_, ckv_, q_lat_, o_lat_, o_, lat_, kv_, k_, v_;
    // expanded-path metadata
    DeviceBuffer gather_slots_, kv_start_;
    std::vector<int64_t> host_gather_slots_;
    std::vector<int32_t> host_kv_start_;
};

}  // namespace moe
