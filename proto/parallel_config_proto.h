#pragma once

// The wire form of the gang's parallel degrees (ditserve.v1.ParallelConfig:
// in the worker's Hello and in GetInfo) and parallel::ParallelConfig, both
// ways. Header-only: both proto libraries use it.

#include "ditserve/v1/generation.pb.h"
#include "parallel/parallel_config.h"

namespace ditserve::proto {

// Every degree, and world_size as their product.
inline void ToProto(const parallel::ParallelConfig& config, v1::ParallelConfig* out) {
  out->set_world_size(static_cast<int>(config.world_size()));
  out->set_data_parallel_degree(config.data_parallel_degree);
  out->set_use_cfg_parallel(config.use_cfg_parallel);
  out->set_pipefusion_parallel_degree(config.pipefusion_parallel_degree);
  out->set_ulysses_degree(config.ulysses_degree);
  out->set_ring_degree(config.ring_degree);
}

// A degree left unset (0, an older peer) reads as 1.
inline parallel::ParallelConfig FromProto(const v1::ParallelConfig& p) {
  const auto degree = [](int d) { return d < 1 ? 1 : d; };
  parallel::ParallelConfig c;
  c.data_parallel_degree = degree(p.data_parallel_degree());
  c.use_cfg_parallel = p.use_cfg_parallel();
  c.pipefusion_parallel_degree = degree(p.pipefusion_parallel_degree());
  c.ulysses_degree = degree(p.ulysses_degree());
  c.ring_degree = degree(p.ring_degree());
  return c;
}

}  // namespace ditserve::proto
