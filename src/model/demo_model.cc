// The built-in demo model: random Qwen3-MoE-shaped weights and a byte-level BPE tokenizer made in
// code, so that `moeserve serve` works with nothing else on the machine.
#include "model/demo_model.h"

#include <nlohmann/json.hpp>

#include "core/logging.h"
#include "model/random_model.h"

namespace moe {
namespace {

constexpr int64_t kDemoVocab = 259;  // 256 byte tokens + 3 special tokens: every id decodes
constexpr uint64_t kDemoSeed = 20261122;

// GPT-2's reversible byte -> printable code point map: printable Latin-1 bytes map to
// themselves, the rest to U+0100 onwards in byte order.
std::string byte_token(int b) {
    int cp;
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    if (printable) {
        cp = b;
    } else {
        int n = 0;
        for (int x = 0; x < b; ++x) {
            const bool p = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
            if (!p) ++n;
        }
        cp = 256 + n;
    }
    std::string s;
    if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
    } else {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    return s;
}

std::string demo_tokenizer_json() {
    nlohmann::json vocab = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) vocab[byte_token(b)] = b;
    nlohmann::json added = nlohmann::json::array();
    const char* specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 3; ++i) {
        added.push_back({{"id", 256 + i},
                         {"content", specials[i]},
                         {"single_word", false},
                         {"lstrip", false},
                         {"rstrip", false},
                         {"normalized", false},
                         {"special", true}});
    }
    nlohmann::json j = {
        {"version", "1.0"},
        {"added_tokens", added},
        {"normalizer", nullptr},
        {"pre_tokenizer",
         {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
        {"post_processor", nullptr},
        {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
        {"model",
         {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"vocab", vocab},
          {"merges", nlohmann::json::array()}}},
    };
    return j.dump();
}

}  // namespace

StatusOr<DemoModel> make_demo_model(Backend& backend) {
    RandomModelShape shape;
    shape.vocab_size = kDemoVocab;
    shape.hidden_size = 256;
    shape.num_layers = 4;
    shape.num_heads = 8;
    shape.num_kv_heads = 2;
    shape.head_dim = 32;
    shape.num_experts = 16;
    shape.num_experts_per_tok = 2;
    shape.moe_intermediate_size = 256;
    shape.max_position_embeddings = 4096;
    nlohmann::json cfg_json = random_model_config_json(shape);
    cfg_json["eos_token_id"] = 256;  // <|endoftext|>
    cfg_json["bos_token_id"] = nullptr;
    MOE_ASSIGN_OR_RETURN(ModelConfig config, parse_model_config(cfg_json, "built-in demo model"));
    DemoModel demo;
    MOE_ASSIGN_OR_RETURN(demo.model, MoeTransformer::create(config, make_random_weights(config, kDemoSeed, DType::kF32),
                                                            backend, {.weight_dtype = WeightDType::kF32}));
    MOE_ASSIGN_OR_RETURN(demo.tokenizer, Tokenizer::from_json_string(demo_tokenizer_json(), "built-in demo tokenizer"));
    return demo;
}

}  // namespace moe
