// tokenizer.json and vocab.json + merges.txt (+ tokenizer_config.json) to a Tokenizer::Impl.
// nlohmann::json throws; every entry point here catches and turns that into a Status.
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/json_limits.h"
#include "tokenizer/tiktoken.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace moe::tok {
namespace {

using nlohmann::json;

constexpr size_t kMaxJsonBytes = 512u << 20;
constexpr size_t kMaxAddedTokens = 1u << 20;

// Depth-bounded (kMaxJsonDepth): the component parsers below recurse over the value.
StatusOr<json> parse_json(std::string_view text, const std::string& origin) {
    return parse_json_bounded(text, origin);
}

// A token field in tokenizer_config.json is either a string or {"content": ...}.
std::optional<std::string> token_string(const json& cfg, const char* key) {
    if (!cfg.contains(key)) return std::nullopt;
    const json& v = cfg[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return std::nullopt;
}

Status parse_added_token(const json& t, const std::string& where, AddedToken& out) {
    if (!t.is_object()) return invalid_argument(fmt::format("{}: expected an object", where));
    if (!t.contains("content") || !t["content"].is_string()) {
        return invalid_argument(fmt::format("{}: missing string \"content\"", where));
    }
    out.content = t["content"].get<std::string>();
    if (out.content.empty() || out.content.size() > kMaxTokenBytes) {
        return invalid_argument(fmt::format("{}: content must be 1..{} bytes", where, kMaxTokenBytes));
    }
    if (find_invalid_utf8(out.content) != std::string::npos) {
        return invalid_argument(fmt::format("{}: content is not valid UTF-8", where));
    }
    out.special = t.value("special", false);
    out.lstrip = t.value("lstrip", false);
    out.rstrip = t.value("rstrip", false);
    out.single_word = t.value("single_word", false);
    // HF's default for a missing flag: special tokens are matched in the raw text.
    out.normalized = t.value("normalized", !out.special);
    return ok_status();
}

Status check_id(const json& v, const std::string& where, int32_t& out) {
    if (!v.is_number_integer()) return invalid_argument(fmt::format("{}: id must be an integer", where));
    const auto id = v.get<int64_t>();
    if (id < 0 || id > kMaxTokenId) {
        return invalid_argument(fmt::format("{}: id {} is outside [0, {}]", where, id, kMaxTokenId));
    }
    out = static_cast<int32_t>(id);
    return ok_status();
}

Status parse_vocab(const json& v, const std::string& where, std::vector<std::pair<std::string, int64_t>>& out) {
    if (!v.is_object()) return invalid_argument(fmt::format("{}: vocab must be an object of token -> id", where));
    if (v.size() > kMaxVocabEntries) {
        return invalid_argument(
            fmt::format("{}: {} vocab entries is over the limit of {}", where, v.size(), kMaxVocabEntries));
    }
    out.reserve(v.size());
    for (auto it = v.begin(); it != v.end(); ++it) {
        if (!it.value().is_number_integer()) {
            return invalid_argument(fmt::format("{}: the id of token '{}' is not an integer", where, it.key()));
        }
        out.emplace_back(it.key(), it.value().get<int64_t>());
    }
    return ok_status();
}

// Post-processor for a single sequence: the special ids before and after it.
Status parse_post_processor(const json& p, const std::string& where, Tokenizer::Impl& impl, int depth = 0) {
    if (p.is_null()) return ok_status();
    const std::string type = p.at("type").get<std::string>();
    if (type == "ByteLevel") return ok_status();  // only adjusts offsets
    if (type == "Sequence") {
        if (depth >= kMaxSequenceDepth) {
            return invalid_argument(
                fmt::format("{}: Sequence nested deeper than the limit of {} levels", where, kMaxSequenceDepth));
        }
        const auto& list = p.at("processors");
        for (size_t i = 0; i < list.size(); ++i) {
            MOE_RETURN_IF_ERROR(
                parse_post_processor(list[i], fmt::format("{}.processors[{}]", where, i), impl, depth + 1));
        }
        return ok_status();
    }
    if (type == "TemplateProcessing") {
        const auto& specials = p.at("special_tokens");
        bool seen_sequence = false;
        for (const auto& item : p.at("single")) {
            if (item.contains("Sequence")) {
                seen_sequence = true;
                continue;
            }
            const std::string name = item.at("SpecialToken").at("id").get<std::string>();
            if (!specials.contains(name)) {
                return invalid_argument(
                    fmt::format("{}: template names special token '{}' that special_tokens lacks", where, name));
            }
            for (const auto& idv : specials[name].at("ids")) {
                int32_t id;
                MOE_RETURN_IF_ERROR(check_id(idv, where + ".special_tokens." + name, id));
                (seen_sequence ? impl.post_suffix : impl.post_prefix).push_back(id);
            }
        }
        return ok_status();
    }
    if (type == "BertProcessing" || type == "RobertaProcessing") {
        int32_t cls, sep;
        MOE_RETURN_IF_ERROR(check_id(p.at("cls").at(1), where + ".cls", cls));
        MOE_RETURN_IF_ERROR(check_id(p.at("sep").at(1), where + ".sep", sep));
        impl.post_prefix.push_back(cls);
        impl.post_suffix.push_back(sep);
        return ok_status();
    }
    return unimplemented(fmt::format("{}: post-processor type '{}' is not supported", where, type));
}

// BOS/EOS names from tokenizer_config.json, when there is one.
Status apply_config_bos_eos(const json& cfg, Tokenizer::Impl& impl) {
    auto lookup = [&](const std::optional<std::string>& name) -> std::optional<int32_t> {
        if (!name) return std::nullopt;
        auto it = impl.added_by_content.find(*name);
        if (it != impl.added_by_content.end()) return it->second;
        return impl.model->find(*name);
    };
    if (auto id = lookup(token_string(cfg, "bos_token"))) impl.bos = id;
    if (auto id = lookup(token_string(cfg, "eos_token"))) impl.eos = id;
    return ok_status();
}

// tokenizer_config.json's added_tokens_decoder ({"id": {token}, ...}) appended to `out`; every id
// must lie in [first_id, end_id), the range the model gives such tokens.
Status parse_added_tokens_decoder(const json& cfg, const std::string& where, int64_t first_id, int64_t end_id,
                                  std::vector<AddedToken>& out) {
    if (!cfg.contains("added_tokens_decoder")) return ok_status();
    const json& dec = cfg["added_tokens_decoder"];
    if (!dec.is_object() || dec.size() > kMaxAddedTokens) {
        return invalid_argument(
            fmt::format("{}: added_tokens_decoder must be an object of at most {} entries", where, kMaxAddedTokens));
    }
    for (auto it = dec.begin(); it != dec.end(); ++it) {
        const std::string w = fmt::format("{}: added_tokens_decoder[\"{}\"]", where, it.key());
        AddedToken t;
        MOE_RETURN_IF_ERROR(parse_added_token(it.value(), w, t));
        int64_t id = -1;
        try {
            size_t used = 0;
            id = std::stoll(it.key(), &used);
            if (used != it.key().size()) id = -1;
        } catch (const std::exception&) {
            id = -1;
        }
        if (id < first_id || id >= end_id) {
            return invalid_argument(fmt::format(
                "{}: key is not an id in range (the model's added tokens are ids [{}, {}))", w, first_id, end_id));
        }
        t.id = static_cast<int32_t>(id);
        out.push_back(std::move(t));
    }
    return ok_status();
}

StatusOr<json> read_config(const std::string& config_file) {
    if (config_file.empty()) return json::object();
    MOE_ASSIGN_OR_RETURN(std::string text, read_file(config_file, 64u << 20));
    MOE_ASSIGN_OR_RETURN(json cfg, parse_json(text, config_file));
    if (!cfg.is_object()) return invalid_argument(fmt::format("{}: expected a JSON object", config_file));
    return cfg;
}

StatusOr<std::unique_ptr<Tokenizer::Impl>> load_json_impl(const json& j, const std::string& origin,
                                                          const std::string& config_file) {
    if (!j.is_object()) return invalid_argument(fmt::format("{}: expected a JSON object at the top", origin));
    if (!j.contains("model") || !j["model"].is_object()) {
        return invalid_argument(fmt::format("{}: missing \"model\" object", origin));
    }
    const json& m = j["model"];
    // The 2020 serialization has no "type"; those files are all BPE.
    const std::string type = m.contains("type") ? m["type"].get<std::string>() : "BPE";
    if (type != "BPE") {
        return unimplemented(fmt::format("{}: model type '{}' is not supported (only BPE)", origin, type));
    }
    if (!m.contains("vocab")) return invalid_argument(fmt::format("{}: model has no \"vocab\"", origin));
    if (!m.contains("merges") || !m["merges"].is_array()) {
        return invalid_argument(fmt::format("{}: model has no \"merges\" array", origin));
    }
    std::vector<std::pair<std::string, int64_t>> vocab;
    MOE_RETURN_IF_ERROR(parse_vocab(m["vocab"], origin + ": model.vocab", vocab));
    const json& jm = m["merges"];
    if (jm.size() > kMaxMerges) {
        return invalid_argument(fmt::format("{}: {} merges is over the limit of {}", origin, jm.size(), kMaxMerges));
    }
    std::vector<std::pair<std::string, std::string>> merges;
    merges.reserve(jm.size());
    for (size_t i = 0; i < jm.size(); ++i) {
        const json& e = jm[i];
        if (e.is_string()) {
            const std::string s = e.get<std::string>();
            const size_t sp = s.find(' ');
            if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
                return invalid_argument(
                    fmt::format("{}: model.merges[{}] '{}' is not two tokens separated by one space", origin, i, s));
            }
            merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
            merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
        } else {
            return invalid_argument(fmt::format("{}: model.merges[{}] is neither \"a b\" nor [a, b]", origin, i));
        }
    }
    auto str_or_empty = [&](const char* key) {
        return m.contains(key) && m[key].is_string() ? m[key].get<std::string>() : std::string();
    };
    auto impl = std::make_unique<Tokenizer::Impl>();
    impl->origin = origin;
    BpeOptions opt;
    opt.byte_fallback = m.value("byte_fallback", false);
    opt.fuse_unk = m.value("fuse_unk", false);
    opt.ignore_merges = m.value("ignore_merges", false);
    if (m.contains("unk_token") && m["unk_token"].is_string()) opt.unk_token = m["unk_token"].get<std::string>();
    opt.continuing_subword_prefix = str_or_empty("continuing_subword_prefix");
    opt.end_of_word_suffix = str_or_empty("end_of_word_suffix");
    if (m.contains("dropout") && m["dropout"].is_number() && m["dropout"].get<double>() > 0.0) {
        return unimplemented(fmt::format("{}: BPE dropout is not supported for inference", origin));
    }

    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
        MOE_ASSIGN_OR_RETURN(impl->normalizer, parse_normalizer(j["normalizer"], origin + ": normalizer"));
    }
    if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
        MOE_ASSIGN_OR_RETURN(ParsedPreTokenizer pt,
                             parse_pre_tokenizer(j["pre_tokenizer"], origin + ": pre_tokenizer"));
        impl->pre_tokenizer = std::move(pt.pre_tokenizer);
        opt.byte_level = pt.byte_level;
    }
    if (j.contains("decoder") && !j["decoder"].is_null()) {
        MOE_ASSIGN_OR_RETURN(impl->decoder, parse_decoder(j["decoder"], origin + ": decoder"));
    }
    MOE_ASSIGN_OR_RETURN(impl->model, BpeModel::build(std::move(vocab), merges, std::move(opt), origin + ": model"));

    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
        const json& list = j["added_tokens"];
        if (!list.is_array()) return invalid_argument(fmt::format("{}: added_tokens must be an array", origin));
        if (list.size() > kMaxAddedTokens) {
            return invalid_argument(
                fmt::format("{}: {} added tokens is over the limit of {}", origin, list.size(), kMaxAddedTokens));
        }
        for (size_t i = 0; i < list.size(); ++i) {
            const std::string where = fmt::format("{}: added_tokens[{}]", origin, i);
            AddedToken t;
            MOE_RETURN_IF_ERROR(parse_added_token(list[i], where, t));
            if (!list[i].contains("id")) return invalid_argument(where + ": missing \"id\"");
            MOE_RETURN_IF_ERROR(check_id(list[i]["id"], where, t.id));
            impl->added.push_back(std::move(t));
        }
    }
    if (j.contains("post_processor")) {
        MOE_RETURN_IF_ERROR(parse_post_processor(j["post_processor"], origin + ": post_processor", *impl));
    }
    MOE_RETURN_IF_ERROR(impl->finalize());
    MOE_ASSIGN_OR_RETURN(json cfg, read_config(config_file));
    MOE_RETURN_IF_ERROR(apply_config_bos_eos(cfg, *impl));
    // Without a config, a template's leading special token is the BOS (Llama, Mistral).
    if (!impl->bos && !impl->post_prefix.empty()) impl->bos = impl->post_prefix.front();
    return impl;
}

}  // namespace

// Refuses FIFOs and devices without blocking, and files over `max_bytes`.
StatusOr<std::string> read_file(const std::string& path, size_t max_bytes) {
    return read_regular_file(path, max_bytes);
}

StatusOr<std::unique_ptr<Tokenizer::Impl>> load_tokenizer_json(std::string_view text, const std::string& origin,
                                                               const std::string& config_file) {
    if (text.size() > kMaxJsonBytes) {
        return invalid_argument(
            fmt::format("{}: {} bytes is over the limit of {}", origin, text.size(), kMaxJsonBytes));
    }
    MOE_ASSIGN_OR_RETURN(json j, parse_json(text, origin));
    try {
        return load_json_impl(j, origin, config_file);
    } catch (const json::exception& e) {
        return invalid_argument(fmt::format("{}: unexpected structure: {}", origin, e.what()));
    }
}

StatusOr<std::unique_ptr<Tokenizer::Impl>> load_vocab_merges(const std::string& vocab_file,
                                                             const std::string& merges_file,
                                                             const std::string& config_file) {
    try {
        MOE_ASSIGN_OR_RETURN(std::string vtext, read_file(vocab_file, kMaxJsonBytes));
        MOE_ASSIGN_OR_RETURN(json vj, parse_json(vtext, vocab_file));
        std::vector<std::pair<std::string, int64_t>> vocab;
        MOE_RETURN_IF_ERROR(parse_vocab(vj, vocab_file, vocab));
        vj = json();
        MOE_ASSIGN_OR_RETURN(std::string mtext, read_file(merges_file, kMaxJsonBytes));
        std::vector<std::pair<std::string, std::string>> merges;
        size_t line_no = 0, pos = 0;
        while (pos < mtext.size()) {
            size_t eol = mtext.find('\n', pos);
            if (eol == std::string::npos) eol = mtext.size();
            std::string_view line(mtext.data() + pos, eol - pos);
            pos = eol + 1;
            ++line_no;
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
            const size_t sp = line.find(' ');
            if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos) {
                return invalid_argument(
                    fmt::format("{}:{}: expected two tokens separated by one space", merges_file, line_no));
            }
            if (merges.size() >= kMaxMerges) {
                return invalid_argument(fmt::format("{}: more than {} merges", merges_file, kMaxMerges));
            }
            merges.emplace_back(std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)));
        }
        MOE_ASSIGN_OR_RETURN(json cfg, read_config(config_file));

        auto impl = std::make_unique<Tokenizer::Impl>();
        impl->origin = vocab_file;
        // The slow tokenizers' classes fix their pre-tokenization: Qwen2 adds NFC and its own
        // split regex; everything else here is GPT-2's.
        const std::string cls = cfg.value("tokenizer_class", std::string());
        const bool qwen2 = cls.starts_with("Qwen2");
        if (qwen2) impl->normalizer = make_nfc_normalizer();
        MOE_ASSIGN_OR_RETURN(ParsedPreTokenizer pt,
                             make_byte_level_regex_pre_tokenizer(qwen2 ? kQwen2SplitRegex : kGpt2SplitRegex));
        impl->pre_tokenizer = std::move(pt.pre_tokenizer);
        impl->decoder = make_byte_level_decoder();
        BpeOptions opt;
        opt.byte_level = true;
        MOE_ASSIGN_OR_RETURN(impl->model, BpeModel::build(std::move(vocab), merges, std::move(opt), vocab_file));

        const std::string where = config_file.empty() ? std::string("tokenizer_config.json") : config_file;
        MOE_RETURN_IF_ERROR(parse_added_tokens_decoder(cfg, where, 0, kMaxTokenId + 1, impl->added));
        // The slow tokenizers never split their named special tokens, even when those are only
        // in vocab.json (GPT-2's <|endoftext|>).
        std::vector<std::string> names;
        for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
            if (auto s = token_string(cfg, key)) names.push_back(*s);
        }
        if (cfg.contains("additional_special_tokens") && cfg["additional_special_tokens"].is_array()) {
            for (const auto& s : cfg["additional_special_tokens"]) {
                if (s.is_string()) names.push_back(s.get<std::string>());
            }
        }
        // GPT2Tokenizer and Qwen2Tokenizer default every named token to <|endoftext|>.
        if (config_file.empty()) names.push_back("<|endoftext|>");
        for (const std::string& name : names) {
            const bool known = std::any_of(impl->added.begin(), impl->added.end(),
                                           [&](const AddedToken& t) { return t.content == name; });
            auto id = impl->model->find(name);
            if (known || !id) continue;
            AddedToken t;
            t.id = *id;
            t.content = name;
            t.special = true;
            impl->added.push_back(std::move(t));
        }
        MOE_RETURN_IF_ERROR(impl->finalize());
        MOE_RETURN_IF_ERROR(apply_config_bos_eos(cfg, *impl));
        if (cfg.value("add_bos_token", false) && impl->bos) impl->post_prefix.push_back(*impl->bos);
        if (cfg.value("add_eos_token", false) && impl->eos) impl->post_suffix.push_back(*impl->eos);
        return impl;
    } catch (const json::exception& e) {
        return invalid_argument(fmt::format("{}: unexpected structure: {}", vocab_file, e.what()));
    }
}

// tiktoken tokenizers as Kimi K2 publishes them (tokenization_kimi.py): the rank file is the
// model; the special tokens take the 256 + 2 ids after the last rank, named by
// added_tokens_decoder where it names them and `<|reserved_token_ID|>` otherwise; all of them are
// recognised in text (the class encodes with allowed_special="all").
StatusOr<std::unique_ptr<Tokenizer::Impl>> load_tiktoken(const std::string& model_file,
                                                         const std::string& config_file) {
    constexpr int64_t kNumSpecial = 256 + 2;  // tokenization_kimi.py: num_reserved_special_tokens + 2
    try {
        if (config_file.empty()) {
            return invalid_argument(fmt::format(
                "{}: a tiktoken model needs its tokenizer_config.json (split pattern and special tokens)", model_file));
        }
        MOE_ASSIGN_OR_RETURN(json cfg, read_config(config_file));
        std::string cls;
        if (cfg.contains("auto_map") && cfg["auto_map"].is_object() && cfg["auto_map"].contains("AutoTokenizer")) {
            const json& a = cfg["auto_map"]["AutoTokenizer"];
            if (a.is_string()) cls = a.get<std::string>();
            if (a.is_array() && !a.empty() && a[0].is_string()) cls = a[0].get<std::string>();
        }
        MOE_ASSIGN_OR_RETURN(std::string regex, tiktoken_split_regex(cls, config_file));
        MOE_ASSIGN_OR_RETURN(std::string text, read_file(model_file, kMaxTiktokenFileBytes));
        MOE_ASSIGN_OR_RETURN(auto ranks, parse_tiktoken_ranks(text, model_file));
        text = std::string();
        const int64_t num_base = static_cast<int64_t>(ranks.size());

        auto impl = std::make_unique<Tokenizer::Impl>();
        impl->origin = model_file;
        MOE_ASSIGN_OR_RETURN(ParsedPreTokenizer pt, make_byte_level_regex_pre_tokenizer(regex));
        impl->pre_tokenizer = std::move(pt.pre_tokenizer);
        impl->decoder = make_byte_level_decoder();
        MOE_ASSIGN_OR_RETURN(impl->model, BpeModel::build_from_ranks(std::move(ranks), model_file));
        if (impl->model->size() != num_base) {
            return invalid_argument(
                fmt::format("{}: ranks must be 0..{} without gaps (the special tokens follow them); "
                            "the largest is {}",
                            model_file, num_base - 1, impl->model->size() - 1));
        }
        std::vector<AddedToken> listed;
        MOE_RETURN_IF_ERROR(parse_added_tokens_decoder(cfg, config_file, num_base, num_base + kNumSpecial, listed));
        std::unordered_map<int64_t, std::string> named;
        for (AddedToken& t : listed) named[t.id] = std::move(t.content);
        for (int64_t id = num_base; id < num_base + kNumSpecial; ++id) {
            AddedToken t;
            t.id = static_cast<int32_t>(id);
            auto it = named.find(id);
            t.content = it != named.end() ? it->second : fmt::format("<|reserved_token_{}|>", id);
            t.special = true;
            impl->added.push_back(std::move(t));
        }
        MOE_RETURN_IF_ERROR(impl->finalize());
        MOE_RETURN_IF_ERROR(apply_config_bos_eos(cfg, *impl));
        return impl;
    } catch (const json::exception& e) {
        return invalid_argument(fmt::format("{}: unexpected structure: {}", config_file, e.what()));
    }
}

}  // namespace moe::tok
