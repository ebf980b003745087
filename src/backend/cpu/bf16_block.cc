#include "backend/cpu/bf16_block.h"

#include "backend/cpu/bf16_panels.h"
#include "backend/cpu/bf16_tiles.h"
#include "backend/cpu/fp8_block.h"
#include "backend/cpu/mxfp4_block.h"
#include "moe/check.h"

namespace moe::cpu {

void bf16_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin, int64_t n_end,
                float* y, int64_t ldy, bool accumulate, bool prefetch_following) {
    switch (w.layout) {
        case CpuLayout::kPanels12:
            bf16_panels12_block(x, ldx, rows, static_cast<const uint8_t*>(w.data), n_begin, n_end, y, ldy, accumulate,
                                prefetch_following);
            return;
        case CpuLayout::kPanels:
            bf16_panel_block(x, ldx, rows, static_cast<const uint16_t*>(w.data), w.n, w.k, n_begin, n_end, y, ldy,
                             accumulate, prefetch_following);
            return;
        case CpuLayout::kFp8Block:
            fp8_block(x, ldx, rows, w, n_begin, n_end, y, ldy, accumulate);
            return;
        case CpuLayout::kMxfp4:
            mxfp4_block(x, ldx, rows, w, n_begin, n_end, y, ldy, accumulate);
            return;
        case CpuLayout::kRowMajor:
            bf16_dot_block(x, ldx, rows, static_cast<const uint16_t*>(w.data), w.k, n_begin, n_end, y, ldy, accumulate);
            return;
    }
}

}  // namespace moe::cpu
