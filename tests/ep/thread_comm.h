// ThreadComm: an in-process Communicator group for tests, N ranks as N threads of one process
// exchanging through shared memory. It keeps the Communicator contract (lockstep, a timeout per
// collective, abort ends the group, counts checked against what peers announce), so the
// expert-parallel path runs and is compared with the single-process model without MPI.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "comm/communicator.h"

namespace moe::testing {

// One group of `size` ranks; element r of the result is rank r's handle (one thread each).
std::vector<std::unique_ptr<comm::Communicator>> make_thread_comms(
    int size, std::chrono::milliseconds timeout = std::chrono::milliseconds(20000));

}  // namespace moe::testing
