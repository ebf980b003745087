#include "engine/stop_checker.h"

#include <gtest/gtest.h>

#include <random>

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

TEST(StopChecker, TheMatchThatEndsFirstWinsWhateverTheChunking) {
    // "bc" ends before "abcd" does: byte by byte, "bc" is seen first.
    for (const auto& deltas : std::vector<std::vector<std::string>>{{"abcd"}, {"a", "b", "c", "d"}, {"ab", "cd"}}) {
        StopChecker sc(criteria({"abcd", "bc"}));
        auto [out, last] = feed(sc, deltas);
        EXPECT_EQ(last.finish, FinishReason::kStop);
        EXPECT_EQ(last.matched, "bc");
        EXPECT_EQ(out, "a");
    }
    // Same end: the longer one (it withholds more, as it started earlier).
    StopChecker sc(criteria({"c", "abc"}));
    auto [out, last] = feed(sc, {"xab", "c"});
    EXPECT_EQ(last.matched, "abc");
    EXPECT_EQ(out, "x");
}

TEST(StopChecker, PrefixStopStringsHoldBackOnlyWhatCanStillMatch) {
    StopChecker sc(criteria({"ab", "abc"}));
    StopUpdate u = sc.on_token(1, "xa");
    EXPECT_EQ(u.text, "x");   // "a" may start either
    u = sc.on_token(2, "c");  // "ac": neither
    EXPECT_EQ(u.text, "ac");
    EXPECT_EQ(u.finish, FinishReason::kNone);
}

TEST(StopChecker, HeldTextIsReleasedPieceByPiece) {
    StopChecker sc(criteria({"<|end|>"}));
    EXPECT_EQ(sc.on_token(1, "x<|e").text, "x");
    EXPECT_EQ(sc.on_token(2, "n").text, "");
    EXPECT_EQ(sc.on_token(3, "x<|").text, "<|enx");  // "<|" may still start it
    EXPECT_EQ(sc.flush(), "<|");
    EXPECT_EQ(sc.flush(), "");
}

bool valid_utf8(const std::string& s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
        if (len == 0 || i + len > s.size()) return false;
        for (size_t k = 1; k < len; ++k)
            if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
        i += len;
    }
    return true;
}

TEST(StopChecker, MultibyteStopStringsHoldWholeCharacters) {
    // "日本語" starts like the text's "日本人": held, then released whole.
    StopChecker sc(criteria({"日本語", "😀!"}));
    std::string out;
    for (const char* d : {"今", "日", "本", "人", "😀", "?", "😀"}) {
        const StopUpdate u = sc.on_token(1, d);
        EXPECT_TRUE(valid_utf8(u.text)) << u.text;
        EXPECT_EQ(u.finish, FinishReason::kNone);
        out += u.text;
    }
    EXPECT_EQ(out, "今日本人😀?");
    const StopUpdate u = sc.on_token(2, "!x");
    EXPECT_EQ(u.finish, FinishReason::kStop);
    EXPECT_EQ(u.matched, "😀!");
    EXPECT_EQ(u.text, "");
    // "本" (E6 9C AC) shares two bytes with "未" (E6 9C AA): nothing of "未" may be held.
    StopChecker sc2(criteria({"本"}));
    EXPECT_EQ(sc2.on_token(1, "未").text, "未");
}

TEST(StopChecker, MinTokensSuppressesStopStringsButAStopCompletedAtTheLimitMatches) {
    StopCriteria c = criteria({"ab"});
    c.min_tokens = 2;
    StopChecker early(c);
    StopUpdate u = early.on_token(1, "ab");  // a whole stop string before min_tokens: emitted
    EXPECT_EQ(u.finish, FinishReason::kNone);
    EXPECT_EQ(u.text, "ab");
    u = early.on_token(2, "xab");  // now allowed
    EXPECT_EQ(u.finish, FinishReason::kStop);
    EXPECT_EQ(u.text, "x");

    StopChecker straddle(c);
    EXPECT_EQ(straddle.on_token(1, "xa").text, "x");  // "a" held even though stops are off
    u = straddle.on_token(2, "b");
    EXPECT_EQ(u.finish, FinishReason::kStop);
    EXPECT_EQ(u.matched, "ab");
}

TEST(StopChecker, EosReleasesHeldTextAndFlushIsEmptyAfterwards) {
    StopChecker sc(criteria({"END"}));
    EXPECT_EQ(sc.on_token(1, "a E").text, "a ");
    const StopUpdate u = sc.on_token(99, "</s>");
    EXPECT_EQ(u.finish, FinishReason::kStop);
    EXPECT_EQ(u.text, "E");
    EXPECT_EQ(sc.flush(), "");
}

TEST(StopChecker, AStopOnTheLastAllowedTokenIsAStopNotALength) {
    StopChecker by_string(criteria({"END"}, 2));
    by_string.on_token(1, "x");
    StopUpdate u = by_string.on_token(2, "END");
    EXPECT_EQ(u.finish, FinishReason::kStop);
    EXPECT_EQ(u.text, "");
    StopChecker by_eos(criteria({}, 1));
    u = by_eos.on_token(99, "</s>");
    EXPECT_EQ(u.finish, FinishReason::kStop);
    EXPECT_EQ(u.matched_token, 99);
}

TEST(StopChecker, CallsAfterTheFinishEmitNothing) {
    StopChecker sc(criteria({}, 1));
    EXPECT_EQ(sc.on_token(1, "a").finish, FinishReason::kLength);
    const StopUpdate u = sc.on_token(2, "b");
    EXPECT_EQ(u.finish, FinishReason::kLength);
    EXPECT_EQ(u.text, "");
    EXPECT_EQ(sc.num_generated(), 1);
}

// Property test against a byte-by-byte reference: for random texts over a small alphabet, random
// stop strings and random cuts into deltas, the emitted text is the text before the first-ending
// match (nothing after it), and with no match emitted + flush() is the whole text.
TEST(StopChecker, RandomChunkingsAgreeWithAByteByByteReference) {
    std::mt19937 gen(2026);
    auto rnd = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen); };
    const std::string alphabet = "abc";
    int matched = 0, unmatched = 0;
    for (int iter = 0; iter < 3000; ++iter) {
        std::vector<std::string> stops(static_cast<size_t>(rnd(1, 3)));
        for (auto& st : stops)
            for (int i = rnd(1, 4); i > 0; --i) st += alphabet[static_cast<size_t>(rnd(0, 2))];
        std::string text;
        for (int i = rnd(0, 30); i > 0; --i) text += alphabet[static_cast<size_t>(rnd(0, 2))];

        // Reference: the first end position at which some stop string ends; the longest of those.
        std::string expected_out = text, expected_match;
        for (size_t end = 1; end <= text.size() && expected_match.empty(); ++end) {
            for (const auto& st : stops)
                if (st.size() <= end && text.compare(end - st.size(), st.size(), st) == 0 &&
                    st.size() > expected_match.size())
                    expected_match = st;
            if (!expected_match.empty()) expected_out = text.substr(0, end - expected_match.size());
        }

        std::vector<std::string> deltas;
        for (size_t pos = 0; pos < text.size();) {
            const size_t len = std::min(text.size() - pos, static_cast<size_t>(rnd(0, 5)));
            deltas.push_back(text.substr(pos, len));
            pos += len;
        }
        StopChecker sc(criteria(stops, 1000));
        auto [out, last] = feed(sc, deltas);
        const std::string tail = sc.flush();
        SCOPED_TRACE("text '" + text + "' stops " + ::testing::PrintToString(stops) + " deltas " +
                     ::testing::PrintToString(deltas));
        if (expected_match.empty()) {
            ++unmatched;
            EXPECT_EQ(last.finish, FinishReason::kNone);
            EXPECT_EQ(out + tail, text);
        } else {
            ++matched;
            EXPECT_EQ(last.finish, FinishReason::kStop);
            EXPECT_EQ(last.matched, expected_match);
            EXPECT_EQ(out, expected_out);
            EXPECT_EQ(tail, "");
        }
    }
    EXPECT_GT(matched, 300);  // both branches were exercised
    EXPECT_GT(unmatched, 300);
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
