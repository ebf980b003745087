// The UCX KV transport: ucp RMA get over the ucp_mem_map'ed KV pools.
//
// Each worker process has one ucp context and worker (thread mode MULTI) and maps each of its
// cache's regions (one pool per layer and K/V, or per layer for MLA) once at start; the packed
// rkeys and the worker address are what describe() sends. The decode side creates (and keeps)
// one endpoint per prefill worker address, unpacks the rkeys per pull and issues one
// ucp_get_nbx per (block, region), waiting after every 16 blocks (so a cancel is seen between
// batches). A progress thread (sleeping on the worker's event fd) serves the transports that
// emulate RMA with active messages and need the target to progress (TCP, shared memory here).
//
// Endpoints use UCP_ERR_HANDLING_MODE_NONE: UCX 1.13 offers its shared-memory transports only
// without peer-failure handling, and one machine is the case built here (with PEER mode every
// transfer went over TCP loopback: 100x slower for small prompts). A dead peer is caught by the
// 30 s per-batch timeout instead (UNAVAILABLE; the endpoint is then forgotten).
//
// Bounds: check_source() first; UCX itself checks nothing of a remote address against the
// registered length, so every remote address is computed from checked ids and the announced
// pool size.
#include <poll.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "core/logging.h"
#include "disagg/kv_transport.h"

namespace moe::disagg {
namespace {

constexpr std::chrono::seconds kBlockTimeout{30};
// Gets in flight before waiting: enough to pipeline, few enough that a cancel is seen soon.
constexpr size_t kBlocksPerWait = 16;
constexpr size_t kMaxAddressBytes = 64 << 10;

Status ucx_error(const std::string& what, ucs_status_t s) {
    return unavailable("ucx " + what + ": " + ucs_status_string(s));
}

class UcxTransport final : public KvTransport {
public:
    explicit UcxTransport(const KvCache& cache) : cache_(cache) {}

    ~UcxTransport() override {
        if (progress_.joinable()) {
            stop_.store(true);
            const char b = 1;
            [[maybe_unused]] ssize_t n = write(wake_[1], &b, 1);
            progress_.join();
        }
        {
            std::lock_guard<std::mutex> lock(ep_mu_);
            for (auto& [addr, ep] : eps_) close_ep(ep);
            eps_.clear();
        }
        for (ucp_mem_h m : memh_) ucp_mem_unmap(context_, m);
        if (worker_) ucp_worker_destroy(worker_);
        if (context_) ucp_cleanup(context_);
        for (int fd : wake_)
            if (fd >= 0) close(fd);
    }

    Status init() {
        ucp_config_t* config = nullptr;
        ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
        if (s != UCS_OK) return ucx_error("config_read", s);
        ucp_params_t params{};
        params.field_mask = UCP_PARAM_FIELD_FEATURES;
        params.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
        s = ucp_init(&params, config, &context_);
        ucp_config_release(config);
        if (s != UCS_OK) return ucx_error("init", s);
        ucp_worker_params_t wp{};
        wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
        wp.thread_mode = UCS_THREAD_MODE_MULTI;
        s = ucp_worker_create(context_, &wp, &worker_);
        if (s != UCS_OK) return ucx_error("worker_create", s);
        ucp_address_t* address = nullptr;
        size_t address_len = 0;
        s = ucp_worker_get_address(worker_, &address, &address_len);
        if (s != UCS_OK) return ucx_error("worker_get_address", s);
        address_.assign(reinterpret_cast<const char*>(address), address_len);
        ucp_worker_release_address(worker_, address);

        const size_t pool_bytes = static_cast<size_t>(cache_.num_blocks() * cache_.region_bytes());
        for (int64_t r = 0; r < cache_.num_regions(); ++r) {
            ucp_mem_map_params_t mp{};
            mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
            mp.address = cache_.region_base(r);
            mp.length = pool_bytes;
            ucp_mem_h memh = nullptr;
            s = ucp_mem_map(context_, &mp, &memh);
            if (s != UCS_OK) return ucx_error("mem_map of KV region " + std::to_string(r), s);
            memh_.push_back(memh);
            void* packed = nullptr;
            size_t packed_len = 0;
            s = ucp_rkey_pack(context_, memh, &packed, &packed_len);
            if (s != UCS_OK) return ucx_error("rkey_pack", s);
            rkeys_.emplace_back(static_cast<const char*>(packed), packed_len);
            ucp_rkey_buffer_release(packed);
            bases_.push_back(reinterpret_cast<uint64_t>(cache_.region_base(r)));
        }
        s = ucp_worker_get_efd(worker_, &efd_);
        if (s != UCS_OK) return ucx_error("worker_get_efd", s);
        if (pipe(wake_) != 0) return internal_error("pipe() for the UCX progress thread failed");
        progress_ = std::thread([this] { progress_loop(); });
        log::kv().info("ucx KV transport: {} regions of {} bytes per block mapped, worker address {} bytes",
                       cache_.num_regions(), cache_.region_bytes(), address_.size());
        return ok_status();
    }

    const char* name() const override { return "ucx"; }

    StatusOr<KvSourceDesc> describe(std::span<const int32_t> block_ids) const override {
        KvSourceDesc d;
        d.transport = name();
        d.endpoint = address_;
        d.region_keys = rkeys_;
        d.block_ids.assign(block_ids.begin(), block_ids.end());
        d.region_bytes = cache_.region_bytes();
        d.regions_per_block = static_cast<int32_t>(cache_.num_regions());
        d.region_base = bases_;
        d.num_blocks = cache_.num_blocks();
        return d;
    }

    Status pull(const KvSourceDesc& s, std::span<const int32_t> src_index, std::span<const int32_t> dst,
                const std::atomic<bool>& cancelled) override {
        MOE_RETURN_IF_ERROR(check_source(s, cache_, name(), src_index, dst));
        if (s.region_keys.size() != static_cast<size_t>(s.regions_per_block))
            return invalid_argument("kv.region_keys has " + std::to_string(s.region_keys.size()) + " keys for " +
                                    std::to_string(s.regions_per_block) + " regions");
        for (size_t r = 0; r < s.region_keys.size(); ++r)
            if (s.region_keys[r].empty() || s.region_keys[r].size() > kMaxRegionKeyBytes)
                return invalid_argument("kv.region_keys[" + std::to_string(r) + "] is " +
                                        std::to_string(s.region_keys[r].size()) + " bytes, must be in [1, " +
                                        std::to_string(kMaxRegionKeyBytes) + "]");
        if (s.endpoint.empty() || s.endpoint.size() > kMaxAddressBytes)
            return invalid_argument("kv.endpoint is " + std::to_string(s.endpoint.size()) +
                                    " bytes, a ucx worker address must be in [1, " + std::to_string(kMaxAddressBytes) +
                                    "]");
        MOE_ASSIGN_OR_RETURN(ucp_ep_h ep, endpoint(s.endpoint));
        std::vector<ucp_rkey_h> rkeys;
        auto release_keys = [&] {
            for (ucp_rkey_h k : rkeys) ucp_rkey_destroy(k);
            rkeys.clear();
        };
        for (const std::string& key : s.region_keys) {
            ucp_rkey_h k = nullptr;
            const ucs_status_t st = ucp_ep_rkey_unpack(ep, key.data(), &k);
            if (st != UCS_OK) {
                release_keys();
                return invalid_argument(std::string("kv.region_keys: not a ucx rkey of this peer (") +
                                        ucs_status_string(st) + ")");
            }
            rkeys.push_back(k);
        }
        const uint64_t rb = static_cast<uint64_t>(s.region_bytes);
        std::vector<void*> requests;
        Status result = ok_status();
        for (size_t i = 0; i < src_index.size() && result.ok(); ++i) {
            if (i % kBlocksPerWait == 0 && cancelled.load()) {
                result = Status(StatusCode::kCancelled, "KV pull cancelled");
                break;
            }
            const uint64_t src_block = static_cast<uint64_t>(s.block_ids[static_cast<size_t>(src_index[i])]);
            for (int64_t r = 0; r < cache_.num_regions(); ++r) {
                ucp_request_param_t param{};
                void* local = static_cast<uint8_t*>(cache_.region_base(r)) + static_cast<uint64_t>(dst[i]) * rb;
                const uint64_t remote = s.region_base[static_cast<size_t>(r)] + src_block * rb;
                void* req = ucp_get_nbx(ep, local, rb, remote, rkeys[static_cast<size_t>(r)], &param);
                if (UCS_PTR_IS_ERR(req)) {
                    result = ucx_error("get", UCS_PTR_STATUS(req));
                    break;
                }
                if (req != nullptr) requests.push_back(req);
            }
            if ((i + 1) % kBlocksPerWait == 0 || i + 1 == src_index.size() || !result.ok()) {
                Status waited = wait_all(requests);
                if (result.ok()) result = waited;
            }
        }
        if (!requests.empty()) (void)wait_all(requests);
        release_keys();
        if (!result.ok() && result.code() != StatusCode::kCancelled) forget_endpoint(s.endpoint);
        return result;
    }

private:
    // Waits for every request (progressing the worker); cancels the rest past the deadline.
    Status wait_all(std::vector<void*>& requests) {
        const auto deadline = std::chrono::steady_clock::now() + kBlockTimeout;
        Status result = ok_status();
        for (void* req : requests) {
            ucs_status_t st;
            while ((st = ucp_request_check_status(req)) == UCS_INPROGRESS) {
                if (ucp_worker_progress(worker_) == 0 && std::chrono::steady_clock::now() > deadline) {
                    ucp_request_cancel(worker_, req);
                    // NOTE: bounded: a transport that cannot cancel must not hang the import
                    // thread (the request is then leaked with its endpoint, which is forgotten).
                    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
                    while ((st = ucp_request_check_status(req)) == UCS_INPROGRESS &&
                           std::chrono::steady_clock::now() < give_up)
                        ucp_worker_progress(worker_);
                    if (result.ok()) result = unavailable("ucx get: no completion within 30 s (peer gone?)");
                    break;
                }
            }
            if (st != UCS_OK && result.ok()) result = ucx_error("get", st);
            if (st != UCS_INPROGRESS) ucp_request_free(req);
        }
        requests.clear();
        return result;
    }

    StatusOr<ucp_ep_h> endpoint(const std::string& address) {
        std::lock_guard<std::mutex> lock(ep_mu_);
        auto it = eps_.find(address);
        if (it != eps_.end()) return it->second;
        ucp_ep_params_t ep{};
        ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
        ep.address = reinterpret_cast<const ucp_address_t*>(address.data());
        ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
        ucp_ep_h h = nullptr;
        const ucs_status_t st = ucp_ep_create(worker_, &ep, &h);
        if (st != UCS_OK) return ucx_error("ep_create to the prefill worker (kv.endpoint)", st);
        eps_[address] = h;
        return h;
    }

    void forget_endpoint(const std::string& address) {
        std::lock_guard<std::mutex> lock(ep_mu_);
        auto it = eps_.find(address);
        if (it == eps_.end()) return;
        close_ep(it->second);
        eps_.erase(it);
    }

    void close_ep(ucp_ep_h ep) {
        ucp_request_param_t param{};
        param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        param.flags = UCP_EP_CLOSE_FLAG_FORCE;
        void* req = ucp_ep_close_nbx(ep, &param);
        if (req == nullptr || UCS_PTR_IS_ERR(req)) return;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (ucp_request_check_status(req) == UCS_INPROGRESS && std::chrono::steady_clock::now() < deadline)
            ucp_worker_progress(worker_);
        ucp_request_free(req);
    }

    // NOTE: the worker's event fd does not wake this thread for the active messages that
    // emulate a peer's get over shared memory (UCX 1.13, seen here), so it keeps spinning while
    // there is traffic and for 5 ms after, and otherwise sleeps at most 1 ms at a time.
    void progress_loop() {
        auto last_work = std::chrono::steady_clock::now();
        while (!stop_.load()) {
            if (ucp_worker_progress(worker_) != 0) {
                last_work = std::chrono::steady_clock::now();
                continue;
            }
            if (std::chrono::steady_clock::now() - last_work < std::chrono::milliseconds(5)) continue;
            const ucs_status_t s = ucp_worker_arm(worker_);
            if (s == UCS_ERR_BUSY) continue;
            pollfd fds[2] = {{efd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
            if (poll(fds, 2, 1) > 0) last_work = std::chrono::steady_clock::now();
        }
    }

    const KvCache& cache_;
    ucp_context_h context_ = nullptr;
    ucp_worker_h worker_ = nullptr;
    std::vector<ucp_mem_h> memh_;
    std::vector<std::string> rkeys_;
    std::vector<uint64_t> bases_;
    std::string address_;
    int efd_ = -1;
    int wake_[2] = {-1, -1};
    std::atomic<bool> stop_{false};
    std::thread progress_;
    std::mutex ep_mu_;
    std::map<std::string, ucp_ep_h> eps_;
};

}  // namespace

bool ucx_available() {
    return true;
}

StatusOr<std::unique_ptr<KvTransport>> make_ucx_transport(const KvCache& cache) {
    if (cache.device().kind != DeviceKind::kCpu)
        return failed_precondition("the ucx KV transport maps host memory here; this cache is on " +
                                   cache.device().to_string() + " (GPU memory registration is not built)");
    auto t = std::make_unique<UcxTransport>(cache);
    MOE_RETURN_IF_ERROR(t->init());
    return std::unique_ptr<KvTransport>(std::move(t));
}

}  // namespace moe::disagg
