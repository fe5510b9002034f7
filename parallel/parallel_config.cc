#include "parallel/parallel_config.h"

#include "absl/strings/str_cat.h"

namespace ditserve::parallel {

long long ParallelConfig::world_size() const {
  return static_cast<long long>(data_parallel_degree) * cfg_degree() *
         pipefusion_parallel_degree * ulysses_degree * ring_degree;
}

std::string ParallelConfig::ToString() const {
  return absl::StrCat("dp=", data_parallel_degree, " cfg=", cfg_degree(),
                      " pp=", pipefusion_parallel_degree, " ulysses=", ulysses_degree,
                      " ring=", ring_degree);
}

absl::Status Validate(const ParallelConfig& config, int world_size) {
  const struct {
    const char* flag;
    int value;
  } degrees[] = {
      {"--data_parallel_degree", config.data_parallel_degree},
      {"--pipefusion_parallel_degree", config.pipefusion_parallel_degree},
      {"--ulysses_degree", config.ulysses_degree},
      {"--ring_degree", config.ring_degree},
  };
  for (const auto& d : degrees) {
    if (d.value < 1) {
      return absl::InvalidArgumentError(absl::StrCat(d.flag, " must be >= 1, got ", d.value));
    }
  }
  if (world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("the world size must be >= 1, got ", world_size));
  }
  if (config.world_size() != world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the product of the parallel degrees (dp ", config.data_parallel_degree, " x cfg ",
        config.cfg_degree(), " x pp ", config.pipefusion_parallel_degree, " x ulysses ",
        config.ulysses_degree, " x ring ", config.ring_degree, " = ", config.world_size(),
        ") must equal the world size ", world_size));
  }
  return absl::OkStatus();
}

std::vector<ParallelConfig> EnumerateParallelConfigs(int world_size) {
  std::vector<ParallelConfig> out;
  if (world_size < 1) return out;
  for (int cfg = 1; cfg <= 2; ++cfg) {
    for (int dp = 1; dp <= world_size; ++dp) {
      for (int pp = 1; pp <= world_size; ++pp) {
        for (int u = 1; u <= world_size; ++u) {
          for (int r = 1; r <= world_size; ++r) {
            ParallelConfig c{dp, cfg == 2, pp, u, r};
            if (c.world_size() == world_size) out.push_back(c);
          }
        }
      }
    }
  }
  return out;
}

}  // namespace ditserve::parallel
