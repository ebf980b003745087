// The control plane's security (#18): TLS and mTLS, the admin credential for Drain and
// cross-client Abort, per-caller id namespaces, paths hidden from non-admin callers, bounded and
// escaped log fields, the message-size limit.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/log_field.h"
#include "server/auth.h"
#include "server_harness.h"

namespace moe::server::testing {
namespace {

// A channel with its own TCP connection (gRPC shares connections between channels with equal
// arguments, which would make two "clients" one peer).
std::shared_ptr<grpc::Channel> own_channel(const std::string& address,
                                           std::shared_ptr<grpc::ChannelCredentials> creds = nullptr,
                                           const std::string& target_name = "") {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (!target_name.empty()) args.SetSslTargetNameOverride(target_name);
    return grpc::CreateCustomChannel(address, creds ? creds : grpc::InsecureChannelCredentials(), args);
}

std::string read_text(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// A CA, a server certificate for "localhost" and a client certificate "client-a", made with the
// openssl command-line tool into a temporary directory.
struct Pki {
    std::filesystem::path dir;
    bool ok = false;
    std::string error;

    Pki() {
        char tmpl[] = "/tmp/moe_pki_XXXXXX";
        if (!mkdtemp(tmpl)) {
            error = "mkdtemp failed";
            return;
        }
        dir = tmpl;
        if (std::system("openssl version > /dev/null 2>&1") != 0) {
            error = "the openssl command-line tool is needed to make test certificates (apt-get install openssl)";
            return;
        }
        const std::string d = dir.string();
        const std::string cmds[] = {
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=moe-test-ca -keyout " + d + "/ca.key -out " +
                d + "/ca.pem",
            "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout " + d + "/server.key -out " + d +
                "/server.csr",
            "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > " + d + "/server.ext",
            "openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.pem -CAkey " + d +
                "/ca.key -CAcreateserial -days 2 -extfile " + d + "/server.ext -out " + d + "/server.pem",
            "openssl req -newkey rsa:2048 -nodes -subj /CN=client-a -keyout " + d + "/client.key -out " + d +
                "/client.csr",
            "openssl x509 -req -in " + d + "/client.csr -CA " + d + "/ca.pem -CAkey " + d +
                "/ca.key -CAcreateserial -days 2 -out " + d + "/client.pem",
        };
        for (const std::string& c : cmds) {
            if (std::system((c + " > /dev/null 2>&1").c_str()) != 0) {
                error = "failed: " + c;
                return;
            }
        }
        ok = true;
    }
    ~Pki() {
        std::error_code ec;
        if (!dir.empty()) std::filesystem::remove_all(dir, ec);
    }
    std::string path(const char* name) const { return (dir / name).string(); }
    std::shared_ptr<grpc::ChannelCredentials> client_creds(bool with_cert) const {
        grpc::SslCredentialsOptions o;
        o.pem_root_certs = read_text(dir / "ca.pem");
        if (with_cert) {
            o.pem_cert_chain = read_text(dir / "client.pem");
            o.pem_private_key = read_text(dir / "client.key");
        }
        return grpc::SslCredentials(o);
    }
};

TEST(ServerTls, RoundTripOverTls) {
    Pki pki;
    ASSERT_TRUE(pki.ok) << pki.error;
    ServerOptions so;
    so.tls_cert_file = pki.path("server.pem");
    so.tls_key_file = pki.path("server.key");
    auto h = Harness::start("", {}, so);
    ASSERT_NE(h, nullptr);
    EXPECT_TRUE(h->server->tls());
    auto channel = own_channel(h->server->address(), pki.client_creds(false), "localhost");
    auto stub = v1::Inference::NewStub(channel);
    const StreamResult r = collect(*stub, greedy_ids({1, 2, 3}, 4), std::chrono::seconds(60));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.ids.size(), 4u);
    // A plaintext client gets nothing from a TLS port.
    auto plain = v1::Inference::NewStub(own_channel(h->server->address()));
    const StreamResult p = collect(*plain, greedy_ids({1, 2, 3}, 4), std::chrono::seconds(5));
    EXPECT_FALSE(p.status.ok());
    EXPECT_TRUE(p.ids.empty());
}

TEST(ServerTls, MutualTlsRefusesAClientWithoutACertificate) {
    Pki pki;
    ASSERT_TRUE(pki.ok) << pki.error;
    ServerOptions so;
    so.tls_cert_file = pki.path("server.pem");
    so.tls_key_file = pki.path("server.key");
    so.tls_client_ca_file = pki.path("ca.pem");
    auto h = Harness::start("", {}, so);
    ASSERT_NE(h, nullptr);
    auto anonymous = v1::Inference::NewStub(own_channel(h->server->address(), pki.client_creds(false), "localhost"));
    const StreamResult refused = collect(*anonymous, greedy_ids({1, 2}, 2), std::chrono::seconds(5));
    EXPECT_FALSE(refused.status.ok());
    EXPECT_TRUE(refused.ids.empty());
    auto with_cert = v1::Inference::NewStub(own_channel(h->server->address(), pki.client_creds(true), "localhost"));
    const StreamResult ok = collect(*with_cert, greedy_ids({1, 2}, 2), std::chrono::seconds(60));
    ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
    EXPECT_EQ(ok.ids.size(), 2u);
}

TEST(ServerTls, BadTlsOptionsAreErrorsNamingTheFlag) {
    auto backend = make_cpu_backend({.num_threads = 1});
    auto demo = make_demo_model(*backend);
    ASSERT_TRUE(demo.ok());
    auto engine = Engine::create(std::move(demo->model), std::move(demo->tokenizer), {.kv_cache_bytes = 8 << 20});
    ASSERT_TRUE(engine.ok());
    ServerOptions so;
    so.port = 0;
    so.tls_cert_file = "/nonexistent/cert.pem";
    auto s = Server::start(**engine, so);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.status().message().find("--tls-key"), std::string::npos) << s.status().message();
    so.tls_key_file = "/nonexistent/key.pem";
    s = Server::start(**engine, so);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.status().message().find("/nonexistent/"), std::string::npos) << s.status().message();
}

class AdminServer : public ::testing::Test {
protected:
    void SetUp() override {
        ServerOptions so;
        so.admin_token = "s3cret-token";
        so.config = {{"model", "/secret/models/my-model"}, {"port", "0"}};
        so.model_name = "/secret/models/my-model";
        h_ = Harness::start("", {}, so);
        ASSERT_NE(h_, nullptr);
    }
    std::unique_ptr<v1::Control::Stub> control_client() {
        return v1::Control::NewStub(own_channel(h_->server->address()));
    }
    std::unique_ptr<Harness> h_;
};

grpc::Status drain(v1::Control::Stub& stub, const std::string& authorization) {
    grpc::ClientContext ctx;
    if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
    v1::DrainResponse resp;
    return stub.Drain(&ctx, v1::DrainRequest(), &resp);
}

TEST_F(AdminServer, DrainNeedsTheAdminToken) {
    auto client = control_client();
    grpc::Status s = drain(*client, "");
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
    s = drain(*client, "Bearer wrong-token");
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
    s = drain(*client, "Bearer s3cret-token-but-longer");
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
    EXPECT_FALSE(h_->server->draining());
    EXPECT_EQ(health_status(*h_->channel, "moe.v1.Inference"), 1);
    s = drain(*client, "Bearer s3cret-token");
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(h_->server->draining());
    EXPECT_EQ(health_status(*h_->channel, ""), 1);                  // liveness
    EXPECT_EQ(health_status(*h_->channel, "moe.v1.Inference"), 2);  // readiness
}

TEST_F(AdminServer, AClientCannotAbortAnothersRequestButTheAdminCan) {
    auto owner_channel = own_channel(h_->server->address());
    auto owner = v1::Inference::NewStub(owner_channel);
    auto owner_control = v1::Control::NewStub(owner_channel);
    v1::GenerateRequest req = greedy_ids({5, 6, 7}, 3000);
    req.set_request_id("victim");
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    auto reader = owner->Generate(&ctx, req);
    v1::GenerateResponse msg;
    ASSERT_TRUE(reader->Read(&msg));  // running

    v1::AbortRequest ar;
    ar.set_request_id("victim");
    v1::AbortResponse resp;
    {
        auto other = control_client();
        grpc::ClientContext actx;
        ASSERT_TRUE(other->Abort(&actx, ar, &resp).ok());
        EXPECT_FALSE(resp.aborted()) << "another client's abort reached the request";
    }
    {
        auto other = control_client();
        grpc::ClientContext actx;
        actx.AddMetadata("authorization", "Bearer wrong");
        ASSERT_TRUE(other->Abort(&actx, ar, &resp).ok());
        EXPECT_FALSE(resp.aborted());
    }
    EXPECT_EQ(h_->load().num_pending(), 1);
    {
        auto admin = control_client();
        grpc::ClientContext actx;
        actx.AddMetadata("authorization", "Bearer s3cret-token");
        ASSERT_TRUE(admin->Abort(&actx, ar, &resp).ok());
        EXPECT_TRUE(resp.aborted());
    }
    std::optional<v1::Final> fin;
    while (reader->Read(&msg))
        if (msg.has_final()) fin = msg.final();
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_TRUE(fin.has_value());
    EXPECT_EQ(fin->finish_reason(), v1::FINISH_REASON_CANCELLED);
    EXPECT_TRUE(h_->wait_kv_idle(std::chrono::seconds(10)));
}

TEST_F(AdminServer, OwnAbortWorksOnTheSameConnection) {
    auto channel = own_channel(h_->server->address());
    auto inference = v1::Inference::NewStub(channel);
    auto control = v1::Control::NewStub(channel);
    v1::GenerateRequest req = greedy_ids({5, 6, 7}, 3000);
    req.set_request_id("mine");
    grpc::ClientContext ctx;
    auto reader = inference->Generate(&ctx, req);
    v1::GenerateResponse msg;
    ASSERT_TRUE(reader->Read(&msg));
    v1::AbortRequest ar;
    ar.set_request_id("mine");
    v1::AbortResponse resp;
    grpc::ClientContext actx;
    ASSERT_TRUE(control->Abort(&actx, ar, &resp).ok());
    EXPECT_TRUE(resp.aborted());
    while (reader->Read(&msg)) {
    }
    EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(AdminServer, TwoClientsWithTheSameIdDoNotCollide) {
    auto a = v1::Inference::NewStub(own_channel(h_->server->address()));
    auto b = v1::Inference::NewStub(own_channel(h_->server->address()));
    v1::GenerateRequest req = greedy_ids({5, 6, 7}, 40);
    req.set_request_id("same-id");
    grpc::ClientContext ctx_a;
    auto reader_a = a->Generate(&ctx_a, req);
    v1::GenerateResponse msg;
    ASSERT_TRUE(reader_a->Read(&msg));  // a's request is pending now
    const StreamResult rb = collect(*b, req, std::chrono::seconds(60));
    ASSERT_TRUE(rb.status.ok()) << "the squatted id blocked another client: " << rb.status.error_message();
    EXPECT_EQ(rb.request_id, "same-id");
    EXPECT_EQ(rb.ids.size(), 40u);
    int64_t got = msg.has_delta() ? msg.delta().token_ids_size() : 0;
    while (reader_a->Read(&msg))
        if (msg.has_delta()) got += msg.delta().token_ids_size();
    EXPECT_TRUE(reader_a->Finish().ok());
    EXPECT_EQ(got, 40);
}

TEST_F(AdminServer, ServerInfoHidesPathsFromNonAdmin) {
    auto client = control_client();
    v1::ServerInfo si;
    {
        grpc::ClientContext ctx;
        ASSERT_TRUE(client->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &si).ok());
    }
    EXPECT_EQ(si.options().at("model").find("/secret"), std::string::npos) << si.options().at("model");
    EXPECT_EQ(si.options().at("port"), "0");
    v1::ModelInfo mi;
    {
        grpc::ClientContext ctx;
        ASSERT_TRUE(client->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &mi).ok());
    }
    EXPECT_EQ(mi.name(), "my-model");
    {
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", "Bearer s3cret-token");
        ASSERT_TRUE(client->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &si).ok());
    }
    EXPECT_EQ(si.options().at("model"), "/secret/models/my-model");
}

TEST(ServerLimits, MessageSizeIsAnOption) {
    ServerOptions so;
    so.max_message_bytes = 64 << 10;
    auto h = Harness::start("", {}, so);
    ASSERT_NE(h, nullptr);
    v1::GenerateRequest req = greedy_ids({1, 2}, 1);
    req.set_text(std::string(100 << 10, 'a'));
    const StreamResult big = collect(*h->inference, req, std::chrono::seconds(30));
    EXPECT_EQ(big.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << big.status.error_message();
    req.set_text(std::string(1000, 'a'));
    req.mutable_stopping()->set_max_tokens(1);
    const StreamResult small = collect(*h->inference, req, std::chrono::seconds(60));
    EXPECT_TRUE(small.status.ok()) << small.status.error_message();
}

TEST(LogField, EscapesControlCharactersAndBoundsLength) {
    EXPECT_EQ(log_field("plain id-1"), "plain id-1");
    EXPECT_EQ(log_field("a\nINFO forged line"), "a\\nINFO forged line");
    EXPECT_EQ(log_field("cr\r tab\t bs\\ nul" + std::string(1, '\0') + " esc\x1b del\x7f"),
              "cr\\r tab\\t bs\\\\ nul\\x00 esc\\x1b del\\x7f");
    EXPECT_EQ(log_field("\xc3\xa9"), "\\xc3\\xa9");
    const std::string huge(10 << 20, 'x');
    const std::string logged = log_field(huge);
    EXPECT_EQ(logged, std::string(256, 'x') + "...(10485760 bytes)");
    EXPECT_EQ(log_field(std::string(300, '\n')).find('\n'), std::string::npos);
    EXPECT_LE(log_field(std::string(300, '\n')).size(), 256u * 4 + 32);
}

TEST(Auth, ConstantTimeEqualsAndLoopback) {
    EXPECT_TRUE(constant_time_equals("token", "token"));
    EXPECT_FALSE(constant_time_equals("token", "tokex"));
    EXPECT_FALSE(constant_time_equals("token", "token2"));
    EXPECT_FALSE(constant_time_equals("", "x"));
    EXPECT_TRUE(is_loopback_peer("ipv4:127.0.0.1:5555"));
    EXPECT_TRUE(is_loopback_peer("ipv6:[::1]:5555"));
    EXPECT_FALSE(is_loopback_peer("ipv4:10.0.0.1:5555"));
    EXPECT_FALSE(is_loopback_peer("ipv4:1.127.0.0:5555"));
    EXPECT_TRUE(is_loopback_host("127.0.0.1"));
    EXPECT_TRUE(is_loopback_host("::1"));
    EXPECT_FALSE(is_loopback_host("0.0.0.0"));
    EXPECT_FALSE(is_loopback_host("::"));
}

}  // namespace
}  // namespace moe::server::testing
