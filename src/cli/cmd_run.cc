// moeserve run: greedy generation in-process (no server), for checking a model directory.
//
//   moeserve run --model DIR --prompt-ids 1,2,3 [--prompt-ids 4,5 ...] --max-tokens 16 [--json]
//   mpirun -np N moeserve run --expert-parallel --threads 1 --model DIR --prompt-ids ...
//
// One line of output per prompt, in the order given. Under expert parallelism prompt i runs on
// rank i % N (attention is data-parallel), every rank steps in lockstep until all are done, and
// rank 0 gathers and prints the results in the same format.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/backend_select.h"
#include "cli/command.h"
#include "cli/ep_launch.h"
#include "core/logging.h"
#include "engine/engine.h"
#include "engine/executor.h"
#include "engine/group_lockstep.h"
#include "model/moe_transformer.h"
#include "model/random_model.h"

namespace moe::cli {
namespace {

struct RunFlags {
    std::string model;
    std::vector<std::string> prompt_ids;
    int max_tokens = 16;
    bool json = false;
    bool ignore_eos = false;
    int threads = 0;
    std::string dtype = "auto";
    int block_size = 16;
    std::string kv_cache_dtype = "auto";
    std::string device = "cpu";
    bool compress_weights = true;
    std::string cpu_matmul = "auto";
    EpFlags ep;
};

// One prompt's result.
struct SeqOut {
    size_t index = 0;  // in the order the prompts were given
    std::vector<int32_t> ids;
    std::vector<double> logprobs;
    std::string finish = "length";
    size_t prompt_tokens = 0;
    double prefill_s = 0;
    double decode_tps = 0;
};

nlohmann::json to_json(const SeqOut& o) {
    return {{"index", o.index},
            {"ids", o.ids},
            {"logprobs", o.logprobs},
            {"finish_reason", o.finish},
            {"prompt_tokens", o.prompt_tokens},
            {"prefill_seconds", o.prefill_s},
            {"decode_tokens_per_second", o.decode_tps}};
}

void print(const SeqOut& o, bool json) {
    if (json) {
        nlohmann::json j = to_json(o);
        j.erase("index");
        std::printf("%s\n", j.dump().c_str());
        return;
    }
    std::string line;
    for (size_t i = 0; i < o.ids.size(); ++i) line += (i ? "," : "") + std::to_string(o.ids[i]);
    std::printf("%s\n", line.c_str());
    std::fprintf(stderr, "%zu prompt tokens in %.3f s (%.1f tok/s), %zu generated, decode %.1f tok/s, finish: %s\n",
                 o.prompt_tokens, o.prefill_s, static_cast<double>(o.prompt_tokens) / o.prefill_s, o.ids.size(),
                 o.decode_tps, o.finish.c_str());
}

// Every rank's results to rank 0 (one all_to_all_counts and one all_to_all_v, the only
// collectives a Communicator offers), which checks what it gets: a peer's bytes are parsed, not
// trusted.
StatusOr<std::vector<SeqOut>> gather_to_rank0(comm::Communicator& c, const std::vector<SeqOut>& mine,
                                              size_t num_prompts) {
    nlohmann::json arr = nlohmann::json::array();
    for (const SeqOut& o : mine) arr.push_back(to_json(o));
    const std::string bytes = c.rank() == 0 ? std::string() : arr.dump();
    const size_t n = static_cast<size_t>(c.size());
    std::vector<int64_t> send_counts(n, 0), send_displs(n, 0), recv_counts(n, 0), recv_displs(n, 0);
    send_counts[0] = static_cast<int64_t>(bytes.size());
    MOE_RETURN_IF_ERROR(c.all_to_all_counts(send_counts, recv_counts));
    int64_t total = 0;
    for (size_t r = 0; r < n; ++r) {
        if (recv_counts[r] < 0 || recv_counts[r] > (int64_t{64} << 20))
            return data_loss("moeserve run: rank " + std::to_string(r) + " announced " +
                             std::to_string(recv_counts[r]) + " bytes of results (limit 64 MiB)");
        recv_displs[r] = total;
        total += recv_counts[r];
    }
    std::vector<std::byte> recv(static_cast<size_t>(std::max<int64_t>(total, 1)));
    MOE_RETURN_IF_ERROR(c.all_to_all_v(std::as_bytes(std::span(bytes.data(), bytes.size())), send_counts, send_displs,
                                       recv, recv_counts, recv_displs));
    std::vector<SeqOut> all = mine;
    if (c.rank() != 0) return all;
    for (size_t r = 1; r < n; ++r) {
        const char* p = reinterpret_cast<const char*>(recv.data()) + recv_displs[r];
        const nlohmann::json j = nlohmann::json::parse(p, p + recv_counts[r], nullptr, false);
        if (!j.is_array()) return data_loss("moeserve run: rank " + std::to_string(r) + " sent malformed results");
        for (const auto& e : j) {
            SeqOut o;
            try {
                o.index = e.at("index").get<size_t>();
                o.ids = e.at("ids").get<std::vector<int32_t>>();
                o.logprobs = e.at("logprobs").get<std::vector<double>>();
                o.finish = e.at("finish_reason").get<std::string>();
                o.prompt_tokens = e.at("prompt_tokens").get<size_t>();
                o.prefill_s = e.at("prefill_seconds").get<double>();
                o.decode_tps = e.at("decode_tokens_per_second").get<double>();
            } catch (const nlohmann::json::exception& ex) {
                return data_loss("moeserve run: rank " + std::to_string(r) + " sent malformed results: " + ex.what());
            }
            if (o.index >= num_prompts)
                return data_loss("moeserve run: rank " + std::to_string(r) + " sent a result for prompt " +
                                 std::to_string(o.index) + " of " + std::to_string(num_prompts));
            all.push_back(std::move(o));
        }
    }
    std::sort(all.begin(), all.end(), [](const SeqOut& a, const SeqOut& b) { return a.index < b.index; });
    if (all.size() != num_prompts)
        return data_loss("moeserve run: " + std::to_string(all.size()) + " results gathered for " +
                         std::to_string(num_prompts) + " prompts");
    return all;
}

StatusOr<std::vector<int32_t>> parse_ids(const std::string& s) {
    std::vector<int32_t> ids;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (item.empty()) return invalid_argument("--prompt-ids: empty item in \"" + s + "\"");
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(item.c_str(), &end, 10);
        if (*end != '\0' || errno != 0 || v < 0 || v > INT32_MAX)
            return invalid_argument("--prompt-ids: \"" + item + "\" is not a token id in [0, 2^31)");
        ids.push_back(static_cast<int32_t>(v));
    }
    if (ids.empty()) return invalid_argument("--prompt-ids: at least one id is needed");
    return ids;
}

Status run(const RunFlags& f, EpGroup& group) {
    std::vector<std::vector<int32_t>> prompts;
    for (const std::string& p : f.prompt_ids) {
        MOE_ASSIGN_OR_RETURN(std::vector<int32_t> ids, parse_ids(p));
        prompts.push_back(std::move(ids));
    }
    if (prompts.empty()) return invalid_argument("--prompt-ids: at least one prompt is needed");
    if (f.max_tokens < 1) return invalid_argument("--max-tokens must be >= 1, got " + std::to_string(f.max_tokens));
    WeightDType dtype = WeightDType::kAuto;
    if (f.dtype == "f32")
        dtype = WeightDType::kF32;
    else if (f.dtype == "bf16")
        dtype = WeightDType::kBF16;
    else if (f.dtype != "auto")
        return invalid_argument("--dtype must be auto, f32 or bf16, got " + f.dtype);
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                         make_backend(f.device, f.threads, f.compress_weights, f.cpu_matmul));
    std::unique_ptr<MoeTransformer> model;
    if (f.model.empty()) {
        // The built-in demo model: random weights, so that the command works with nothing else.
        MOE_ASSIGN_OR_RETURN(ModelConfig demo, parse_model_config(random_model_config_json({}), "built-in demo model"));
        if (group.rank() == 0)
            std::fprintf(stderr,
                         "moeserve run: no --model, using the built-in demo model (random weights: its output "
                         "is meaningless)\n");
        MOE_ASSIGN_OR_RETURN(ExpertParallelOptions ep, ep_model_options(f.ep, group, demo));
        MOE_ASSIGN_OR_RETURN(model, MoeTransformer::create(demo, make_random_weights(demo, 42, DType::kF32), *backend,
                                                           {.weight_dtype = dtype, .expert_parallel = std::move(ep)}));
    } else {
        MOE_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(f.model));
        MOE_ASSIGN_OR_RETURN(ExpertParallelOptions ep, ep_model_options(f.ep, group, config));
        MOE_ASSIGN_OR_RETURN(
            model, MoeTransformer::load(f.model, *backend, {.weight_dtype = dtype, .expert_parallel = std::move(ep)}));
    }
    const ModelConfig& c = model->config();
    size_t longest = 0;
    for (size_t k = 0; k < prompts.size(); ++k) {
        const std::vector<int32_t>& prompt = prompts[k];
        longest = std::max(longest, prompt.size());
        const std::string which = prompts.size() > 1 ? " (prompt " + std::to_string(k) + ")" : "";
        const int64_t total = static_cast<int64_t>(prompt.size()) + f.max_tokens;
        if (c.max_position_embeddings > 0 && total > c.max_position_embeddings)
            return invalid_argument("prompt (" + std::to_string(prompt.size()) + ") + --max-tokens (" +
                                    std::to_string(f.max_tokens) + ") exceeds the context length " +
                                    std::to_string(c.max_position_embeddings) + which);
        for (size_t i = 0; i < prompt.size(); ++i)
            if (prompt[i] >= c.vocab_size)
                return invalid_argument("--prompt-ids: token id " + std::to_string(prompt[i]) + " at index " +
                                        std::to_string(i) + " is outside the vocabulary [0, " +
                                        std::to_string(c.vocab_size) + ")" + which);
    }
    // This rank's prompts: all of them alone, prompt i on rank i % N in a group.
    std::vector<size_t> mine;
    for (size_t k = 0; k < prompts.size(); ++k)
        if (static_cast<int>(k % static_cast<size_t>(group.size())) == group.rank()) mine.push_back(k);
    const int64_t bs = f.block_size;
    const int64_t max_len = static_cast<int64_t>(longest) + f.max_tokens;
    const int64_t blocks_per_seq = (max_len + bs - 1) / bs;
    const int64_t num_blocks = blocks_per_seq * std::max<int64_t>(1, static_cast<int64_t>(mine.size()));
    MOE_ASSIGN_OR_RETURN(DType kv_dtype, kv_cache_dtype_from_name(f.kv_cache_dtype, model->matrix_dtype()));
    MOE_ASSIGN_OR_RETURN(KvCache cache,
                         KvCache::create(*backend, c, {.num_blocks = num_blocks, .block_size = bs, .dtype = kv_dtype}));
    // The sequences stepped by the engine's Executor: each whole prompt in its first step, then
    // one token per step, each the greedy SequenceSampler's (argmax, ties to the lowest id; its
    // logprob is the raw log-softmax the server reports).
    KvBlockManager kv({.num_blocks = num_blocks, .block_size = bs, .prefix_caching = false});
    int64_t prompt_tokens = 0;
    for (size_t k : mine) prompt_tokens += static_cast<int64_t>(prompts[k].size());
    Scheduler scheduler({.max_batched_tokens = std::max<int64_t>(2048, prompt_tokens),
                         .max_seqs = std::max<int64_t>(1, static_cast<int64_t>(mine.size())),
                         .max_waiting = std::max<int64_t>(1, static_cast<int64_t>(mine.size())),
                         .max_model_len = max_len},
                        kv);
    Executor executor(*model, cache, scheduler);
    SamplingParams greedy;
    greedy.temperature = 0.0f;
    std::vector<SeqOut> outs(mine.size());
    std::vector<bool> done(mine.size(), false);
    for (size_t m = 0; m < mine.size(); ++m) {
        outs[m].index = mine[m];
        outs[m].prompt_tokens = prompts[mine[m]].size();
        MOE_RETURN_IF_ERROR(executor.add(
            {.id = static_cast<SeqId>(m + 1), .prompt = prompts[mine[m]], .max_tokens = f.max_tokens}, greedy));
    }

    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    std::vector<clock::time_point> t_first(mine.size(), t0);
    size_t num_done = 0;
    GroupLockstep lockstep(group.comm.get());
    for (;;) {
        const bool local_work = num_done < mine.size();
        if (lockstep.active()) {
            // Every rank steps while any has work (an idle one with an empty batch).
            MOE_ASSIGN_OR_RETURN(GroupLockstep::Decision d, lockstep.agree(local_work, false));
            if (!d.step) break;
        } else if (!local_work) {
            break;
        }
        const StepResult r = executor.step();
        MOE_RETURN_IF_ERROR(model->expert_parallel_status());
        if (r.empty() && local_work) return internal_error("moeserve run: nothing was scheduled");
        for (const SeqResult& s : r.seqs) {
            const size_t m = static_cast<size_t>(s.id - 1);
            if (s.outcome == SeqOutcome::kFailed) return s.status;
            if (s.outcome != SeqOutcome::kSampled || done[m]) continue;
            SeqOut& o = outs[m];
            if (o.ids.empty()) t_first[m] = clock::now();
            o.ids.push_back(s.sample.token);
            o.logprobs.push_back(s.sample.logprob);
            const bool eos = !f.ignore_eos && std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(),
                                                        s.sample.token) != c.eos_token_ids.end();
            if (eos) o.finish = "stop";
            if (eos || static_cast<int>(o.ids.size()) >= f.max_tokens) {
                done[m] = true;
                ++num_done;
                executor.finish(s.id);
                const auto t_end = clock::now();
                o.prefill_s = std::chrono::duration<double>(t_first[m] - t0).count();
                const double decode_s = std::chrono::duration<double>(t_end - t_first[m]).count();
                o.decode_tps = o.ids.size() > 1 ? static_cast<double>(o.ids.size() - 1) / decode_s : 0.0;
            }
        }
    }
    std::vector<SeqOut> all = outs;
    if (group.comm) {
        MOE_ASSIGN_OR_RETURN(all, gather_to_rank0(*group.comm, outs, prompts.size()));
        if (group.rank() != 0) return ok_status();
        const ExpertParallelStats st = model->expert_parallel_stats();
        log::model().info(
            "expert parallelism, rank 0: {} MoE layer calls, {:.0f} bytes per token per MoE layer, dispatch+combine "
            "{:.3f} s",
            st.moe_layer_calls, st.bytes_per_token_layer(), st.exchange_seconds);
    }
    for (const SeqOut& o : all) print(o, f.json);
    return ok_status();
}

const Registrar kRegistrar("run", [](CLI::App& app, int& exit_code) {
    auto flags = std::make_shared<RunFlags>();
    CLI::App* cmd = app.add_subcommand("run", "Greedy generation in-process, no server: prints the generated ids");
    cmd->add_option("--model", flags->model, "Hugging Face model directory (default: the built-in demo model)")
        ->envname("MOESERVE_MODEL");
    cmd->add_option("--prompt-ids", flags->prompt_ids,
                    "comma-separated prompt token ids; repeat for several prompts (one output line each)")
        ->required()
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    cmd->add_option("--max-tokens", flags->max_tokens, "tokens to generate")->capture_default_str();
    cmd->add_flag("--json", flags->json, "print one JSON line with ids and per-token logprobs");
    cmd->add_flag("--ignore-eos", flags->ignore_eos, "do not stop at the model's EOS ids");
    cmd->add_option("--threads", flags->threads, "CPU threads (0: the affinity mask and cgroup CPU quota allow)")
        ->envname("MOESERVE_THREADS");
    cmd->add_option("--device", flags->device, "cpu, cuda or cuda:N")
        ->capture_default_str()
        ->envname("MOESERVE_DEVICE");
    cmd->add_option("--dtype", flags->dtype, "weight dtype: auto, f32, bf16")->capture_default_str();
    cmd->add_option("--kv-block-size", flags->block_size, "tokens per KV block")->check(CLI::Range(1, 1024));
    cmd->add_option("--kv-cache-dtype", flags->kv_cache_dtype,
                    "KV cache dtype: auto (bf16 for a model served in bf16, else f32), f32 or bf16")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "f32", "bf16"}));
    cmd->add_option("--compress-weights,--compress-experts", flags->compress_weights, kCompressWeightsHelp)
        ->capture_default_str()
        ->envname("MOESERVE_COMPRESS_WEIGHTS");
    cmd->add_option("--cpu-matmul", flags->cpu_matmul, kCpuMatmulHelp)
        ->capture_default_str()
        ->check(CLI::IsMember(kCpuMatmulValues))
        ->envname("MOESERVE_CPU_MATMUL");
    add_ep_flags(cmd, flags->ep);
    cmd->callback([flags, &exit_code] {
        StatusOr<EpGroup> group = start_ep_group(flags->ep);
        Status s = group.ok() ? run(*flags, *group) : group.status();
        if (!s.ok()) {
            const std::string rank = group.ok() && group->comm ? " (rank " + std::to_string(group->rank()) + ")" : "";
            std::fprintf(stderr, "moeserve run%s: %s\n", rank.c_str(), s.to_string().c_str());
            exit_code = 1;
        }
        if (group.ok()) finish_ep_group(*group, exit_code);
    });
});

}  // namespace
}  // namespace moe::cli
