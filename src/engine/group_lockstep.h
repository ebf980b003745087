// GroupLockstep: how the engines of an expert-parallel group stay in step. Every rank's engine
// loop makes one all_reduce per iteration of (local work?, local stop?); when any rank has
// work, every rank steps (an idle one with an empty batch, which still joins the model's
// collectives), so all ranks run the same number of steps; when any rank stops, all stop in
// the same iteration. A rank never sleeps while the group is busy.
#pragma once

#include "comm/communicator.h"
#include "moe/status.h"

namespace moe {

class GroupLockstep {
public:
    // `group` may be null or of size 1: inactive (the engine runs as a single process).
    explicit GroupLockstep(comm::Communicator* group)
        : group_(group != nullptr && group->size() > 1 ? group : nullptr) {}

    bool active() const { return group_ != nullptr; }

    struct Decision {
        bool step = false;  // some rank has work: every rank steps
        bool stop = false;  // some rank is stopping: every rank stops
    };
    // One collective (all_reduce_sum); its error (lost peer, timeout: UNAVAILABLE) ends the group.
    StatusOr<Decision> agree(bool local_work, bool local_stop) {
        int64_t v[2] = {local_work ? 1 : 0, local_stop ? 1 : 0};
        MOE_RETURN_IF_ERROR(group_->all_reduce_sum(std::span<int64_t>(v, 2)).with_context("engine lockstep"));
        busy_ = v[0] > 0;
        return Decision{.step = v[0] > 0, .stop = v[1] > 0};
    }
    // The last agree() found work somewhere: do not wait for local arrivals before the next.
    bool busy() const { return busy_; }

private:
    comm::Communicator* group_;
    bool busy_ = false;
};

}  // namespace moe
