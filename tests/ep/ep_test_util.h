// Runs a set of prompts through greedy generation on an expert-parallel group of in-process
// ranks (ThreadComm) or on the plain single-process model, step by step in lockstep, and keeps
// every logits row: the tests compare the two bitwise.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ep/thread_comm.h"
#include "model/kv_cache.h"
#include "model/moe_transformer.h"
#include "moe/cpu_backend.h"

namespace moe::testing {

// Builds rank's model on `be` with `options` (expert_parallel already filled in).
using ModelFactory =
    std::function<StatusOr<std::unique_ptr<MoeTransformer>>(Backend& be, const ModelLoadOptions& options)>;

struct PromptRun {
    std::vector<float> logits;  // prefill rows (one per prompt token), then one row per decode step
    std::vector<int32_t> tokens;
};

struct GroupRun {
    Status status;                   // the first failure of any rank
    std::vector<PromptRun> prompts;  // in input order
    std::vector<ExpertParallelStats> stats;
    std::vector<std::vector<int32_t>> local_experts_layer0;  // per rank
    std::vector<int64_t> owned_bytes;                        // per rank
};

inline int32_t argmax_row(const float* row, int64_t n) {
    return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

// world == 0: the plain model (no group), every prompt in one batch. Otherwise `world` ranks;
// prompt i runs on rank owner[i]. Every step: one forward per rank (empty for a rank with no
// prompts), prefill first (all logits), then `decode_steps` greedy decodes.
inline GroupRun run_group(const ModelFactory& factory, const std::vector<std::vector<int32_t>>& prompts,
                          const std::vector<int>& owner, int world, const std::vector<ExpertPlacement>& placement,
                          int decode_steps, CpuMatmul matmul = CpuMatmul::kOwn) {
    GroupRun out;
    out.prompts.resize(prompts.size());
    const int ranks = std::max(world, 1);
    std::vector<std::unique_ptr<comm::Communicator>> comms;
    if (world > 0) comms = make_thread_comms(world);
    std::vector<Status> status(static_cast<size_t>(ranks));
    out.stats.resize(static_cast<size_t>(ranks));
    out.local_experts_layer0.resize(static_cast<size_t>(ranks));
    out.owned_bytes.resize(static_cast<size_t>(ranks));
    auto rank_main = [&](int r) -> Status {
        std::unique_ptr<Backend> be = make_cpu_backend({.num_threads = 1, .matmul = matmul});
        ModelLoadOptions opts;
        if (world > 0) opts.expert_parallel = {.comm = comms[static_cast<size_t>(r)].get(), .placement = placement};
        StatusOr<std::unique_ptr<MoeTransformer>> m = factory(*be, opts);
        if (!m.ok()) {
            // The others would wait for this rank's collectives: end the group.
            if (world > 0) comms[static_cast<size_t>(r)]->abort("model load failed");
            return m.status();
        }
        MoeTransformer& model = **m;
        const ModelConfig& c = model.config();
        out.local_experts_layer0[static_cast<size_t>(r)] = model.local_experts(c.num_layers > 0 ? 0 : -1);
        for (int64_t l = 0; l < c.num_layers; ++l)
            if (c.layer_is_moe[static_cast<size_t>(l)]) {
                out.local_experts_layer0[static_cast<size_t>(r)] = model.local_experts(l);
                break;
            }
        out.owned_bytes[static_cast<size_t>(r)] = model.owned_weight_bytes();
        std::vector<size_t> mine;
        for (size_t i = 0; i < prompts.size(); ++i)
            if (world == 0 || owner[i] == r) mine.push_back(i);
        const int64_t bs = 4, blocks_per = 64;
        MOE_ASSIGN_OR_RETURN(
            KvCache cache,
            KvCache::create(*be, c,
                            {.num_blocks = blocks_per * static_cast<int64_t>(std::max<size_t>(mine.size(), 1)),
                             .block_size = bs,
                             .dtype = DType::kF32}));
        std::vector<std::vector<int32_t>> tables(mine.size());
        for (size_t k = 0; k < mine.size(); ++k)
            for (int64_t b = 0; b < blocks_per; ++b)
                tables[k].push_back(static_cast<int32_t>(static_cast<int64_t>(k) * blocks_per + b));
        std::vector<int32_t> last(mine.size());
        for (int step = 0; step <= decode_steps; ++step) {
            BatchView batch;
            for (size_t k = 0; k < mine.size(); ++k) {
                const std::vector<int32_t>& p = prompts[mine[k]];
                if (step == 0)
                    batch.sequences.push_back(
                        {.token_ids = p, .num_cached = 0, .block_table = tables[k], .all_logits = true});
                else
                    batch.sequences.push_back({.token_ids = std::span<const int32_t>(&last[k], 1),
                                               .num_cached = static_cast<int64_t>(p.size()) + step - 1,
                                               .block_table = tables[k],
                                               .all_logits = false});
            }
            MOE_ASSIGN_OR_RETURN(ForwardOutput f, model.forward(batch, cache));
            for (size_t k = 0; k < mine.size(); ++k) {
                PromptRun& pr = out.prompts[mine[k]];
                for (int64_t row = f.row_start[k]; row < f.row_start[k + 1]; ++row)
                    pr.logits.insert(pr.logits.end(), f.row(row), f.row(row) + f.vocab_size);
                last[k] = argmax_row(f.last_row(k), f.vocab_size);
                pr.tokens.push_back(last[k]);
            }
        }
        out.stats[static_cast<size_t>(r)] = model.expert_parallel_stats();
        return ok_status();
    };
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) threads.emplace_back([&, r] { status[static_cast<size_t>(r)] = rank_main(r); });
    for (auto& t : threads) t.join();
    for (const Status& s : status)
        if (!s.ok()) {
            out.status = s;
            break;
        }
    return out;
}

}  // namespace moe::testing
