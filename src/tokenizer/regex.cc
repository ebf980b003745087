#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>

namespace moe::tok {
namespace {

constexpr size_t kJitStackMax = 8u << 20;
// Bounds backtracking so a pathological pattern/input pair fails instead of hanging.
constexpr uint32_t kMatchLimit = 50'000'000;

std::string pcre2_message(int code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(code, buf, sizeof(buf));
    return reinterpret_cast<const char*>(buf);
}

// Match context and JIT stack are per thread: PCRE2 forbids sharing a JIT stack between
// concurrent matches, while the compiled code itself is shareable.
struct ThreadMatchState {
    pcre2_match_context* context = nullptr;
    pcre2_jit_stack* stack = nullptr;
    ThreadMatchState() {
        context = pcre2_match_context_create(nullptr);
        stack = pcre2_jit_stack_create(64 * 1024, kJitStackMax, nullptr);
        if (context != nullptr) {
            pcre2_set_match_limit(context, kMatchLimit);
            if (stack != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
        }
    }
    ~ThreadMatchState() {
        if (stack != nullptr) pcre2_jit_stack_free(stack);
        if (context != nullptr) pcre2_match_context_free(context);
    }
};

ThreadMatchState& thread_state() {
    thread_local ThreadMatchState state;
    return state;
}

}  // namespace

StatusOr<std::unique_ptr<Regex>> Regex::compile(const std::string& pattern, const std::string& origin) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (code == nullptr) {
        return invalid_argument(fmt::format("{}: regex '{}' does not compile at offset {}: {}", origin, pattern, offset,
                                            pcre2_message(error)));
    }
    std::unique_ptr<Regex> re(new Regex());
    re->pattern_ = pattern;
    re->code_ = code;
    re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

Regex::~Regex() {
    if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

Status Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const {
    auto* code = static_cast<pcre2_code*>(code_);
    ThreadMatchState& ts = thread_state();
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
    if (md == nullptr || ts.context == nullptr) return resource_exhausted("regex: out of memory for match data");
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t start = 0;
    while (start < text.size()) {
        // Callers validate UTF-8 once for the whole prompt, so PCRE2 need not re-check it on
        // every call (that re-check would make the scan quadratic).
        const int rc =
            jit_ ? pcre2_jit_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md.get(), ts.context)
                 : pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md.get(), ts.context);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            return resource_exhausted(fmt::format("regex '{}' failed on a {}-byte piece of text: {}", pattern_,
                                                  text.size(), pcre2_message(rc)));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        const size_t b = ov[0], e = ov[1];
        if (e > b) {
            matches.emplace_back(b, e);
            start = e;
        } else {
            // Empty match: step over one whole character.
            start = b + 1;
            while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
        }
    }
    return ok_status();
}

}  // namespace moe::tok
