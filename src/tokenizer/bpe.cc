#include "tokenizer/bpe.h"

#include <fmt/format.h>

#include <algorithm>
#include <queue>

#include "tokenizer/unicode.h"

namespace moe::tok {
namespace {

constexpr size_t kCacheMaxEntries = 1u << 16;
constexpr size_t kCacheMaxWordBytes = 64;

uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::string printable(std::string_view s) {
    std::string out(s.substr(0, std::min<size_t>(s.size(), 64)));
    return out;
}

}  // namespace

StatusOr<std::unique_ptr<BpeModel>> BpeModel::build(std::vector<std::pair<std::string, int64_t>> vocab,
                                                    const std::vector<std::pair<std::string, std::string>>& merges,
                                                    BpeOptions options, const std::string& where) {
    if (vocab.empty()) return invalid_argument(fmt::format("{}: the vocabulary is empty", where));
    if (vocab.size() > kMaxVocabEntries) {
        return invalid_argument(
            fmt::format("{}: {} vocabulary entries is over the limit of {}", where, vocab.size(), kMaxVocabEntries));
    }
    if (merges.size() > kMaxMerges) {
        return invalid_argument(fmt::format("{}: {} merges is over the limit of {}", where, merges.size(), kMaxMerges));
    }
    int64_t max_id = -1;
    for (const auto& [tok, id] : vocab) {
        if (id < 0 || id > kMaxTokenId) {
            return invalid_argument(
                fmt::format("{}: token '{}' has id {}, outside [0, {}]", where, printable(tok), id, kMaxTokenId));
        }
        if (tok.size() > kMaxTokenBytes) {
            return invalid_argument(fmt::format("{}: a token of {} bytes (id {}) is over the limit of {}", where,
                                                tok.size(), id, kMaxTokenBytes));
        }
        max_id = std::max(max_id, id);
    }
    // Ids may leave gaps, but not so many that the id table dwarfs the vocabulary.
    if (static_cast<size_t>(max_id) >= vocab.size() * 2 + 1024) {
        return invalid_argument(
            fmt::format("{}: largest id {} is far beyond the {} vocabulary entries", where, max_id, vocab.size()));
    }
    std::unique_ptr<BpeModel> m(new BpeModel());
    m->options_ = std::move(options);
    m->id_to_token_.resize(static_cast<size_t>(max_id + 1));
    m->has_id_.assign(static_cast<size_t>(max_id + 1), false);
    m->token_to_id_.reserve(vocab.size());
    for (auto& [tok, id] : vocab) {
        const auto uid = static_cast<size_t>(id);
        if (m->has_id_[uid]) {
            return invalid_argument(fmt::format("{}: duplicate id {} (tokens '{}' and '{}')", where, id,
                                                printable(m->id_to_token_[uid]), printable(tok)));
        }
        m->has_id_[uid] = true;
        m->id_to_token_[uid] = tok;
        if (!m->token_to_id_.emplace(std::move(tok), static_cast<int32_t>(id)).second) {
            return invalid_argument(
                fmt::format("{}: token '{}' appears twice", where, printable(m->id_to_token_[uid])));
        }
    }
    const std::string& prefix = m->options_.continuing_subword_prefix;
    m->merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        const auto& [a, b] = merges[rank];
        auto ia = m->find(a), ib = m->find(b);
        if (!ia || !ib) {
            return invalid_argument(fmt::format("{}: merge {} ('{} {}') names a token not in the vocabulary: '{}'",
                                                where, rank, printable(a), printable(b), printable(!ia ? a : b)));
        }
        std::string merged = a;
        merged.append(b.compare(0, prefix.size(), prefix) == 0 ? b.substr(prefix.size()) : b);
        auto im = m->find(merged);
        if (!im) {
            return invalid_argument(fmt::format("{}: merge {} ('{} {}') makes '{}', which is not in the vocabulary",
                                                where, rank, printable(a), printable(b), printable(merged)));
        }
        // The first (lowest-rank) occurrence of a pair wins, as in HF.
        m->merges_.emplace(pair_key(*ia, *ib), (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(*im));
    }
    if (m->options_.unk_token) {
        m->unk_id_ = m->find(*m->options_.unk_token);
        if (!m->unk_id_) {
            return invalid_argument(
                fmt::format("{}: unk_token '{}' is not in the vocabulary", where, printable(*m->options_.unk_token)));
        }
    }
    const auto& table = byte_to_code_point();
    for (int b = 0; b < 256; ++b) {
        std::string ch;
        append_utf8(ch, table[b]);
        auto id = m->find(ch);
        m->byte_ids_[b] = id ? *id : -1;
        auto fb = m->find(fmt::format("<0x{:02X}>", b));
        m->fallback_ids_[b] = fb ? *fb : -1;
    }
    return m;
}

StatusOr<std::unique_ptr<BpeModel>> BpeModel::build_from_ranks(std::vector<std::pair<std::string, int64_t>> ranks,
                                                               const std::string& where) {
    // Raw bytes -> rank, to find every way a token splits into two tokens.
    std::unordered_map<std::string, int64_t> by_bytes;
    by_bytes.reserve(ranks.size());
    for (const auto& [bytes, rank] : ranks) by_bytes.emplace(bytes, rank);
    for (int b = 0; b < 256; ++b) {
        if (!by_bytes.count(std::string(1, static_cast<char>(b)))) {
            return invalid_argument(
                fmt::format("{}: byte 0x{:02X} is not a token; every single byte must be one", where, b));
        }
    }
    std::vector<std::pair<std::string, int64_t>> vocab;
    vocab.reserve(ranks.size());
    const auto& table = byte_to_code_point();
    for (const auto& [bytes, rank] : ranks) {
        std::string mapped;
        for (char c : bytes) append_utf8(mapped, table[static_cast<unsigned char>(c)]);
        vocab.emplace_back(std::move(mapped), rank);
    }
    BpeOptions opt;
    opt.byte_level = true;
    opt.ignore_merges = true;  // a word that is a token is looked up whole, as tiktoken does
    MOE_ASSIGN_OR_RETURN(auto m, build(std::move(vocab), {}, std::move(opt), where));
    // A pair merges into the token it concatenates to, at that token's rank: tiktoken's rule.
    // Each concatenation names one token, so no pair is ranked twice.
    for (const auto& [bytes, rank] : ranks) {
        for (size_t k = 1; k < bytes.size(); ++k) {
            auto a = by_bytes.find(bytes.substr(0, k));
            if (a == by_bytes.end()) continue;
            auto b = by_bytes.find(bytes.substr(k));
            if (b == by_bytes.end()) continue;
            m->merges_.emplace(pair_key(static_cast<int32_t>(a->second), static_cast<int32_t>(b->second)),
                               (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(rank));
        }
    }
    return m;
}

std::optional<int32_t> BpeModel::find(std::string_view token) const {
    auto it = token_to_id_.find(token);
    if (it == token_to_id_.end()) return std::nullopt;
    return it->second;
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
    const auto& o = options_;
    if (o.byte_level && o.continuing_subword_prefix.empty() && o.end_of_word_suffix.empty()) {
        for (char c : word) {
            const int32_t id = byte_ids_[static_cast<unsigned char>(c)];
            if (id >= 0) {
                ids.push_back(id);
            } else if (unk_id_ && !(o.fuse_unk && !ids.empty() && ids.back() == *unk_id_)) {
                ids.push_back(*unk_id_);
            }
        }
        return;
    }
    std::string mapped;
    if (o.byte_level) {
        for (char c : word) append_utf8(mapped, byte_to_code_point()[static_cast<unsigned char>(c)]);
        word = mapped;
    }
    std::string buf;
    size_t i = 0;
    bool last_was_unk = false;
    while (i < word.size()) {
        const size_t b = i;
        i += std::min(utf8_len(static_cast<unsigned char>(word[i])), word.size() - i);
        const std::string_view ch = word.substr(b, i - b);
        std::optional<int32_t> id;
        if ((b == 0 || o.continuing_subword_prefix.empty()) && (i < word.size() || o.end_of_word_suffix.empty())) {
            id = find(ch);
        } else {
            buf.clear();
            if (b != 0) buf += o.continuing_subword_prefix;
            buf += ch;
            if (i == word.size()) buf += o.end_of_word_suffix;
            id = find(buf);
        }
        if (id) {
            ids.push_back(*id);
            last_was_unk = false;
            continue;
        }
        if (o.byte_fallback) {
            bool all = true;
            for (char c : ch) all = all && fallback_ids_[static_cast<unsigned char>(c)] >= 0;
            if (all) {
                for (char c : ch) ids.push_back(fallback_ids_[static_cast<unsigned char>(c)]);
                last_was_unk = false;
                continue;
            }
        }
        if (unk_id_) {
            if (!(o.fuse_unk && last_was_unk)) ids.push_back(*unk_id_);
            last_was_unk = true;
        }
    }
}

void BpeModel::merge_symbols(std::vector<int32_t>& ids) const {
    const size_t n = ids.size();
    if (n < 2 || merges_.empty()) return;
    struct Candidate {
        uint32_t rank;
        uint32_t left;
        uint32_t right;
        int32_t merged;
        bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::vector<int32_t> next(n), prev(n);
    for (size_t k = 0; k < n; ++k) {
        next[k] = k + 1 < n ? static_cast<int32_t>(k + 1) : -1;
        prev[k] = static_cast<int32_t>(k) - 1;
    }
    std::vector<Candidate> storage;
    storage.reserve(n);
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap(std::greater<>{}, std::move(storage));
    auto consider = [&](int32_t left) {
        if (left < 0) return;
        const int32_t right = next[static_cast<size_t>(left)];
        if (right < 0) return;
        auto it = merges_.find(pair_key(ids[static_cast<size_t>(left)], ids[static_cast<size_t>(right)]));
        if (it == merges_.end()) return;
        heap.push({static_cast<uint32_t>(it->second >> 32), static_cast<uint32_t>(left), static_cast<uint32_t>(right),
                   static_cast<int32_t>(it->second & 0xFFFFFFFFu)});
    };
    for (size_t k = 0; k + 1 < n; ++k) consider(static_cast<int32_t>(k));
    std::vector<bool> dead(n, false);
    while (!heap.empty()) {
        const Candidate c = heap.top();
        heap.pop();
        // Stale entries: either side was merged away or changed since this pair was queued.
        if (dead[c.left] || dead[c.right] || next[c.left] != static_cast<int32_t>(c.right)) continue;
        auto it = merges_.find(pair_key(ids[c.left], ids[c.right]));
        if (it == merges_.end() || static_cast<int32_t>(it->second & 0xFFFFFFFFu) != c.merged ||
            static_cast<uint32_t>(it->second >> 32) != c.rank) {
            continue;
        }
        ids[c.left] = c.merged;
        dead[c.right] = true;
        const int32_t after = next[c.right];
        next[c.left] = after;
        if (after >= 0) prev[static_cast<size_t>(after)] = static_cast<int32_t>(c.left);
        consider(prev[c.left]);
        consider(static_cast<int32_t>(c.left));
    }
    size_t w = 0;
    for (size_t k = 0; k < n; ++k) {
        if (!dead[k]) ids[w++] = ids[k];
    }
    ids.resize(w);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    const bool cacheable = word.size() <= kCacheMaxWordBytes;
    if (cacheable) {
        std::lock_guard<std::mutex> lock(cache_mu_);
        auto it = cache_.find(word);
        if (it != cache_.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    std::vector<int32_t> ids;
    bool done = false;
    if (options_.ignore_merges) {
        std::string mapped;
        if (options_.byte_level) {
            for (char c : word) append_utf8(mapped, byte_to_code_point()[static_cast<unsigned char>(c)]);
        }
        if (auto id = find(options_.byte_level ? std::string_view(mapped) : word)) {
            ids.push_back(*id);
            done = true;
        }
    }
    if (!done) {
        ids.reserve(word.size());
        initial_symbols(word, ids);
        merge_symbols(ids);
    }
    out.insert(out.end(), ids.begin(), ids.end());
    if (cacheable) {
        std::lock_guard<std::mutex> lock(cache_mu_);
        if (cache_.size() < kCacheMaxEntries) cache_.emplace(std::string(word), std::move(ids));
    }
}

}  // namespace moe::tok
