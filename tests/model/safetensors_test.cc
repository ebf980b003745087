// SafetensorsFile: a valid file reads back exactly; every hostile header is refused with an
// error naming the file and the field.
#include "model/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "model/test_files.h"

namespace moe {
namespace {

using testing::ScratchDir;
using testing::write_raw;
using testing::write_safetensors;

// Asserts the open fails with `code`, and that the message names the file and each needle.
void expect_open_error(const std::filesystem::path& p, StatusCode code, std::initializer_list<std::string> needles) {
    auto f = SafetensorsFile::open(p);
    ASSERT_FALSE(f.ok()) << "accepted " << p;
    EXPECT_EQ(f.status().code(), code) << f.status().to_string();
    const std::string& m = f.status().message();
    EXPECT_NE(m.find(p.string()), std::string::npos) << m;
    for (const auto& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "missing '" << n << "' in: " << m;
}

TEST(Safetensors, GoodFileReadsBackExactBytes) {
    ScratchDir dir;
    std::string a(24, '\0');
    const float fa[6] = {1.f, -2.f, 3.5f, 0.f, 1e-3f, 7.f};
    std::memcpy(a.data(), fa, 24);
    const std::string b = "\x01\x02\x03\x04\x05\x06\x07\x08";  // 4 x bf16
    write_safetensors(dir / "x.safetensors",
                      {{"a", "F32", {2, 3}, a}, {"b", "BF16", {4}, b}, {"empty", "F16", {0, 5}, ""}});
    auto f = SafetensorsFile::open(dir / "x.safetensors");
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    const auto& t = (*f)->tensors();
    ASSERT_EQ(t.size(), 3u);
    const TensorInfo& ta = t.at("a");
    EXPECT_EQ(ta.dtype, DType::kF32);
    EXPECT_EQ(ta.shape, std::vector<int64_t>({2, 3}));
    ASSERT_EQ(ta.nbytes, 24u);
    EXPECT_EQ(std::memcmp(ta.data, fa, 24), 0);
    const TensorInfo& tb = t.at("b");
    EXPECT_EQ(tb.dtype, DType::kBF16);
    EXPECT_EQ(std::string(static_cast<const char*>(tb.data), tb.nbytes), b);
    EXPECT_EQ(t.at("empty").nbytes, 0u);
    EXPECT_EQ((*f)->metadata().at("format"), "pt");
    EXPECT_EQ(ta.file, (dir / "x.safetensors").string());
}

// Resident set of this process in KiB (VmRSS).
long resident_kib() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

// release() drops a copied tensor's pages from the resident set; its bytes (and a neighbour
// sharing its first and last page) still read back exactly afterwards; a pointer outside the
// mapping is ignored.
TEST(Safetensors, ReleaseDropsPagesAndKeepsBytes) {
    ScratchDir dir;
    std::string big(16 << 20, '\0');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + 7);
    const std::string small = "\x09\x08\x07\x06";
    write_safetensors(dir / "x.safetensors", {{"small", "BF16", {2}, small}, {"big", "BF16", {8 << 20}, big}});
    auto f = SafetensorsFile::open(dir / "x.safetensors");
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    (*f)->populate();
    const TensorInfo& tb = (*f)->tensors().at("big");
    const TensorInfo& ts = (*f)->tensors().at("small");
    const long before = resident_kib();
    (*f)->release(tb.data, tb.nbytes);
    const long after = resident_kib();
    ASSERT_GT(before, 0);
    EXPECT_GT(before - after, 15 * 1024) << "resident KiB before " << before << ", after " << after;
    EXPECT_EQ(std::memcmp(tb.data, big.data(), big.size()), 0);
    EXPECT_EQ(std::string(static_cast<const char*>(ts.data), ts.nbytes), small);
    int outside = 0;
    (*f)->release(&outside, sizeof(outside));
    (*f)->release(static_cast<const char*>(tb.data) + 4096, tb.nbytes);  // runs past the end
    EXPECT_EQ(outside, 0);
    EXPECT_EQ(std::memcmp(tb.data, big.data(), big.size()), 0);
}

TEST(Safetensors, MissingFile) {
    ScratchDir dir;
    expect_open_error(dir / "nope.safetensors", StatusCode::kNotFound, {"no such file"});
}

TEST(Safetensors, TruncatedBelowEightBytes) {
    ScratchDir dir;
    const auto p = dir / "t.safetensors";
    std::ofstream(p, std::ios::binary) << std::string("\x10\x00\x00", 3);
    expect_open_error(p, StatusCode::kDataLoss, {"truncated", "3 bytes", "header length"});
}

TEST(Safetensors, HeaderLengthAbsurd) {
    ScratchDir dir;
    const auto p = dir / "h.safetensors";
    write_raw(p, uint64_t{1} << 63, "{}", "");
    expect_open_error(p, StatusCode::kDataLoss, {"header length 9223372036854775808", "exceeds the file size"});
}

TEST(Safetensors, HeaderLengthPastFileSize) {
    ScratchDir dir;
    const auto p = dir / "h.safetensors";
    write_raw(p, 100, "{}", "");  // 10-byte file claims a 100-byte header
    expect_open_error(p, StatusCode::kDataLoss, {"header length 100", "exceeds the file size 10"});
}

TEST(Safetensors, HeaderLengthAboveLimit) {
    ScratchDir dir;
    const auto p = dir / "big.safetensors";
    write_raw(p, kMaxSafetensorsHeaderBytes + 1, "{}", "");
    // Sparse file: big enough that the length fits, without writing 100 MB.
    ASSERT_EQ(::truncate(p.c_str(), static_cast<off_t>(kMaxSafetensorsHeaderBytes + 64)), 0);
    expect_open_error(p, StatusCode::kInvalidArgument, {"header length 104857601", "exceeds the limit"});
}

TEST(Safetensors, HeaderNotJson) {
    ScratchDir dir;
    const auto p = dir / "j.safetensors";
    write_raw(p, "{\"a\": {\"dtype\": \"F32\",", "");
    expect_open_error(p, StatusCode::kInvalidArgument, {"header is not valid JSON"});
}

TEST(Safetensors, HeaderJsonNotObject) {
    ScratchDir dir;
    const auto p = dir / "j.safetensors";
    write_raw(p, "[1, 2, 3]", "");
    expect_open_error(p, StatusCode::kInvalidArgument, {"header must be a JSON object", "array"});
}

TEST(Safetensors, OffsetsPastEnd) {
    ScratchDir dir;
    const auto p = dir / "o.safetensors";
    write_raw(p, R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})", std::string(16, '\0'));
    expect_open_error(p, StatusCode::kDataLoss, {"tensor w", "data_offsets [8,24]", "past the end"});
}

TEST(Safetensors, HugeOffsetsDoNotWrap) {
    ScratchDir dir;
    const auto p = dir / "o.safetensors";
    write_raw(p, R"({"w": {"dtype": "U8", "shape": [16], "data_offsets": [18446744073709551608, 8]}})",
              std::string(16, '\0'));
    expect_open_error(p, StatusCode::kInvalidArgument, {"tensor w", "data_offsets", "end before begin"});
}

TEST(Safetensors, OverlappingTensors) {
    ScratchDir dir;
    const auto p = dir / "ov.safetensors";
    write_raw(p,
              R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                  "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})",
              std::string(24, '\0'));
    expect_open_error(p, StatusCode::kInvalidArgument, {"tensor b", "overlap tensor a", "data_offsets"});
}

TEST(Safetensors, SizeShapeMismatch) {
    ScratchDir dir;
    const auto p = dir / "s.safetensors";
    write_raw(p, R"({"w": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, 16]}})", std::string(16, '\0'));
    expect_open_error(p, StatusCode::kInvalidArgument, {"tensor w", "shape [3, 4]", "needs 24", "16 bytes"});
}

TEST(Safetensors, ShapeOverflow) {
    ScratchDir dir;
    const auto p = dir / "s.safetensors";
    write_raw(p, R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", "");
    expect_open_error(p, StatusCode::kInvalidArgument, {"tensor w", "shape", "overflow"});
}

TEST(Safetensors, UnknownDtype) {
    ScratchDir dir;
    const auto p = dir / "d.safetensors";
    // F8_E4M3 is known since #20 (FP8 checkpoints); e5m2 is not.
    write_raw(p, R"({"w": {"dtype": "F8_E5M2", "shape": [4], "data_offsets": [0, 4]}})", std::string(4, '\0'));
    expect_open_error(p, StatusCode::kInvalidArgument, {"tensor w", "dtype \"F8_E5M2\""});
}

TEST(Safetensors, NegativeShape) {
    ScratchDir dir;
    const auto p = dir / "n.safetensors";
    write_raw(p, R"({"w": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}})", std::string(16, '\0'));
    expect_open_error(p, StatusCode::kInvalidArgument, {"tensor w", "shape [-1,4]", "non-negative"});
}

TEST(Safetensors, MalformedEntries) {
    ScratchDir dir;
    const auto p = dir / "m.safetensors";
    write_raw(p, R"({"w": {"dtype": "F32", "shape": [1]}})", std::string(4, '\0'));
    expect_open_error(p, StatusCode::kInvalidArgument, {"tensor w", "data_offsets"});
    write_raw(p, R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", std::string(4, '\0'));
    expect_open_error(p, StatusCode::kInvalidArgument, {"tensor w", "dtype"});
    write_raw(p, R"({"w": 5})", "");
    expect_open_error(p, StatusCode::kInvalidArgument, {"tensor w", "JSON object"});
    write_raw(p, R"({"__metadata__": [1]})", "");
    expect_open_error(p, StatusCode::kInvalidArgument, {"__metadata__"});
}

// Every single-byte corruption of a valid file either opens with all tensors inside the file
// or fails with a Status; never a crash (run it under ASan to see overruns).
TEST(Safetensors, SingleByteCorruptionsNeverEscapeTheFile) {
    ScratchDir dir;
    const auto good = dir / "good.safetensors";
    write_safetensors(good, {{"a", "F32", {2, 3}, ""}, {"b", "BF16", {4}, ""}, {"c", "U8", {5}, ""}});
    std::ifstream in(good, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto p = dir / "mut.safetensors";
    int opened = 0, refused = 0;
    for (size_t pos = 0; pos < bytes.size(); ++pos) {
        for (unsigned char v : {0x00, 0x22, 0x2c, 0x39, 0xff}) {
            std::string m = bytes;
            if (static_cast<unsigned char>(m[pos]) == v) continue;
            m[pos] = static_cast<char>(v);
            std::ofstream(p, std::ios::binary | std::ios::trunc) << m;
            auto f = SafetensorsFile::open(p);
            if (!f.ok()) {
                ++refused;
                EXPECT_FALSE(f.status().message().empty());
                continue;
            }
            ++opened;
            for (const auto& [name, t] : (*f)->tensors()) {
                size_t n = dtype_size(t.dtype);
                for (int64_t d : t.shape) n *= static_cast<size_t>(d);
                EXPECT_EQ(n, t.nbytes) << name;
                // Touch every byte: ASan or a segfault would catch an escape from the mapping.
                unsigned sum = 0;
                for (size_t i = 0; i < t.nbytes; ++i) sum += static_cast<const unsigned char*>(t.data)[i];
                EXPECT_GE(sum, 0u);
            }
        }
    }
    EXPECT_GT(refused, 0);
    EXPECT_GT(opened, 0);  // e.g. changes inside the metadata strings or padding stay valid
}

}  // namespace
}  // namespace moe
