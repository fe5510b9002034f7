#pragma once

// HunyuanDiT's long skip connections as diffusers runs them: over N blocks
// (N even), block g < N/2 − 1 pushes its output on a stack and block
// g > N/2 pops one (block i takes block N−1−i's output). Torch-free: the
// transformer, the PipeFusion boundary and the planner share it.

#include <algorithm>

namespace ditserve::core {

// Activations on the stack when block `block` of `num_blocks` starts
// (block = num_blocks: after the last).
inline int LongSkipsBefore(int num_blocks, int block) {
  const int half = num_blocks / 2;
  const int pushes = std::max(0, std::min(block, half - 1));
  const int pops = std::max(0, block - half - 1);
  return pushes - pops;
}

}  // namespace ditserve::core
