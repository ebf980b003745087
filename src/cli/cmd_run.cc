// moeserve run: greedy generation in-process (no server), for checking a model directory.
//
//   moeserve run --model DIR --prompt-ids 1,2,3 --max-tokens 16 [--json]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/backend_select.h"
#include "cli/command.h"
#include "core/logging.h"
#include "engine/engine.h"
#include "engine/executor.h"
#include "model/moe_transformer.h"
#include "model/random_model.h"

namespace moe::cli {
namespace {

struct RunFlags {
    std::string model;
    std::string prompt_ids;
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
};

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

Status run(const RunFlags& f) {
    MOE_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, parse_ids(f.prompt_ids));
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
        std::fprintf(stderr,
                     "moeserve run: no --model, using the built-in demo model (random weights: its output "
                     "is meaningless)\n");
        MOE_ASSIGN_OR_RETURN(model, MoeTransformer::create(demo, make_random_weights(demo, 42, DType::kF32), *backend,
                                                           {.weight_dtype = dtype}));
    } else {
        MOE_ASSIGN_OR_RETURN(model, MoeTransformer::load(f.model, *backend, {.weight_dtype = dtype}));
    }
    const ModelConfig& c = model->config();
    const int64_t total = static_cast<int64_t>(prompt.size()) + f.max_tokens;
    if (c.max_position_embeddings > 0 && total > c.max_position_embeddings)
        return invalid_argument("prompt (" + std::to_string(prompt.size()) + ") + --max-tokens (" +
                                std::to_string(f.max_tokens) + ") exceeds the context length " +
                                std::to_string(c.max_position_embeddings));
    for (size_t i = 0; i < prompt.size(); ++i)
        if (prompt[i] >= c.vocab_size)
            return invalid_argument("--prompt-ids: token id " + std::to_string(prompt[i]) + " at index " +
                                    std::to_string(i) + " is outside the vocabulary [0, " +
                                    std::to_string(c.vocab_size) + ")");
    const int64_t bs = f.block_size;
    const int64_t num_blocks = (total + bs - 1) / bs;
    MOE_ASSIGN_OR_RETURN(DType kv_dtype, kv_cache_dtype_from_name(f.kv_cache_dtype, model->matrix_dtype()));
    MOE_ASSIGN_OR_RETURN(KvCache cache,
                         KvCache::create(*backend, c, {.num_blocks = num_blocks, .block_size = bs, .dtype = kv_dtype}));
    // One sequence stepped by the engine's Executor: the whole prompt in the first step, then one
    // token per step, each the greedy SequenceSampler's (argmax, ties to the lowest id; its
    // logprob is the raw log-softmax the server reports).
    KvBlockManager kv({.num_blocks = num_blocks, .block_size = bs, .prefix_caching = false});
    Scheduler scheduler({.max_batched_tokens = std::max<int64_t>(2048, static_cast<int64_t>(prompt.size())),
                         .max_seqs = 1,
                         .max_waiting = 1,
                         .max_model_len = total},
                        kv);
    Executor executor(*model, cache, scheduler);
    SamplingParams greedy;
    greedy.temperature = 0.0f;
    constexpr SeqId kSeq = 1;
    MOE_RETURN_IF_ERROR(executor.add({.id = kSeq, .prompt = prompt, .max_tokens = f.max_tokens}, greedy));

    std::vector<int32_t> out_ids;
    std::vector<double> logprobs;
    std::string finish = "length";
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    auto t_first = t0;
    while (static_cast<int>(out_ids.size()) < f.max_tokens) {
        const StepResult r = executor.step();
        if (r.empty()) return internal_error("moeserve run: nothing was scheduled");
        const SeqResult& s = r.seqs[0];
        if (s.outcome == SeqOutcome::kFailed) return s.status;
        if (s.outcome != SeqOutcome::kSampled) continue;
        const int32_t next = s.sample.token;
        if (out_ids.empty()) t_first = clock::now();
        out_ids.push_back(next);
        logprobs.push_back(s.sample.logprob);
        if (!f.ignore_eos && std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), next) != c.eos_token_ids.end()) {
            finish = "stop";
            break;
        }
    }
    executor.finish(kSeq);
    const auto t_end = clock::now();
    const double prefill_s = std::chrono::duration<double>(t_first - t0).count();
    const double decode_s = std::chrono::duration<double>(t_end - t_first).count();
    const double decode_tps = out_ids.size() > 1 ? static_cast<double>(out_ids.size() - 1) / decode_s : 0.0;
    if (f.json) {
        nlohmann::json j;
        j["ids"] = out_ids;
        j["logprobs"] = logprobs;
        j["finish_reason"] = finish;
        j["prompt_tokens"] = prompt.size();
        j["prefill_seconds"] = prefill_s;
        j["decode_tokens_per_second"] = decode_tps;
        std::printf("%s\n", j.dump().c_str());
    } else {
        std::string line;
        for (size_t i = 0; i < out_ids.size(); ++i) line += (i ? "," : "") + std::to_string(out_ids[i]);
        std::printf("%s\n", line.c_str());
        std::fprintf(stderr, "%zu prompt tokens in %.3f s (%.1f tok/s), %zu generated, decode %.1f tok/s, finish: %s\n",
                     prompt.size(), prefill_s, static_cast<double>(prompt.size()) / prefill_s, out_ids.size(),
                     decode_tps, finish.c_str());
    }
    return ok_status();
}

const Registrar kRegistrar("run", [](CLI::App& app, int& exit_code) {
    auto flags = std::make_shared<RunFlags>();
    CLI::App* cmd = app.add_subcommand("run", "Greedy generation in-process, no server: prints the generated ids");
    cmd->add_option("--model", flags->model, "Hugging Face model directory (default: the built-in demo model)")
        ->envname("MOESERVE_MODEL");
    cmd->add_option("--prompt-ids", flags->prompt_ids, "comma-separated prompt token ids")->required();
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
    cmd->callback([flags, &exit_code] {
        Status s = run(*flags);
        if (!s.ok()) {
            std::fprintf(stderr, "moeserve run: %s\n", s.to_string().c_str());
            exit_code = 1;
        }
    });
});

}  // namespace
}  // namespace moe::cli
