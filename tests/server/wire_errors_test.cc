// Defect J (#18): invalid UTF-8 in request_id or stop, and malformed or truncated protobuf
// bytes, get INVALID_ARGUMENT naming the field or the message (gRPC's generated code answered
// UNIMPLEMENTED with an empty message). Raw bytes go through a generic (ByteBuffer) call.
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/support/sync_stream.h>

#include "server_harness.h"

namespace moe::server::testing {
namespace {

grpc::ByteBuffer bytes_of(const std::string& wire) {
    grpc::Slice slice(wire);
    return grpc::ByteBuffer(&slice, 1);
}

// Generate with `wire` as the request body, read to the end.
grpc::Status raw_generate(grpc::Channel& channel, const std::string& wire, int* num_messages) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::internal::RpcMethod method("/moe.v1.Inference/Generate", grpc::internal::RpcMethod::SERVER_STREAMING);
    const grpc::ByteBuffer request = bytes_of(wire);
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
        grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(&channel, method, &ctx, request));
    grpc::ByteBuffer msg;
    *num_messages = 0;
    while (reader->Read(&msg)) ++*num_messages;
    return reader->Finish();
}

grpc::Status raw_unary(grpc::Channel& channel, const std::string& path, const std::string& wire) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::internal::RpcMethod method(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC);
    grpc::ByteBuffer response;
    return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(&channel, method, &ctx, bytes_of(wire),
                                                                                 &response);
}

void expect_invalid(const grpc::Status& s, const std::vector<std::string>& mentions) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    for (const std::string& m : mentions)
        EXPECT_NE(s.error_message().find(m), std::string::npos) << "\"" << s.error_message() << "\" lacks " << m;
}

class WireErrors : public ::testing::Test {
protected:
    static void SetUpTestSuite() { h_ = Harness::start("").release(); }
    static void TearDownTestSuite() {
        delete h_;
        h_ = nullptr;
    }
    void SetUp() override { ASSERT_NE(h_, nullptr); }
    void TearDown() override {
        // After every probe the server still serves a good request.
        const StreamResult ok = collect(*h_->inference, greedy_ids({1, 2, 3}, 2), std::chrono::seconds(60));
        EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
        EXPECT_EQ(ok.ids.size(), 2u);
    }
    static Harness* h_;
};
Harness* WireErrors::h_ = nullptr;

TEST_F(WireErrors, InvalidUtf8RequestIdNamesTheField) {
    v1::GenerateRequest req = greedy_ids({1, 2}, 2);
    req.set_request_id(std::string("id\xff\xfe", 4));
    const StreamResult r = collect(*h_->inference, req, std::chrono::seconds(30));
    expect_invalid(r.status, {"request_id", "UTF-8", "byte 2"});
    // The same bytes as an old client with `string request_id` would send them.
    int n = 0;
    expect_invalid(raw_generate(*h_->channel, req.SerializeAsString(), &n), {"request_id", "UTF-8"});
    EXPECT_EQ(n, 0);
}

TEST_F(WireErrors, InvalidUtf8StopNamesTheField) {
    v1::GenerateRequest req = greedy_ids({1, 2}, 2);
    req.mutable_stopping()->add_stop("fine");
    req.mutable_stopping()->add_stop(std::string("x\xc0\xaf", 3));
    int n = 0;
    expect_invalid(raw_generate(*h_->channel, req.SerializeAsString(), &n), {"stopping.stop[1]", "UTF-8"});
    EXPECT_EQ(n, 0);
}

TEST_F(WireErrors, GarbageAndTruncatedGenerateRequestsAreInvalidArgument) {
    int n = 0;
    expect_invalid(raw_generate(*h_->channel, std::string("\xff\xff\xff\xff\xff\xff", 6), &n),
                   {"moe.v1.GenerateRequest", "malformed or truncated"});
    EXPECT_EQ(n, 0);
    v1::GenerateRequest req = greedy_ids({1, 2, 3, 4, 5, 6, 7, 8}, 2);
    req.set_text("a prompt long enough to cut in half");
    req.clear_token_ids();
    req.set_text("a prompt long enough to cut in half");
    const std::string wire = req.SerializeAsString();
    expect_invalid(raw_generate(*h_->channel, wire.substr(0, 10), &n), {"moe.v1.GenerateRequest"});
    EXPECT_EQ(n, 0);
}

TEST_F(WireErrors, GarbageAndInvalidUtf8ControlRequestsAreInvalidArgument) {
    expect_invalid(raw_unary(*h_->channel, "/moe.v1.Control/Abort",
                             std::string("\x0a\x05"
                                         "ab",
                                         4)),
                   {"moe.v1.AbortRequest"});
    expect_invalid(raw_unary(*h_->channel, "/moe.v1.Control/GetLoad", std::string("\xff\xff", 2)),
                   {"moe.v1.GetLoadRequest"});
    v1::AbortRequest ar;
    ar.set_request_id(std::string("\xff", 1));
    expect_invalid(raw_unary(*h_->channel, "/moe.v1.Control/Abort", ar.SerializeAsString()), {"request_id", "UTF-8"});
    // A valid raw call still works.
    EXPECT_TRUE(raw_unary(*h_->channel, "/moe.v1.Control/GetLoad", "").ok());
}

// Issue 18 A over gRPC: sampling parameters inside the accepted ranges whose arithmetic overflows
// (1 / temperature, logit / repetition_penalty) used to abort the whole process. Each request is
// served to the end; after each one the server still serves a good request (TearDown).
TEST_F(WireErrors, SamplerExtremesAreServedToTheEnd) {
    struct Probe {
        const char* what;
        float temperature;
        float repetition_penalty;
    };
    for (const Probe& p : {Probe{"temperature 1e-45", 1e-45f, 1.0f}, Probe{"temperature 2.9e-39", 2.9e-39f, 1.0f},
                           Probe{"temperature 1e-38", 1e-38f, 1.0f}, Probe{"repetition_penalty 1e-45", 1.0f, 1e-45f},
                           Probe{"both", 1e-45f, 1e-45f}}) {
        SCOPED_TRACE(p.what);
        v1::GenerateRequest req = greedy_ids({1, 2, 3, 1, 2}, 4);
        req.mutable_sampling()->set_temperature(p.temperature);
        req.mutable_sampling()->set_repetition_penalty(p.repetition_penalty);
        req.mutable_sampling()->set_seed(7);
        const StreamResult r = collect(*h_->inference, req, std::chrono::seconds(60));
        EXPECT_TRUE(r.status.ok()) << r.status.error_message();
        EXPECT_EQ(r.ids.size(), 4u);
        ASSERT_TRUE(r.final_msg.has_value());
        EXPECT_EQ(r.final_msg->finish_reason(), v1::FINISH_REASON_LENGTH);
    }
}

}  // namespace
}  // namespace moe::server::testing
