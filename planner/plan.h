#pragma once

// Every valid hybrid configuration of a gang for one request, predicted by
// the cost model and ranked: the planner behind ditserve-plan and
// --parallel auto. Torch-free.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "planner/cost_model.h"

namespace ditserve::planner {

struct PlanResult {
  // Every configuration of the world size: the runnable ones by predicted
  // latency (fastest first), then the ones that cannot run.
  std::vector<Prediction> predictions;
  int best = -1;  // index of the fastest that fits under the memory cap; -1: none
  double memory_cap_bytes = 0;
};

// `memory_cap_gib` ≤ 0: the device's memory. INVALID_ARGUMENT for gpus < 1
// or > 1024, nodes that do not divide gpus, a request outside its ranges.
absl::StatusOr<PlanResult> Plan(const ModelShape& model, const HardwareProfile& hardware, const PlanRequest& request,
                                int gpus, double memory_cap_gib);

// "dp1 cfg2 pp2 u1 r2" style short name of a configuration.
std::string ShortName(const parallel::ParallelConfig& config);

// A fixed-width table of every prediction (the best marked), and the same
// as JSON for tools.
std::string FormatPlanTable(const PlanResult& plan, int max_rows);
std::string PlanToJson(const PlanResult& plan, const ModelShape& model, const HardwareProfile& hardware,
                       const PlanRequest& request);

// One line on why the best was chosen: its prediction, and the runner-up's.
std::string ExplainChoice(const PlanResult& plan);

}  // namespace ditserve::planner
