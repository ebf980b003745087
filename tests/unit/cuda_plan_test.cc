// Host-side plans of the CUDA kernels (kernels/*/*_plan.h): CUDA-free, so they run on every
// machine, GPU or not, including the CPU-only build.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "../../kernels/attention/attention_plan.h"
#include "../../kernels/moe_experts/moe_experts_plan.h"
#include "../../kernels/moe_permute/moe_permute_plan.h"

namespace moe::kernels {
namespace {

TEST(CudaAttentionPlan, HeadDimBuckets) {
    EXPECT_EQ(attention_head_dim_bucket(1), 32);
    EXPECT_EQ(attention_head_dim_bucket(32), 32);
    EXPECT_EQ(attention_head_dim_bucket(33), 64);
    EXPECT_EQ(attention_head_dim_bucket(128), 128);
    EXPECT_EQ(attention_head_dim_bucket(256), 256);
    EXPECT_EQ(attention_head_dim_bucket(257), 0);
    EXPECT_EQ(plan_attention(4, 2, 8, 2, 300, 64, 132).head_dim_bucket, 0);
}

// The grid must cover every tile the kernel derives from the real q_lens, whatever they are.
TEST(CudaAttentionPlan, GridCoversEveryRaggedBatch) {
    std::mt19937 rng(5);
    for (int iter = 0; iter < 2000; ++iter) {
        const int64_t seqs = 1 + rng() % 20;
        const int64_t kv_heads = 1 + rng() % 4;
        const int64_t group = 1 + rng() % 12;
        std::vector<int64_t> q_lens(static_cast<size_t>(seqs));
        int64_t tokens = 0;
        for (auto& q : q_lens) tokens += q = rng() % 3 == 0 ? 0 : rng() % 70;
        const AttentionPlan p = plan_attention(tokens, seqs, kv_heads * group, kv_heads, 64, 4096, 132);
        int64_t tiles = 0;
        for (int64_t q : q_lens) tiles += (q * group + p.rows_per_cta - 1) / p.rows_per_cta;
        ASSERT_GE(p.grid_x, tiles) << "tokens " << tokens << " seqs " << seqs << " group " << group;
        ASSERT_GE(p.grid_x, 1);
        EXPECT_EQ(p.grid_y, kv_heads);
    }
}

TEST(CudaAttentionPlan, DecodeSplitsLongContextsOnly) {
    // Qwen3-30B-A3B: 32 q heads, 4 KV heads, head_dim 128, H100 (132 SMs).
    const AttentionPlan one_long = plan_attention(1, 1, 32, 4, 128, 32768, 132);
    EXPECT_EQ(one_long.rows_per_warp, 2);
    EXPECT_GT(one_long.num_splits, 1);
    EXPECT_LE(one_long.num_splits, kAttnMaxSplits);
    EXPECT_GE(32768 / one_long.num_splits, kAttnMinKeysPerSplit);
    EXPECT_EQ(one_long.partial_floats, static_cast<size_t>(32 * one_long.num_splits) * (128 + 2));
    // A short context: splitting would not pay.
    EXPECT_EQ(plan_attention(1, 1, 32, 4, 128, 300, 132).num_splits, 1);
    // A big decode batch fills the GPU without splits.
    EXPECT_EQ(plan_attention(256, 256, 32, 4, 128, 32768, 132).num_splits, 1);
    // Prefill never splits.
    const AttentionPlan prefill = plan_attention(512, 1, 32, 4, 128, 32768, 132);
    EXPECT_EQ(prefill.num_splits, 1);
    EXPECT_EQ(prefill.rows_per_warp, 4);
    EXPECT_EQ(prefill.partial_floats, 0u);
    // Shared memory: q tile + padded K tile + V tile, in f32.
    EXPECT_EQ(prefill.smem_bytes, (16 * 128 + 32 * 129 + 32 * 128) * sizeof(float));
    EXPECT_LE(prefill.smem_bytes, 48u * 1024);
}

TEST(CudaAttentionPlan, SplitRangesPartitionTheSpan) {
    for (int64_t lo : {0, 5, 100}) {
        for (int64_t len : {0, 1, 31, 32, 33, 1000, 4097}) {
            for (int splits : {1, 2, 3, 7, 16}) {
                int64_t next = lo;
                for (int z = 0; z < splits; ++z) {
                    int64_t b, e;
                    attention_split_range(lo, lo + len, z, splits, &b, &e);
                    ASSERT_LE(b, e);
                    if (b < e) {
                        ASSERT_EQ(b, next) << "lo " << lo << " len " << len << " splits " << splits << " z " << z;
                        ASSERT_EQ((b - lo) % kAttnKeyTile, 0);
                        next = e;
                    }
                }
                EXPECT_EQ(next, lo + len) << "lo " << lo << " len " << len << " splits " << splits;
            }
        }
    }
}

// The device's chunked counting sort, modeled on the host, equals a plain stable sort by expert.
TEST(CudaPermutePlan, RowsAreAStableSortByExpert) {
    std::mt19937 rng(9);
    for (auto [pairs, experts] :
         {std::pair<int64_t, int64_t>{1, 1}, {7, 3}, {256, 9}, {257, 9}, {1000, 60}, {5000, 128}, {2048, 1024}}) {
        std::vector<int32_t> ids(static_cast<size_t>(pairs));
        // Skewed: most pairs on a few experts, so ranks inside warps and chunks get exercised.
        for (auto& id : ids)
            id = static_cast<int32_t>(rng() % 4 == 0 ? rng() % experts : rng() % std::min<int64_t>(experts, 3));
        const PermutePlan plan = plan_moe_permute(pairs, experts);
        EXPECT_EQ(plan.num_chunks, (pairs + kPermuteChunk - 1) / kPermuteChunk);
        EXPECT_EQ(plan.counts_len, experts * plan.num_chunks);
        std::vector<int32_t> row_of, offsets;
        moe_permute_rows_host(ids.data(), plan, &row_of, &offsets);
        std::vector<int32_t> order(static_cast<size_t>(pairs));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
        for (int64_t r = 0; r < pairs; ++r)
            ASSERT_EQ(row_of[static_cast<size_t>(order[static_cast<size_t>(r)])], r)
                << "pairs " << pairs << " row " << r;
        ASSERT_EQ(offsets.size(), static_cast<size_t>(experts + 1));
        for (int64_t e = 0; e < experts; ++e) {
            const auto n = std::count(ids.begin(), ids.end(), static_cast<int32_t>(e));
            EXPECT_EQ(offsets[static_cast<size_t>(e + 1)] - offsets[static_cast<size_t>(e)], n) << "expert " << e;
        }
        EXPECT_EQ(offsets.back(), pairs);
    }
}

TEST(CudaPermutePlan, ExpertLimitAndSharedMemory) {
    EXPECT_FALSE(permute_supported(0));
    EXPECT_TRUE(permute_supported(128));
    EXPECT_TRUE(permute_supported(kPermuteMaxExperts));
    EXPECT_FALSE(permute_supported(kPermuteMaxExperts + 1));
    EXPECT_LE(plan_moe_permute(1, kPermuteMaxExperts).smem_bytes, 48u * 1024);
    EXPECT_EQ(plan_moe_permute(0, 8).num_chunks, 1);
}

TEST(CudaExpertsPlan, SkipsEmptyExpertsInOrder) {
    const std::vector<int32_t> offsets = {0, 5, 5, 6, 25, 25};
    const auto gemms = plan_expert_gemms(offsets.data(), 5);
    ASSERT_EQ(gemms.size(), 3u);
    EXPECT_EQ(gemms[0].expert, 0);
    EXPECT_EQ(gemms[0].rows, 5);
    EXPECT_EQ(gemms[1].expert, 2);
    EXPECT_EQ(gemms[1].row_begin, 5);
    EXPECT_EQ(gemms[1].rows, 1);
    EXPECT_EQ(gemms[2].expert, 3);
    EXPECT_EQ(gemms[2].row_begin, 6);
    EXPECT_EQ(gemms[2].rows, 19);
}

TEST(CudaExpertsPlan, ScratchPiecesAreAlignedAndDisjoint) {
    for (bool bf16 : {false, true}) {
        const ExpertsScratch s = plan_experts_scratch(25, 19, 23, bf16);
        for (size_t off : {s.x_bf16, s.gate, s.up, s.act_bf16}) EXPECT_EQ(off % 256, 0u);
        EXPECT_GE(s.up - s.gate, 25u * 23 * 4);
        EXPECT_GE(s.act_bf16 - s.up, 25u * 23 * 4);
        if (bf16) {
            EXPECT_GE(s.gate - s.x_bf16, 25u * 19 * 2);
            EXPECT_GE(s.total - s.act_bf16, 25u * 23 * 2);
        } else {
            EXPECT_EQ(s.gate, s.x_bf16);
            EXPECT_EQ(s.total, s.act_bf16);
        }
    }
}

}  // namespace
}  // namespace moe::kernels
