// Invariant checks for programmer errors. They print both operands and abort.
// Never use them on user input: user input gets a Status.
#pragma once

#include <sstream>
#include <string>

namespace moe::detail {
[[noreturn]] void check_failed(const char* file, int line, const char* expr, const std::string& detail);

template <typename A, typename B>
std::string check_operands(const A& a, const B& b) {
    std::ostringstream os;
    os << "(" << a << " vs " << b << ")";
    return os.str();
}
}  // namespace moe::detail

#define MOE_CHECK(cond)                                                          \
    do {                                                                         \
        if (!(cond)) ::moe::detail::check_failed(__FILE__, __LINE__, #cond, ""); \
    } while (0)

#define MOE_CHECK_OP_(a, b, op)                                                         \
    do {                                                                                \
        const auto& moe_a_ = (a);                                                       \
        const auto& moe_b_ = (b);                                                       \
        if (!(moe_a_ op moe_b_))                                                        \
            ::moe::detail::check_failed(__FILE__, __LINE__, #a " " #op " " #b,          \
                                        ::moe::detail::check_operands(moe_a_, moe_b_)); \
    } while (0)

#define MOE_CHECK_EQ(a, b) MOE_CHECK_OP_(a, b, ==)
#define MOE_CHECK_NE(a, b) MOE_CHECK_OP_(a, b, !=)
#define MOE_CHECK_LT(a, b) MOE_CHECK_OP_(a, b, <)
#define MOE_CHECK_LE(a, b) MOE_CHECK_OP_(a, b, <=)
#define MOE_CHECK_GT(a, b) MOE_CHECK_OP_(a, b, >)
#define MOE_CHECK_GE(a, b) MOE_CHECK_OP_(a, b, >=)
