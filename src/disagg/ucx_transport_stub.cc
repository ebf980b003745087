// Built when UCX is absent (MOE_UCX=OFF or not found): the same functions, refusing.
#include "disagg/kv_transport.h"

namespace moe::disagg {

bool ucx_available() {
    return false;
}

StatusOr<std::unique_ptr<KvTransport>> make_ucx_transport(const KvCache&) {
    return unimplemented("this moeserve was built without UCX (cmake -DMOE_UCX=ON with libucx-dev installed)");
}

}  // namespace moe::disagg
