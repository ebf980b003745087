// Fuzz target: bytes as a whole .safetensors file (header length, JSON header, data).
// Every tensor handed out must lie inside the file or owned memory, aligned and of the size
// its shape claims.
#include <cstdint>
#include <cstring>

#include "fuzz_util.h"
#include "model/safetensors.h"
#include "moe/dtype.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    return moe::fuzz::quiet_logs();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto path = moe::fuzz::scratch_dir() / "model.safetensors";
    moe::fuzz::write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
    auto f = moe::SafetensorsFile::open(path);
    if (!f.ok()) return 0;
    volatile uint8_t sink = 0;
    for (const auto& [name, t] : (*f)->tensors()) {
        uint64_t n = moe::dtype_size(t.dtype);
        for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
        if (n != t.nbytes) __builtin_trap();
        if (t.nbytes > 0 && reinterpret_cast<uintptr_t>(t.data) % moe::dtype_size(t.dtype) != 0) __builtin_trap();
        // Touch the first and last byte: ASan reports anything outside the mapping or copy.
        if (t.nbytes > 0) {
            sink = sink + static_cast<const uint8_t*>(t.data)[0];
            sink = sink + static_cast<const uint8_t*>(t.data)[t.nbytes - 1];
        }
    }
    (void)sink;
    return 0;
}
