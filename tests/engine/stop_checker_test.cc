#include "engine/stop_checker.h"

#include <gtest/gtest.h>

namespace moe {
namespace {

StopCriteria criteria(std::vector<std::string> stops, int64_t max_tokens = 100) {
    StopCriteria c;
    c.max_tokens = max_tokens;
    c.stop_strings = std::move(stops);
    c.eos_token_ids = {99};
    return c;
}

// Feeds deltas (token ids 1, 2, ...) and returns everything emitted plus the last update.
std::pair<std::string, StopUpdate> feed(StopChecker& sc, const std::vector<std::string>& deltas) {
    std::string out;
    StopUpdate last;
    int32_t id = 1;
    for (const auto& d : deltas) {
        last = sc.on_token(id++, d);
        out += last.text;
        if (last.finish != FinishReason::kNone) break;
    }
    return {out, last};
}

TEST(StopChecker, StopStringSplitOverThreeDeltasIsWithheld) {
    StopChecker sc(criteria({"END"}));
    // text: "abc E|N|D tail" -> "abc " emitted, "END" and after withheld
    StopUpdate u = sc.on_token(1, "abc E");
    EXPECT_EQ(u.text, "abc ");  // "E" held: it may start "END"
    u = sc.on_token(2, "N");
    EXPECT_EQ(u.text, "");
    u = sc.on_token(3, "D tail");
    EXPECT_EQ(u.text, "");
    EXPECT_EQ(u.finish, FinishReason::kStop);
    EXPECT_EQ(u.matched, "END");
    EXPECT_EQ(sc.flush(), "");
}

TEST(StopChecker, HeldTextIsReleasedWhenTheMatchFails) {
    StopChecker sc(criteria({"END"}));
    auto [out, last] = feed(sc, {"x E", "N", "d more"});
    EXPECT_EQ(last.finish, FinishReason::kNone);
    EXPECT_EQ(out + sc.flush(), "x ENd more");
}

TEST(StopChecker, EarliestMatchWinsAndPrefixStopsWork) {
    StopChecker sc(criteria({"abc", "ab"}));
    auto [out, last] = feed(sc, {"xxa", "bc"});
    EXPECT_EQ(last.finish, FinishReason::kStop);
    EXPECT_EQ(last.matched, "ab");  // same position: the shorter one completes first
    EXPECT_EQ(out, "xx");
}

TEST(StopChecker, StopAtTheVeryStartEmitsNothing) {
    StopChecker sc(criteria({"\n\n"}));
    auto [out, last] = feed(sc, {"\n", "\nrest"});
    EXPECT_EQ(last.finish, FinishReason::kStop);
    EXPECT_EQ(out, "");
}

TEST(StopChecker, MultibyteStopString) {
    StopChecker sc(criteria({"日本"}));
    auto [out, last] = feed(sc, {"こんにちは日", "本語"});
    EXPECT_EQ(last.finish, FinishReason::kStop);
    EXPECT_EQ(out, "こんにちは");
}

TEST(StopChecker, EosStopsUnlessIgnoredAndItsTextIsNotEmitted) {
    StopCriteria c = criteria({});
    StopChecker sc(c);
    EXPECT_EQ(sc.on_token(5, "hi").text, "hi");
    StopUpdate u = sc.on_token(99, "</s>");
    EXPECT_EQ(u.finish, FinishReason::kStop);
    EXPECT_EQ(u.matched_token, 99);
    EXPECT_EQ(u.text, "");

    c.ignore_eos = true;
    StopChecker ignoring(c);
    u = ignoring.on_token(99, "</s>");
    EXPECT_EQ(u.finish, FinishReason::kNone);
    EXPECT_EQ(u.text, "</s>");
}

TEST(StopChecker, StopTokenIdsAndMinTokens) {
    StopCriteria c = criteria({"x"});
    c.stop_token_ids = {7};
    c.min_tokens = 3;
    StopChecker sc(c);
    EXPECT_EQ(sc.on_token(7, "a").finish, FinishReason::kNone);   // 1 token: too early
    EXPECT_EQ(sc.on_token(99, "b").finish, FinishReason::kNone);  // 2 tokens: EOS ignored too
    StopUpdate u = sc.on_token(7, "c");                           // 3 tokens: stops allowed
    EXPECT_EQ(u.finish, FinishReason::kStop);
    EXPECT_EQ(u.matched_token, 7);
}

TEST(StopChecker, MaxTokensEmitsTheLastTokensTextAndHeldText) {
    StopChecker sc(criteria({"END"}, 2));
    EXPECT_EQ(sc.on_token(1, "a E").text, "a ");
    StopUpdate u = sc.on_token(2, "N");
    EXPECT_EQ(u.finish, FinishReason::kLength);
    EXPECT_EQ(u.text, "EN");
}

TEST(StopChecker, ValidateNamesTheFieldAndTheLimit) {
    StopCriteria c = criteria({});
    EXPECT_TRUE(validate(c, 4096).ok());
    c.max_tokens = 0;
    EXPECT_NE(validate(c, 4096).message().find("max_tokens"), std::string::npos);
    c.max_tokens = 5000;
    EXPECT_NE(validate(c, 4096).message().find("4096"), std::string::npos);
    c = criteria(std::vector<std::string>(17, "a"));
    EXPECT_NE(validate(c, 4096).message().find("at most 16"), std::string::npos);
    c = criteria({std::string(257, 'a')});
    EXPECT_NE(validate(c, 4096).message().find("256"), std::string::npos);
    c = criteria({""});
    EXPECT_EQ(validate(c, 4096).code(), StatusCode::kInvalidArgument);
    c = criteria({});
    c.min_tokens = 200;
    EXPECT_NE(validate(c, 4096).message().find("min_tokens"), std::string::npos);
}

}  // namespace
}  // namespace moe
