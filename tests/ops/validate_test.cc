// validate() rejects bad arguments with a message naming the argument and the limit; ops::run
// reports unsupported ops and foreign devices; data-dependent errors are kOutOfRange on the
// reference and on every backend alike.
#include <gtest/gtest.h>

#include <numeric>

#include "moe/cpu_backend.h"
#include "ops/op_test_util.h"

namespace moe::testing {
namespace {

void expect_invalid(const Status& s, const std::string& needle) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find(needle), std::string::npos)
        << "message \"" << s.message() << "\" lacks \"" << needle << "\"";
}

struct Bufs {
    std::vector<float> f = std::vector<float>(4096, 1.0f);
    std::vector<float> g = std::vector<float>(4096, 1.0f);
    std::vector<float> h = std::vector<float>(4096, 1.0f);
    std::vector<int32_t> i = std::vector<int32_t>(256, 0);
    std::vector<int32_t> j = std::vector<int32_t>(256, 0);
    std::vector<int32_t> k = std::vector<int32_t>(256, 0);
    std::vector<int64_t> l = std::vector<int64_t>(64, 0);
};

TEST(OpsValidate, RmsNormNamesWeightAndRowLength) {
    Bufs b;
    RmsNormArgs a{host_view(b.f.data(), DType::kF32, {4, 64}), host_view(b.g.data(), DType::kF32, {63}),
                  host_view(b.h.data(), DType::kF32, {4, 64})};
    const Status s = ops::validate(a);
    expect_invalid(s, "rms_norm: weight has 63 elements, x rows have 64");
    a.weight.shape[0] = 64;
    EXPECT_TRUE(ops::validate(a).ok());
    a.x = rows_view(a.x, 4, 64, 60);
    expect_invalid(ops::validate(a), "x row stride 60 is smaller than its row length 64");
    a.x.strides[0] = 70;  // a wider row stride is fine
    EXPECT_TRUE(ops::validate(a).ok());
    a.eps = -1.0f;
    expect_invalid(ops::validate(a), "eps");
}

TEST(OpsValidate, GemmShapesDtypesAndNulls) {
    Bufs b;
    GemmArgs a{host_view(b.f.data(), DType::kF32, {3, 8}),
               host_view(b.g.data(), DType::kF32, {5, 8}),
               {},
               host_view(b.h.data(), DType::kF32, {3, 5})};
    EXPECT_TRUE(ops::validate(a).ok());
    GemmArgs bad = a;
    bad.x.shape[1] = 7;
    expect_invalid(ops::validate(bad), "x dim 1 is 7, expected 8 (K, the columns of w)");
    bad = a;
    bad.w.tensor.dtype = DType::kI32;
    expect_invalid(ops::validate(bad), "w must be f32|bf16, got i32");
    bad = a;
    bad.y.data = nullptr;
    expect_invalid(ops::validate(bad), "y has no data");
    bad = a;
    bad.bias = host_view(b.i.data(), DType::kF32, {4});
    expect_invalid(ops::validate(bad), "bias dim 0 is 4, expected 5");
    bad = a;
    bad.w.tensor.strides[0] = 9;
    expect_invalid(ops::validate(bad), "w [5, 8] must be contiguous");
    bad = a;
    bad.x.ndim = 3;
    expect_invalid(ops::validate(bad), "x must have 2 dims");
    bad = a;
    bad.x.shape[0] = -1;
    expect_invalid(ops::validate(bad), "x dim 0 is -1");
}

TEST(OpsValidate, RopeAttentionRouteExpertsKvWrite) {
    Bufs b;
    RopeArgs rope{host_view(b.f.data(), DType::kF32, {2, 4, 16}), host_view(b.g.data(), DType::kF32, {2, 2, 16}),
                  host_view(b.i.data(), DType::kI32, {2}), 10000.0f, 15};
    expect_invalid(ops::validate(rope), "rotary_dim must be even and in [2, head_dim 16], got 15");
    rope.rotary_dim = 16;
    EXPECT_TRUE(ops::validate(rope).ok());

    AttentionArgs at;
    at.q = host_view(b.f.data(), DType::kF32, {3, 6, 16});
    at.k_cache = host_view(b.g.data(), DType::kF32, {4, 4, 4, 16});
    at.v_cache = host_view(b.h.data(), DType::kF32, {4, 4, 4, 16});
    at.block_tables = host_view(b.i.data(), DType::kI32, {2, 2});
    at.query_start = host_view(b.j.data(), DType::kI32, {3});
    at.kv_lens = host_view(b.k.data(), DType::kI32, {2});
    at.out = host_view(b.f.data() + 1024, DType::kF32, {3, 6, 16});
    expect_invalid(ops::validate(at), "q heads 6 are not a multiple of the 4 KV heads");
    at.q = host_view(b.f.data(), DType::kF32, {3, 8, 16});
    at.out = host_view(b.f.data() + 1024, DType::kF32, {3, 8, 16});
    EXPECT_TRUE(ops::validate(at).ok());
    AttentionArgs bad = at;
    bad.v_cache.dtype = DType::kBF16;
    expect_invalid(ops::validate(bad), "v_cache is bf16 but k_cache is f32");
    bad = at;
    bad.query_start = host_view(b.j.data(), DType::kI32, {2});
    expect_invalid(ops::validate(bad), "query_start dim 0 is 2, expected 3");
    bad = at;
    bad.sliding_window = -2;
    expect_invalid(ops::validate(bad), "sliding_window");

    MoeRouteArgs route{host_view(b.f.data(), DType::kF32, {2, 4}), host_view(b.i.data(), DType::kI32, {2, 5}),
                       host_view(b.g.data(), DType::kF32, {2, 5}), 5, false};
    expect_invalid(ops::validate(route), "top_k must be in [1, 4 experts], got 5");

    std::vector<WeightView> w3 = {host_view(b.f.data(), DType::kF32, {8, 4}),
                                  host_view(b.f.data(), DType::kF32, {8, 4}),
                                  host_view(b.f.data(), DType::kF32, {8, 4})};
    std::vector<WeightView> d3 = {host_view(b.f.data(), DType::kF32, {4, 8}),
                                  host_view(b.f.data(), DType::kF32, {4, 8}),
                                  host_view(b.f.data(), DType::kF32, {4, 8})};
    MoeExpertsArgs ex{host_view(b.g.data(), DType::kF32, {5, 4}), host_view(b.i.data(), DType::kI32, {4}), w3, w3, d3,
                      host_view(b.h.data(), DType::kF32, {5, 4})};
    EXPECT_TRUE(ops::validate(ex).ok());
    std::vector<WeightView> w2(w3.begin(), w3.begin() + 2);
    ex.w_up = w2;
    expect_invalid(ops::validate(ex), "w_up has 2 views, expected 3");
    ex.w_up = w3;
    std::vector<WeightView> d_bad = d3;
    d_bad[2] = host_view(b.f.data(), DType::kF32, {4, 9});
    ex.w_down = d_bad;
    expect_invalid(ops::validate(ex), "w_down[2] dim 1 is 9, expected 8");

    KvWriteArgs kv{host_view(b.f.data(), DType::kF32, {2, 4, 16}), host_view(b.g.data(), DType::kF32, {2, 4, 16}),
                   host_view(b.l.data(), DType::kI32, {2}), host_view(b.h.data(), DType::kF32, {4, 4, 4, 16}),
                   host_view(b.h.data(), DType::kF32, {4, 4, 4, 16})};
    expect_invalid(ops::validate(kv), "slot_mapping must be i64, got i32");
}

// A backend with an empty op table: every op must come back kUnimplemented, naming op and backend.
class EmptyBackend final : public Backend {
public:
    const char* name() const override { return "empty"; }
    Device device() const override { return Device{}; }
    StatusOr<void*> allocate(size_t) override { return unimplemented("no memory"); }
    void deallocate(void*) override {}
    Status copy(void*, Device, const void*, Device, size_t) override { return unimplemented("no copy"); }
    Status synchronize() override { return ok_status(); }
};

TEST(OpsDispatch, MissingEntryIsUnimplementedAndForeignDeviceIsRejected) {
    Bufs b;
    AddArgs a{host_view(b.f.data(), DType::kF32, {2, 3}), host_view(b.g.data(), DType::kF32, {2, 3}),
              host_view(b.h.data(), DType::kF32, {2, 3})};
    EmptyBackend empty;
    const Status s = ops::run(empty, a);
    EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
    EXPECT_EQ(s.message(), "op add is not supported by backend empty");
    // Validation comes first: a bad call is the caller's fault even where the op is missing.
    AddArgs bad = a;
    bad.b = host_view(b.g.data(), DType::kF32, {2, 4});
    expect_invalid(ops::run(empty, bad), "b dim 1 is 4, expected 3");

    auto cpu = make_cpu_backend({.num_threads = 1});
    AddArgs foreign = a;
    foreign.out.device = Device{DeviceKind::kCuda, 0};
    expect_invalid(ops::run(*cpu, foreign), "add: out is on cuda:0 but backend cpu runs on cpu");
    MOE_ASSERT_OK(ops::run(*cpu, a));
    EXPECT_EQ(b.h[0], 2.0f);
}

// A prepared weight must match the tensor the op names (dtype, shape) and be read only by the
// backend that made it; the reference refuses a weight kept only in a backend's own form.
TEST(OpsDispatch, PreparedWeightsAreCheckedAgainstTheirHandleAndBackend) {
    Bufs b;
    auto cpu = make_cpu_backend({.num_threads = 1});
    auto other = make_cpu_backend({.num_threads = 1});
    std::vector<uint16_t> wb(5 * 8, f32_to_bf16(1.0f));
    auto h = cpu->prepare_weight("w", host_view(wb.data(), DType::kBF16, {5, 8}), WeightUse::kMatmul);
    MOE_ASSERT_OK(h.status());
    GemmArgs a{
        host_view(b.f.data(), DType::kF32, {3, 8}), WeightView(**h), {}, host_view(b.h.data(), DType::kF32, {3, 5})};
    MOE_ASSERT_OK(ops::run(*cpu, a));
    EXPECT_EQ(b.h[0], 8.0f);  // eight products of ones
    GemmArgs wrong = a;
    wrong.w.tensor.shape[0] = 4;
    wrong.y = host_view(b.h.data(), DType::kF32, {3, 4});
    expect_invalid(ops::validate(wrong), "does not match its prepared weight [5, 8] bf16");
    expect_invalid(ops::run(*other, a), "gemm: w was prepared by backend cpu, not by this cpu backend");
    if ((*h)->logical().data == nullptr) expect_invalid(ref::gemm(a), "reference gemm: w has no plain values");
}

MOE_BACKEND_TEST_SUITE(OpsTable);

// Every backend of the driver implements all 13 ops (nothing falls back to kUnimplemented).
TEST_P(OpsTable, EveryOpIsImplemented) {
    const OpTable& t = be().ops();
    EXPECT_NE(t.embedding, nullptr);
    EXPECT_NE(t.rms_norm, nullptr);
    EXPECT_NE(t.rope, nullptr);
    EXPECT_NE(t.gemm, nullptr);
    EXPECT_NE(t.silu_mul, nullptr);
    EXPECT_NE(t.add, nullptr);
    EXPECT_NE(t.kv_write, nullptr);
    EXPECT_NE(t.attention, nullptr);
    EXPECT_NE(t.moe_route, nullptr);
    EXPECT_NE(t.moe_shared_gate, nullptr);
    EXPECT_NE(t.moe_permute, nullptr);
    EXPECT_NE(t.moe_experts, nullptr);
    EXPECT_NE(t.moe_unpermute, nullptr);
}

MOE_BACKEND_TEST_SUITE(OpsDataChecks);

// The same bad data through the reference and through each backend: kOutOfRange naming the index.
TEST_P(OpsDataChecks, OutOfRangeIndicesAreReportedNotFollowed) {
    SCOPED_TRACE(backend_name());
    auto expect_oor = [](const Status& s, const std::string& needle) {
        EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.to_string();
        EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
    };
    DeviceArena arena(be());
    Bufs b;

    std::vector<int32_t> ids = {0, 3, 37, 1};
    EmbeddingArgs emb{host_view(ids.data(), DType::kI32, {4}), host_view(b.f.data(), DType::kF32, {37, 8}),
                      host_view(b.g.data(), DType::kF32, {4, 8})};
    expect_oor(ref::embedding(emb), "embedding: ids[2] = 37 is outside [0, 37)");
    EmbeddingArgs emb_dev{arena.put(ids, DType::kI32, {4}), arena.alloc(DType::kF32, {37, 8}),
                          arena.alloc(DType::kF32, {4, 8})};
    expect_oor(ops::run(be(), emb_dev), "ids[2] = 37");

    std::vector<int32_t> topk = {0, 1, 2, 9};
    MoePermuteArgs perm{arena.put(std::vector<float>(2 * 4, 1.0f), DType::kF32, {2, 4}),
                        arena.put(topk, DType::kI32, {2, 2}),
                        9,
                        arena.alloc(DType::kF32, {4, 4}),
                        arena.alloc(DType::kI32, {10}),
                        arena.alloc(DType::kI32, {4}),
                        arena.alloc(DType::kI32, {4})};
    expect_oor(ops::run(be(), perm), "topk_ids[1, 1] = 9 is outside [0, 9)");

    std::vector<int64_t> slots = {3, 4 * 4};
    KvWriteArgs kv{arena.put(std::vector<float>(2 * 2 * 8, 1.0f), DType::kF32, {2, 2, 8}),
                   arena.put(std::vector<float>(2 * 2 * 8, 1.0f), DType::kF32, {2, 2, 8}),
                   arena.put(slots, DType::kI64, {2}), arena.alloc(DType::kBF16, {4, 4, 2, 8}),
                   arena.alloc(DType::kBF16, {4, 4, 2, 8})};
    expect_oor(ops::run(be(), kv), "slot_mapping[1] = 16 is outside [-1, 16)");

    // Sequence 1 (kv_len 6, block_size 4) reads blocks [1, 0] of its table; entry [1, 1] is 4.
    std::vector<int32_t> tables = {0, -1, 1, 4}, qs = {0, 1, 3}, lens = {3, 6};
    AttentionArgs at;
    at.q = arena.put(std::vector<float>(3 * 2 * 8, 0.5f), DType::kF32, {3, 2, 8});
    at.k_cache = arena.put(std::vector<float>(4 * 4 * 2 * 8, 0.5f), DType::kF32, {4, 4, 2, 8});
    at.v_cache = arena.put(std::vector<float>(4 * 4 * 2 * 8, 0.5f), DType::kF32, {4, 4, 2, 8});
    at.block_tables = arena.put(tables, DType::kI32, {2, 2});
    at.query_start = arena.put(qs, DType::kI32, {3});
    at.kv_lens = arena.put(lens, DType::kI32, {2});
    at.out = arena.alloc(DType::kF32, {3, 2, 8});
    expect_oor(ops::run(be(), at), "block_tables[1, 1] = 4 is outside [0, 4)");
    std::vector<int32_t> short_lens = {3, 1};  // kv_len below the 2 query rows
    AttentionArgs at2 = at;
    at2.kv_lens = arena.put(short_lens, DType::kI32, {2});
    expect_oor(ops::run(be(), at2), "kv_lens[1] = 1 is outside [2");

    std::vector<int32_t> rows = {0, 1, 2, -1};
    MoeUnpermuteArgs un{arena.put(std::vector<float>(4 * 3, 1.0f), DType::kF32, {4, 3}),
                        arena.put(rows, DType::kI32, {4}), arena.put(std::vector<float>(4, 1.0f), DType::kF32, {2, 2}),
                        arena.alloc(DType::kF32, {2, 3})};
    expect_oor(ops::run(be(), un), "row_of[3] = -1 is outside [0, 4)");

    std::vector<int32_t> bad_offsets = {0, 3, 2};
    std::vector<WeightView> w = {arena.put(std::vector<float>(6 * 4, 1.0f), DType::kF32, {6, 4}),
                                 arena.put(std::vector<float>(6 * 4, 1.0f), DType::kF32, {6, 4})};
    std::vector<WeightView> wd = {arena.put(std::vector<float>(4 * 6, 1.0f), DType::kF32, {4, 6}),
                                  arena.put(std::vector<float>(4 * 6, 1.0f), DType::kF32, {4, 6})};
    MoeExpertsArgs ex{arena.put(std::vector<float>(2 * 4, 1.0f), DType::kF32, {2, 4}),
                      arena.put(bad_offsets, DType::kI32, {3}),
                      w,
                      w,
                      wd,
                      arena.alloc(DType::kF32, {2, 4})};
    expect_oor(ops::run(be(), ex), "expert_offsets[2] = 2");
}

}  // namespace
}  // namespace moe::testing
