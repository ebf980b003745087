// Tokenizer: encode (added tokens -> normalizer -> pre-tokenizer -> BPE -> post-processor) and
// decode, plus the incremental detokenizer.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "core/logging.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace moe {

namespace fs = std::filesystem;

Status Tokenizer::Impl::finalize() {
    std::sort(added.begin(), added.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    int64_t size = model->size();
    for (size_t k = 0; k < added.size(); ++k) {
        const auto& t = added[k];
        if (k > 0 && added[k - 1].id == t.id && added[k - 1].content != t.content) {
            return invalid_argument(fmt::format("{}: duplicate added token id {} ('{}' and '{}')", origin, t.id,
                                                added[k - 1].content, t.content));
        }
        added_index[t.id] = k;
        added_by_content.emplace(t.content, t.id);
        size = std::max<int64_t>(size, int64_t{t.id} + 1);
    }
    // Added ids may extend the model's range, but not leave a huge hole after it.
    if (size > int64_t{model->size()} + static_cast<int64_t>(added.size()) + 65536) {
        return invalid_argument(
            fmt::format("{}: added token id {} is far past the model's {} ids", origin, size - 1, model->size()));
    }
    vocab_size = static_cast<int32_t>(size);
    special.assign(static_cast<size_t>(size), false);
    std::vector<const tok::AddedToken*> raw, norm;
    std::vector<std::string> raw_pat, norm_pat;
    for (const auto& t : added) {
        if (t.special) special[static_cast<size_t>(t.id)] = true;
        if (t.normalized && normalizer) {
            std::string p = t.content;
            MOE_RETURN_IF_ERROR(normalizer->normalize(p, tok::normalized_byte_limit(p.size())));
            norm.push_back(&t);
            norm_pat.push_back(std::move(p));
        } else if (t.normalized) {
            norm.push_back(&t);
            norm_pat.push_back(t.content);
        } else {
            raw.push_back(&t);
            raw_pat.push_back(t.content);
        }
    }
    raw_matcher.build(raw, raw_pat);
    normalized_matcher.build(norm, norm_pat);
    return ok_status();
}

namespace {

std::string pick_config(const fs::path& dir, const TokenizerLoadOptions& options) {
    if (!options.config_file.empty()) return options.config_file;
    std::error_code ec;
    if (fs::exists(dir / "tokenizer_config.json", ec)) return (dir / "tokenizer_config.json").string();
    std::string found;
    int count = 0;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        const std::string name = e.path().filename().string();
        if (name.ends_with("tokenizer_config.json")) {
            found = e.path().string();
            ++count;
        }
    }
    return count == 1 ? found : std::string();
}

// Encodes one stretch of text that contains no raw-matched added token.
Status encode_chunk(const Tokenizer::Impl& impl, std::string_view chunk, bool at_input_start,
                    std::vector<int32_t>& out) {
    std::string text(chunk);
    if (impl.normalizer) MOE_RETURN_IF_ERROR(impl.normalizer->normalize(text, tok::normalized_byte_limit(text.size())));
    std::vector<tok::Piece> pieces;
    auto emit_text = [&](size_t b, size_t e) -> Status {
        if (e <= b) return ok_status();
        pieces.clear();
        pieces.push_back(tok::Piece{text.substr(b, e - b), at_input_start && b == 0});
        if (impl.pre_tokenizer) MOE_RETURN_IF_ERROR(impl.pre_tokenizer->split(pieces));
        for (const auto& p : pieces) impl.model->encode_word(p.text, out);
        return ok_status();
    };
    size_t last = 0;
    for (const auto& m : impl.normalized_matcher.find_all(text)) {
        MOE_RETURN_IF_ERROR(emit_text(last, m.begin));
        out.push_back(m.id);
        last = m.end;
    }
    return emit_text(last, text.size());
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::load(const std::string& dir, const TokenizerLoadOptions& options) {
    std::error_code ec;
    fs::path path(dir);
    if (fs::is_regular_file(path, ec)) {
        MOE_ASSIGN_OR_RETURN(std::string text, tok::read_file(path.string(), 512u << 20));
        MOE_ASSIGN_OR_RETURN(auto impl, tok::load_tokenizer_json(text, path.string(), options.config_file));
        return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
    }
    if (!fs::is_directory(path, ec)) return not_found(fmt::format("tokenizer: '{}' is not a directory or file", dir));
    const std::string config = pick_config(path, options);
    if (fs::exists(path / "tokenizer.json", ec)) {
        const std::string file = (path / "tokenizer.json").string();
        MOE_ASSIGN_OR_RETURN(std::string text, tok::read_file(file, 512u << 20));
        MOE_ASSIGN_OR_RETURN(auto impl, tok::load_tokenizer_json(text, file, config));
        return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
    }
    if (fs::exists(path / "vocab.json", ec) && fs::exists(path / "merges.txt", ec)) {
        if (!config.empty()) log::model().debug("tokenizer: {} with added tokens from {}", dir, config);
        MOE_ASSIGN_OR_RETURN(
            auto impl, tok::load_vocab_merges((path / "vocab.json").string(), (path / "merges.txt").string(), config));
        return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
    }
    if (fs::exists(path / "tiktoken.model", ec)) {
        MOE_ASSIGN_OR_RETURN(auto impl, tok::load_tiktoken((path / "tiktoken.model").string(), config));
        return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
    }
    return not_found(
        fmt::format("tokenizer: '{}' has neither tokenizer.json, vocab.json + merges.txt, nor tiktoken.model", dir));
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::from_json_string(std::string_view json, const std::string& origin) {
    MOE_ASSIGN_OR_RETURN(auto impl, tok::load_tokenizer_json(json, origin, ""));
    return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

StatusOr<std::vector<int32_t>> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
    const size_t bad = tok::find_invalid_utf8(text);
    if (bad != std::string_view::npos) {
        return invalid_argument(fmt::format("tokenizer: input text is not valid UTF-8 (byte 0x{:02X} at offset {})",
                                            static_cast<unsigned char>(text[bad]), bad));
    }
    const Impl& impl = *impl_;
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 8);
    if (add_special_tokens) out.insert(out.end(), impl.post_prefix.begin(), impl.post_prefix.end());
    size_t last = 0;
    for (const auto& m : impl.raw_matcher.find_all(text)) {
        if (m.begin > last) MOE_RETURN_IF_ERROR(encode_chunk(impl, text.substr(last, m.begin - last), last == 0, out));
        out.push_back(m.id);
        last = m.end;
    }
    if (last < text.size()) MOE_RETURN_IF_ERROR(encode_chunk(impl, text.substr(last), last == 0, out));
    if (add_special_tokens) out.insert(out.end(), impl.post_suffix.begin(), impl.post_suffix.end());
    return out;
}

StatusOr<std::string> Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
    const Impl& impl = *impl_;
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (size_t k = 0; k < ids.size(); ++k) {
        const int32_t id = ids[k];
        if (id < 0 || id >= impl.vocab_size) {
            return out_of_range(
                fmt::format("tokenizer: token id {} (position {}) is outside [0, {})", id, k, impl.vocab_size));
        }
        if (skip_special_tokens && impl.special[static_cast<size_t>(id)]) continue;
        if (const auto* t = impl.added_token(id)) {
            tokens.push_back(t->content);
        } else if (impl.model->has_id(id)) {
            tokens.push_back(impl.model->token(id));
        } else {
            return out_of_range(
                fmt::format("tokenizer: token id {} (position {}) has no token in {}", id, k, impl.origin));
        }
    }
    if (!impl.decoder) {
        std::string out;
        for (size_t k = 0; k < tokens.size(); ++k) {
            if (k) out += ' ';
            out += tokens[k];
        }
        return out;
    }
    impl.decoder->decode_chain(tokens);
    std::string out;
    for (const auto& t : tokens) out += t;
    return out;
}

int32_t Tokenizer::vocab_size() const {
    return impl_->vocab_size;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
    if (id < 0 || id >= impl_->vocab_size) return std::nullopt;
    if (const auto* t = impl_->added_token(id)) return t->content;
    if (impl_->model->has_id(id)) return impl_->model->token(id);
    return std::nullopt;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
    auto it = impl_->added_by_content.find(token);
    if (it != impl_->added_by_content.end()) return it->second;
    return impl_->model->find(token);
}

std::optional<int32_t> Tokenizer::bos_id() const {
    return impl_->bos;
}
std::optional<int32_t> Tokenizer::eos_id() const {
    return impl_->eos;
}

bool Tokenizer::is_special(int32_t id) const {
    return id >= 0 && id < impl_->vocab_size && impl_->special[static_cast<size_t>(id)];
}

std::vector<SpecialToken> Tokenizer::special_tokens() const {
    std::vector<SpecialToken> out;
    for (const auto& t : impl_->added) {
        if (t.special) out.push_back({t.id, t.content});
    }
    return out;
}

// ---- IncrementalDetokenizer ----------------------------------------------------------------
//
// Each push re-decodes a short window: the ids whose text is already out (prefix_offset_ to
// read_offset_, kept as left context so leading-space rules and byte-level merging see what a
// full decode sees) plus the new ones. The part past the context's text is emitted once it no
// longer ends in U+FFFD, i.e. once the bytes so far form whole characters.

namespace {
constexpr size_t kContextTokens = 6;
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens,
                                               std::span<const int32_t> context_ids)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {
    const size_t keep = std::min(context_ids.size(), kContextTokens);
    ids_.assign(context_ids.end() - static_cast<std::ptrdiff_t>(keep), context_ids.end());
    context_size_ = keep;
    prefix_offset_ = 0;
    read_offset_ = keep;
}

StatusOr<std::string> IncrementalDetokenizer::push(int32_t id) {
    if (id < 0 || id >= tokenizer_.vocab_size()) {
        return out_of_range(fmt::format("detokenizer: token id {} is outside [0, {})", id, tokenizer_.vocab_size()));
    }
    ids_.push_back(id);
    const std::span<const int32_t> all(ids_);
    MOE_ASSIGN_OR_RETURN(std::string prefix,
                         tokenizer_.decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_));
    MOE_ASSIGN_OR_RETURN(std::string full, tokenizer_.decode(all.subspan(prefix_offset_), skip_special_));
    if (full.size() <= prefix.size() || full.ends_with(kReplacement) || full.compare(0, prefix.size(), prefix) != 0) {
        return std::string();
    }
    std::string delta = full.substr(prefix.size());
    prefix_offset_ = read_offset_;
    read_offset_ = ids_.size();
    // The window would otherwise grow with every emitted token; keep a few ids of context.
    if (read_offset_ - prefix_offset_ > kContextTokens) prefix_offset_ = read_offset_ - kContextTokens;
    return delta;
}

StatusOr<std::string> IncrementalDetokenizer::finish() {
    if (read_offset_ >= ids_.size()) return std::string();
    const std::span<const int32_t> all(ids_);
    MOE_ASSIGN_OR_RETURN(std::string prefix,
                         tokenizer_.decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_));
    MOE_ASSIGN_OR_RETURN(std::string full, tokenizer_.decode(all.subspan(prefix_offset_), skip_special_));
    read_offset_ = ids_.size();
    if (full.size() <= prefix.size() || full.compare(0, prefix.size(), prefix) != 0) return std::string();
    return full.substr(prefix.size());
}

}  // namespace moe
