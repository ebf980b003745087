// KV handoff cost: the bytes one request's prompt KV takes and the time a decode worker needs to
// pull it from a prefill worker in another process over a disagg::KvTransport (UCX: shared
// memory or TCP as UCX chooses; UCX_TLS=tcp forces TCP).
//
//   kv_transfer_bench --config DIR [--tokens 1024] [--block-size 16] [--dtype bf16] [--repeats 9]
//
// DIR holds a config.json only (weights are not needed: tests/data/configs/* work). A child
// process plays the prefill worker: it allocates the cache, fills the blocks with a pattern,
// maps them for UCX and sends the descriptor over a pipe; the parent pulls every block of the
// prompt `repeats` times and prints bytes, the median and min time, and GB/s, then checks the
// bytes it received against the pattern.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "disagg/kv_transport.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "moe/cpu_backend.h"

using namespace moe;

namespace {

void write_all(int fd, const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
        const ssize_t w = write(fd, c, n);
        if (w <= 0) _exit(3);
        c += w;
        n -= static_cast<size_t>(w);
    }
}
bool read_all(int fd, void* p, size_t n) {
    char* c = static_cast<char*>(p);
    while (n > 0) {
        const ssize_t r = read(fd, c, n);
        if (r <= 0) return false;
        c += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}
void put_string(int fd, const std::string& s) {
    const uint64_t n = s.size();
    write_all(fd, &n, 8);
    write_all(fd, s.data(), s.size());
}
std::string get_string(int fd) {
    uint64_t n = 0;
    if (!read_all(fd, &n, 8) || n > (64u << 20)) return {};
    std::string s(n, '\0');
    read_all(fd, s.data(), n);
    return s;
}
template <class T>
void put_vec(int fd, const std::vector<T>& v) {
    put_string(fd, std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T)));
}
template <class T>
std::vector<T> get_vec(int fd) {
    const std::string s = get_string(fd);
    std::vector<T> v(s.size() / sizeof(T));
    std::memcpy(v.data(), s.data(), v.size() * sizeof(T));
    return v;
}

uint8_t pattern(int64_t region, int64_t block, int64_t byte) {
    return static_cast<uint8_t>(region * 31 + block * 7 + byte);
}

}  // namespace

int main(int argc, char** argv) {
    std::string config_dir, dtype_name = "bf16";
    int64_t tokens = 1024, block_size = 16, repeats = 9;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i], v = argv[i + 1];
        if (a == "--config")
            config_dir = v;
        else if (a == "--tokens")
            tokens = std::stoll(v);
        else if (a == "--block-size")
            block_size = std::stoll(v);
        else if (a == "--dtype")
            dtype_name = v;
        else if (a == "--repeats")
            repeats = std::stoll(v);
    }
    if (config_dir.empty()) {
        std::fprintf(stderr,
                     "usage: kv_transfer_bench --config DIR [--tokens N] [--block-size B] [--dtype bf16|f32]\n");
        return 2;
    }
    auto config = load_model_config(config_dir);
    if (!config.ok()) {
        std::fprintf(stderr, "%s\n", config.status().to_string().c_str());
        return 2;
    }
    if (!disagg::ucx_available()) {
        std::fprintf(stderr, "built without UCX\n");
        return 2;
    }
    const DType dtype = dtype_name == "f32" ? DType::kF32 : DType::kBF16;
    const int64_t num_blocks = (tokens + block_size - 1) / block_size;
    auto backend = make_cpu_backend({.num_threads = 1});
    int to_parent[2], to_child[2];
    if (pipe(to_parent) != 0 || pipe(to_child) != 0) return 2;
    const pid_t pid = fork();
    if (pid == 0) {  // ---- the prefill worker
        auto cache =
            KvCache::create(*backend, *config, {.num_blocks = num_blocks, .block_size = block_size, .dtype = dtype});
        if (!cache.ok()) _exit(4);
        for (int64_t r = 0; r < cache->num_regions(); ++r)
            for (int64_t b = 0; b < num_blocks; ++b) {
                auto* p = static_cast<uint8_t*>(cache->region_base(r)) + b * cache->region_bytes();
                for (int64_t i = 0; i < cache->region_bytes(); ++i) p[i] = pattern(r, b, i);
            }
        auto t = disagg::make_ucx_transport(*cache);
        if (!t.ok()) {
            std::fprintf(stderr, "child: %s\n", t.status().to_string().c_str());
            _exit(5);
        }
        std::vector<int32_t> ids(static_cast<size_t>(num_blocks));
        for (int64_t b = 0; b < num_blocks; ++b) ids[static_cast<size_t>(b)] = static_cast<int32_t>(b);
        auto d = (*t)->describe(ids);
        put_string(to_parent[1], d->endpoint);
        put_vec(to_parent[1], d->region_base);
        put_vec(to_parent[1], d->block_ids);
        write_all(to_parent[1], &d->num_blocks, 8);
        write_all(to_parent[1], &d->region_bytes, 8);
        const uint64_t nkeys = d->region_keys.size();
        write_all(to_parent[1], &nkeys, 8);
        for (const auto& k : d->region_keys) put_string(to_parent[1], k);
        char done;
        (void)read(to_child[0], &done, 1);  // until the parent is finished
        _exit(0);
    }
    // ---- the decode worker
    auto cache =
        KvCache::create(*backend, *config, {.num_blocks = num_blocks, .block_size = block_size, .dtype = dtype});
    if (!cache.ok()) return 2;
    auto transport = disagg::make_ucx_transport(*cache);
    if (!transport.ok()) {
        std::fprintf(stderr, "%s\n", transport.status().to_string().c_str());
        return 2;
    }
    disagg::KvSourceDesc d;
    d.transport = "ucx";
    d.endpoint = get_string(to_parent[0]);
    d.region_base = get_vec<uint64_t>(to_parent[0]);
    d.block_ids = get_vec<int32_t>(to_parent[0]);
    read_all(to_parent[0], &d.num_blocks, 8);
    read_all(to_parent[0], &d.region_bytes, 8);
    uint64_t nkeys = 0;
    read_all(to_parent[0], &nkeys, 8);
    for (uint64_t i = 0; i < nkeys; ++i) d.region_keys.push_back(get_string(to_parent[0]));
    d.regions_per_block = static_cast<int32_t>(d.region_base.size());
    std::vector<int32_t> src(static_cast<size_t>(num_blocks)), dst(static_cast<size_t>(num_blocks));
    for (int64_t b = 0; b < num_blocks; ++b) {
        src[static_cast<size_t>(b)] = static_cast<int32_t>(b);
        dst[static_cast<size_t>(b)] = static_cast<int32_t>(num_blocks - 1 - b);  // scattered, as a real table is
    }
    std::atomic<bool> cancelled{false};
    std::vector<double> ms;
    int rc = 0;
    for (int64_t i = 0; i < repeats; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        Status s = (*transport)->pull(d, src, dst, cancelled);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        if (!s.ok()) {
            std::fprintf(stderr, "pull: %s\n", s.to_string().c_str());
            rc = 1;
            break;
        }
    }
    int64_t wrong = 0;
    for (int64_t r = 0; r < cache->num_regions() && rc == 0; ++r)
        for (int64_t b = 0; b < num_blocks; ++b) {
            const auto* p =
                static_cast<const uint8_t*>(cache->region_base(r)) + (num_blocks - 1 - b) * cache->region_bytes();
            for (int64_t i = 0; i < cache->region_bytes(); ++i) wrong += p[i] != pattern(r, b, i);
        }
    const char done = 1;
    write_all(to_child[1], &done, 1);
    waitpid(pid, nullptr, 0);
    if (rc != 0 || ms.empty()) return 1;
    std::sort(ms.begin(), ms.end());
    const double bytes = static_cast<double>(num_blocks * cache->region_bytes() * cache->num_regions());
    const double med = ms[ms.size() / 2];
    std::printf(
        "%s: %lld tokens, %lld blocks of %lld, %s: %.2f MiB (%lld regions x %lld B per block), %zu gets per block; "
        "pull "
        "median %.3f ms, min %.3f ms (%.2f GB/s median); %lld bytes wrong\n",
        config_dir.c_str(), static_cast<long long>(tokens), static_cast<long long>(num_blocks),
        static_cast<long long>(block_size), dtype_name.c_str(), bytes / (1 << 20),
        static_cast<long long>(cache->num_regions()), static_cast<long long>(cache->region_bytes()),
        static_cast<size_t>(cache->num_regions()), med, ms.front(), bytes / (med * 1e6), static_cast<long long>(wrong));
    return wrong == 0 ? 0 : 1;
}
