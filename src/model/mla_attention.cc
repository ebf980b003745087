#include "model/mla_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/mla_ops.h"
#include "ops/ops.h"

namespace moe {
namespace {

TensorView view(const DeviceBuffer& b, DType dtype, std::initializer_list<int64_t> shape, Device dev) {
    return TensorView::make(b.data(), dtype, shape, dev);
}

// A strided view into f32 buffer `b`: `offset` elements in, `shape` with `strides`.
TensorView strided(const DeviceBuffer& b, int64_t offset, std::initializer_list<int64_t> shape,
                   std::initializer_list<int64_t> strides, Device dev) {
    TensorView t = TensorView::make(static_cast<float*>(b.data()) + offset, DType::kF32, shape, dev);
    size_t i = 0;
    for (int64_t s : strides) t.strides[i++] = s;
    return t;
}

double yarn_get_mscale(double scale, double mscale) {
    if (scale <= 1.0) return 1.0;
    return 0.1 * mscale * std::log(scale) + 1.0;
}

}  // namespace

// transformers' _compute_default_rope_parameters / _compute_yarn_parameters (f32 tensors, the
// correction range in double) and DeepseekV3Attention's softmax scale.
MlaRope mla_rope(const ModelConfig& c) {
    return rope_frequencies(c, c.mla.qk_rope_head_dim, c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim);
}

MlaRope rope_frequencies(const ModelConfig& c, int64_t dim, int64_t qk) {
    MlaRope r;
    const int64_t half = dim / 2;
    const float base = c.rope_theta;
    r.inv_freq.resize(static_cast<size_t>(half));
    std::vector<float> pos_freqs(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i)
        pos_freqs[static_cast<size_t>(i)] = std::pow(base, static_cast<float>(2 * i) / static_cast<float>(dim));
    double scale = 1.0 / std::sqrt(static_cast<double>(qk));
    if (!c.yarn.enabled) {
        for (int64_t i = 0; i < half; ++i)
            r.inv_freq[static_cast<size_t>(i)] = 1.0f / pos_freqs[static_cast<size_t>(i)];
        r.softmax_scale = static_cast<float>(scale);
        return r;
    }
    const YarnScaling& y = c.yarn;
    const auto correction_dim = [&](double rotations) {
        return (static_cast<double>(dim) *
                std::log(static_cast<double>(y.original_max_position_embeddings) / (rotations * 2 * M_PI))) /
               (2 * std::log(static_cast<double>(c.rope_theta)));
    };
    double low = correction_dim(y.beta_fast), high = correction_dim(y.beta_slow);
    if (y.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;  // as transformers: no division by zero
    const float factor = static_cast<float>(y.factor);
    for (int64_t i = 0; i < half; ++i) {
        const float pf = pos_freqs[static_cast<size_t>(i)];
        const float extrapolation = 1.0f / pf, interpolation = 1.0f / (factor * pf);
        float ramp = (static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low);
        ramp = std::clamp(ramp, 0.0f, 1.0f);
        const float extrapolation_factor = 1.0f - ramp;
        r.inv_freq[static_cast<size_t>(i)] =
            interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
    }
    r.attention_factor =
        static_cast<float>(y.mscale > 0 && y.mscale_all_dim > 0
                               ? yarn_get_mscale(y.factor, y.mscale) / yarn_get_mscale(y.factor, y.mscale_all_dim)
                               : yarn_get_mscale(y.factor, 1.0));
    if (y.mscale_all_dim > 0) {
        const double m = yarn_get_mscale(y.factor, y.mscale_all_dim);
        scale *= m * m;
    }
    r.softmax_scale = static_cast<float>(scale);
    return r;
}

// Multiply-adds per head of each path, from the step's shape. Expanded pays kv_b_proj over every
// cached row of every sequence (N x (nope + v) x L) and then attention at the head dims; absorbed
// pays the two per-head products per query row and attention at the latent dim (2L + R per
// (query, key) pair). A whole prompt favours expanded, decode (one query, long context)
// absorbed; a mixed step gets whichever its sum favours.
MlaPath cheaper_path(const ModelConfig& c, std::span<const int32_t> query_start, std::span<const int32_t> kv_lens) {
    const MlaConfig& m = c.mla;
    const double L = static_cast<double>(m.kv_lora_rank), R = static_cast<double>(m.qk_rope_head_dim);
    const double nope = static_cast<double>(m.qk_nope_head_dim), v = static_cast<double>(m.v_head_dim);
    double expanded = 0, absorbed = 0;
    for (size_t s = 0; s < kv_lens.size(); ++s) {
        const double q = query_start[s + 1] - query_start[s], kv = kv_lens[s];
        const double pairs = q * kv - q * (q - 1) / 2;  // causal
        expanded += kv * (nope + v) * L + pairs * (nope + R + v);
        absorbed += q * (nope + v) * L + pairs * (2 * L + R);
    }
    return absorbed <= expanded ? MlaPath::kAbsorbed : MlaPath::kExpanded;
}

MlaAttention::~MlaAttention() = default;

StatusOr<std::unique_ptr<MlaAttention>> MlaAttention::create(const ModelConfig& c, Backend& be, MlaPath path) {
    std::unique_ptr<MlaAttention> m(new MlaAttention());
    m->c_ = c;
    m->be_ = &be;
    m->path_ = path;
    m->rope_ = mla_rope(c);
    const size_t bytes = m->rope_.inv_freq.size() * 4;
    MOE_ASSIGN_OR_RETURN(m->inv_freq_, DeviceBuffer::allocate(be, std::max<size_t>(bytes, 4)));
    MOE_RETURN_IF_ERROR(be.copy(m->inv_freq_.data(), be.device(), m->rope_.inv_freq.data(), Device{}, bytes));
    return m;
}

StatusOr<MlaWeights> MlaAttention::load_weights(WeightLoader& wl, const ModelConfig& c, const std::string& p,
                                                DType mat) {
    const MlaConfig& m = c.mla;
    const int64_t H = c.hidden_size, nh = c.num_heads, qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
    const std::string a = p + "self_attn.";
    MlaWeights w;
    if (m.q_lora_rank > 0) {
        MOE_ASSIGN_OR_RETURN(w.q_a, wl.matrix(a + "q_a_proj.weight", {m.q_lora_rank, H}, mat));
        MOE_ASSIGN_OR_RETURN(w.q_a_norm, wl.get(a + "q_a_layernorm.weight", {m.q_lora_rank}, DType::kF32));
        MOE_ASSIGN_OR_RETURN(w.q_b, wl.matrix(a + "q_b_proj.weight", {nh * qk, m.q_lora_rank}, mat));
    } else {
        MOE_ASSIGN_OR_RETURN(w.q_proj, wl.matrix(a + "q_proj.weight", {nh * qk, H}, mat));
    }
    MOE_ASSIGN_OR_RETURN(w.kv_a,
                         wl.matrix(a + "kv_a_proj_with_mqa.weight", {m.kv_lora_rank + m.qk_rope_head_dim, H}, mat));
    MOE_ASSIGN_OR_RETURN(w.kv_a_norm, wl.get(a + "kv_a_layernorm.weight", {m.kv_lora_rank}, DType::kF32));
    // NOTE: kv_b stays a plain row-major tensor: the absorbed path reads per-head slices of it
    // (head_gemm), the expanded path multiplies by all of it (gemm accepts a plain matrix).
    MOE_ASSIGN_OR_RETURN(
        w.kv_b, wl.get(a + "kv_b_proj.weight", {nh * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank}, mat));
    MOE_ASSIGN_OR_RETURN(w.o_proj, wl.matrix(a + "o_proj.weight", {H, nh * m.v_head_dim}, mat));
    return w;
}

Status MlaAttention::reserve(DeviceBuffer& b, size_t bytes) {
    if (b.size() >= bytes && b.data() != nullptr) return ok_status();
    MOE_ASSIGN_OR_RETURN(b, DeviceBuffer::allocate(*be_, std::max<size_t>(bytes, 64)));
    return ok_status();
}

Status MlaAttention::begin_step(const MlaStep& step) {
    step_ = step;
    S_ = static_cast<int64_t>(step.host_kv_lens.size());
    T_ = step.host_query_start[static_cast<size_t>(S_)];
    step_path_ = path_ == MlaPath::kAuto ? cheaper_path(c_, step.host_query_start, step.host_kv_lens) : path_;
    const MlaConfig& m = c_.mla;
    const int64_t nh = c_.num_heads, L = m.kv_lora_rank, R = m.qk_rope_head_dim, qk = m.qk_nope_head_dim + R;
    const auto f = [](int64_t n) { return static_cast<size_t>(n) * 4; };
    MOE_RETURN_IF_ERROR(reserve(q_, f(T_ * nh * qk)));
    MOE_RETURN_IF_ERROR(reserve(qa_, f(T_ * std::max<int64_t>(m.q_lora_rank, 1))));
    MOE_RETURN_IF_ERROR(reserve(ckv_, f(T_ * (L + R))));
    MOE_RETURN_IF_ERROR(reserve(o_, f(T_ * nh * m.v_head_dim)));
    if (step_path_ == MlaPath::kAbsorbed) {
        MOE_RETURN_IF_ERROR(reserve(q_lat_, f(T_ * nh * L)));
        return reserve(o_lat_, f(T_ * nh * L));
    }
    // Expanded: every sequence's rows [0, kv_len) gathered in sequence order.
    host_kv_start_.assign(static_cast<size_t>(S_ + 1), 0);
    host_gather_slots_.clear();
    const int64_t bs = step.block_size;
    for (int64_t s = 0; s < S_; ++s) {
        const int64_t kv_len = step.host_kv_lens[static_cast<size_t>(s)];
        for (int64_t p = 0; p < kv_len; ++p)
            host_gather_slots_.push_back(
                int64_t{step.host_tables[static_cast<size_t>(s * step.max_blocks + p / bs)]} * bs + p % bs);
        host_kv_start_[static_cast<size_t>(s + 1)] = static_cast<int32_t>(host_gather_slots_.size());
    }
    N_ = static_cast<int64_t>(host_gather_slots_.size());
    MOE_RETURN_IF_ERROR(reserve(lat_, f(N_ * (L + R))));
    MOE_RETURN_IF_ERROR(reserve(kv_, f(N_ * nh * (m.qk_nope_head_dim + m.v_head_dim))));
    MOE_RETURN_IF_ERROR(reserve(k_, f(N_ * nh * qk)));
    MOE_RETURN_IF_ERROR(reserve(v_, f(N_ * nh * m.v_head_dim)));
    MOE_RETURN_IF_ERROR(reserve(gather_slots_, static_cast<size_t>(N_) * 8));
    MOE_RETURN_IF_ERROR(reserve(kv_start_, f(S_ + 1)));
    const Device dev = be_->device(), host{};
    MOE_RETURN_IF_ERROR(
        be_->copy(gather_slots_.data(), dev, host_gather_slots_.data(), host, static_cast<size_t>(N_) * 8));
    return be_->copy(kv_start_.data(), dev, host_kv_start_.data(), host, f(S_ + 1));
}

Status MlaAttention::forward(const MlaWeights& w, const TensorView& x, const TensorView& h, const TensorView& cache) {
    Backend& be = *be_;
    const Device dev = be.device();
    const MlaConfig& m = c_.mla;
    const int64_t T = T_, nh = c_.num_heads, L = m.kv_lora_rank, R = m.qk_rope_head_dim;
    const int64_t nope = m.qk_nope_head_dim, qk = nope + R;
    const float eps = c_.rms_norm_eps;
    // q, with its rope part rotated in place.
    const TensorView q2 = view(q_, DType::kF32, {T, nh * qk}, dev);
    if (m.q_lora_rank > 0) {
        const TensorView qa = view(qa_, DType::kF32, {T, m.q_lora_rank}, dev);
        MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = w.q_a, .bias = {}, .y = qa}));
        MOE_RETURN_IF_ERROR(ops::run(be, RmsNormArgs{.x = qa, .weight = w.q_a_norm, .out = qa, .eps = eps}));
        MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = qa, .w = w.q_b, .bias = {}, .y = q2}));
    } else {
        MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = w.q_proj, .bias = {}, .y = q2}));
    }
    // The latent and the rope key: normed latent and roped key go to the cache as one row.
    const TensorView ckv = view(ckv_, DType::kF32, {T, L + R}, dev);
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = x, .w = w.kv_a, .bias = {}, .y = ckv}));
    const TensorView latent = strided(ckv_, 0, {T, L}, {L + R, 1}, dev);
    MOE_RETURN_IF_ERROR(ops::run(be, RmsNormArgs{.x = latent, .weight = w.kv_a_norm, .out = latent, .eps = eps}));
    const TensorView inv_freq = view(inv_freq_, DType::kF32, {R / 2}, dev);
    MOE_RETURN_IF_ERROR(ops::run(be, RopeTableArgs{.x = strided(q_, nope, {T * nh, R}, {qk, 1}, dev),
                                                   .positions = step_.positions,
                                                   .inv_freq = inv_freq,
                                                   .attention_factor = rope_.attention_factor,
                                                   .interleaved = m.rope_interleave}));
    MOE_RETURN_IF_ERROR(ops::run(be, RopeTableArgs{.x = strided(ckv_, L, {T, R}, {L + R, 1}, dev),
                                                   .positions = step_.positions,
                                                   .inv_freq = inv_freq,
                                                   .attention_factor = rope_.attention_factor,
                                                   .interleaved = m.rope_interleave}));
    MOE_RETURN_IF_ERROR(ops::run(be, LatentWriteArgs{.rows = ckv, .slot_mapping = step_.slots, .cache = cache}));
    const TensorView attn = view(o_, DType::kF32, {T, nh, m.v_head_dim}, dev);
    MOE_RETURN_IF_ERROR(step_path_ == MlaPath::kExpanded ? expanded(w, cache, attn) : absorbed(w, cache, attn));
    return ops::run(be, GemmArgs{.x = view(o_, DType::kF32, {T, nh * m.v_head_dim}, dev),
                                 .w = w.o_proj,
                                 .bias = {},
                                 .y = h,
                                 .accumulate = true});
}

// Per-head K and V from the gathered latent rows, then causal attention.
Status MlaAttention::expanded(const MlaWeights& w, const TensorView& cache, const TensorView& attn_out) {
    Backend& be = *be_;
    const Device dev = be.device();
    const MlaConfig& m = c_.mla;
    const int64_t N = N_, nh = c_.num_heads, L = m.kv_lora_rank, R = m.qk_rope_head_dim;
    const int64_t nope = m.qk_nope_head_dim, qk = nope + R, vd = m.v_head_dim;
    const TensorView lat = view(lat_, DType::kF32, {N, L + R}, dev);
    MOE_RETURN_IF_ERROR(ops::run(
        be, LatentGatherArgs{.cache = cache, .slots = view(gather_slots_, DType::kI64, {N}, dev), .out = lat}));
    MOE_RETURN_IF_ERROR(ops::run(be, GemmArgs{.x = strided(lat_, 0, {N, L}, {L + R, 1}, dev),
                                              .w = WeightView(w.kv_b),
                                              .bias = {},
                                              .y = view(kv_, DType::kF32, {N, nh * (nope + vd)}, dev)}));
    const TensorView k = view(k_, DType::kF32, {N, nh, qk}, dev);
    const TensorView v = view(v_, DType::kF32, {N, nh, vd}, dev);
    MOE_RETURN_IF_ERROR(ops::run(be, MlaExpandArgs{.kv = view(kv_, DType::kF32, {N, nh, nope + vd}, dev),
                                                   .k_rope = strided(lat_, L, {N, R}, {L + R, 1}, dev),
                                                   .k = k,
                                                   .v = v}));
    return ops::run(be, RaggedAttentionArgs{.q = view(q_, DType::kF32, {T_, nh, qk}, dev),
                                            .k = k,
                                            .v = v,
                                            .query_start = step_.query_start,
                                            .kv_start = view(kv_start_, DType::kI32, {S_ + 1}, dev),
                                            .out = attn_out,
                                            .scale = rope_.softmax_scale});
}

// W_UK folded into the query, attention over the latent rows, W_UV after.
Status MlaAttention::absorbed(const MlaWeights& w, const TensorView& cache, const TensorView& attn_out) {
    Backend& be = *be_;
    const Device dev = be.device();
    const MlaConfig& m = c_.mla;
    const int64_t T = T_, nh = c_.num_heads, L = m.kv_lora_rank, R = m.qk_rope_head_dim;
    const int64_t nope = m.qk_nope_head_dim, qk = nope + R, per_head = nope + m.v_head_dim;
    const TensorView q_lat = view(q_lat_, DType::kF32, {T, nh, L}, dev);
    const TensorView o_lat = view(o_lat_, DType::kF32, {T, nh, L}, dev);
    MOE_RETURN_IF_ERROR(ops::run(be, HeadGemmArgs{.x = strided(q_, 0, {T, nh, nope}, {nh * qk, qk, 1}, dev),
                                                  .w = w.kv_b,
                                                  .head_rows = per_head,
                                                  .row_offset = 0,
                                                  .transpose_w = false,
                                                  .out = q_lat}));
    MOE_RETURN_IF_ERROR(ops::run(be, MlaAttentionArgs{.q_latent = q_lat,
                                                      .q_rope = strided(q_, nope, {T, nh, R}, {nh * qk, qk, 1}, dev),
                                                      .cache = cache,
                                                      .block_tables = step_.block_tables,
                                                      .query_start = step_.query_start,
                                                      .kv_lens = step_.kv_lens,
                                                      .out = o_lat,
                                                      .scale = rope_.softmax_scale}));
    return ops::run(
        be,
        HeadGemmArgs{
            .x = o_lat, .w = w.kv_b, .head_rows = per_head, .row_offset = nope, .transpose_w = true, .out = attn_out});
}

}  // namespace moe
