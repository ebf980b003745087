// The build without MPI: the functions of mpi_comm.h exist and say MPI was left out.
#include <cstdlib>

#include "comm/mpi_comm.h"

namespace moe::comm {
namespace {
Status no_mpi() {
    return unimplemented(
        "this moeserve was built without MPI (configure found no MPI library, or MOE_MPI=OFF); install "
        "libopenmpi-dev and rebuild for --expert-parallel across processes");
}
}  // namespace

bool mpi_available() {
    return false;
}

bool launched_by_mpi() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
        if (std::getenv(v) != nullptr) return true;
    return false;
}

Status mpi_init(int*, char***) {
    return no_mpi();
}

void mpi_finalize(int) {}

void mpi_mark_broken() {}

StatusOr<std::unique_ptr<Communicator>> make_mpi_comm(const CommOptions&) {
    return no_mpi();
}

}  // namespace moe::comm
