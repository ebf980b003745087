#include "cli/backend_select.h"

#include "core/logging.h"
#include "moe/cpu_backend.h"
#include "moe/cuda_backend.h"

namespace moe::cli {

StatusOr<std::unique_ptr<Backend>> make_backend(const std::string& device, int cpu_threads, bool compress_weights,
                                                const std::string& cpu_matmul) {
    if (device == "cpu") {
        MOE_ASSIGN_OR_RETURN(const CpuMatmul matmul, parse_cpu_matmul(cpu_matmul));
        auto be =
            make_cpu_backend({.num_threads = cpu_threads, .compress_streamed = compress_weights, .matmul = matmul});
        log::backend().info("cpu backend: {} (--cpu-matmul {})", be->describe(), cpu_matmul);
        return be;
    }
    if (device.rfind("cuda", 0) != 0)
        return invalid_argument("--device must be cpu, cuda or cuda:N, got \"" + device + "\"");
    int index = 0;
    if (device.size() > 4) {
        if (device[4] != ':' || device.size() == 5 || device.size() > 8 ||
            device.find_first_not_of("0123456789", 5) != std::string::npos)
            return invalid_argument("--device must be cpu, cuda or cuda:N, got \"" + device + "\"");
        index = std::stoi(device.substr(5));
    }
#ifdef MOE_WITH_CUDA
    return make_cuda_backend(index);
#else
    (void)index;
    return unavailable("--device " + device +
                       ": this moeserve was built without CUDA (nvcc was not found; "
                       "configure with -DMOE_CUDA=ON)");
#endif
}

}  // namespace moe::cli
