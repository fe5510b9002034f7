// The planner against xDiT's published latencies (docs/performance/flux.md
// and sana.md of xdit-project/xDiT): every row's prediction with the
// profiles under hardware/, printed as the table docs/planner.md records,
// and the best configuration among the published rows of each GPU count.

#include <cmath>
#include <cstdio>
#include <map>

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "planner/plan.h"

namespace ditserve::planner {
namespace {

struct Row {
  int gpus;
  const char* configuration;  // ShortName
  double published_s;
};

struct Table {
  const char* title;
  const char* preset;
  const char* hardware;  // under hardware/
  int size;
  int steps;
  std::vector<Row> rows;
};

const std::vector<Table>& Tables() {
  static const auto* tables = new std::vector<Table>{
      {"FLUX.1-dev 1024², 28 steps, 4×H100 NVLink, PyTorch (xDiT flux.md)",
       "flux-dev",
       "xdit-pytorch/h100-sxm.json",
       1024,
       28,
       {{1, "serial", 6.71}, {2, "u2", 4.38}, {2, "r2", 5.31}, {4, "u2 r2", 5.19}, {4, "u4", 4.24}, {4, "r4", 5.11}}},
      {"FLUX.1-dev 1024², 28 steps, 4×H100 NVLink, torch.compile (xDiT flux.md)",
       "flux-dev",
       "h100-sxm.json",
       1024,
       28,
       {{1, "serial", 4.30}, {2, "u2", 2.68}, {2, "r2", 2.60}, {4, "u2 r2", 1.80}, {4, "u4", 1.63}, {4, "r4", 1.98}}},
      {"SANA-1600M 4096², 20 steps, 8×A100 NVLink (xDiT sana.md)",
       "sana-1600m",
       "xdit-pytorch/a100-nvlink.json",
       4096,
       20,
       {{1, "serial", 17.551},
        {2, "pp2", 11.276},
        {2, "r2", 11.447},
        {2, "u2", 10.175},
        {2, "cfg2", 8.365},
        {4, "cfg2 pp2", 5.599},
        {4, "cfg2 r2", 5.702},
        {4, "cfg2 u2", 5.803},
        {8, "cfg2 pp4", 4.050},
        {8, "cfg2 pp2 r2", 4.091},
        {8, "cfg2 r4", 4.003},
        {8, "cfg2 pp2 u2", 4.201},
        {8, "cfg2 u2 r2", 3.991}}},
  };
  return *tables;
}

std::string SourceDir() {
  const char* dir = std::getenv("DITSERVE_SOURCE_DIR");
  return dir ? dir : ".";
}

// Predicted latency of every configuration for `gpus`, by ShortName.
std::map<std::string, double> Predicted(const Table& t, int gpus) {
  auto model = PresetModel(t.preset);
  auto hw = ReadHardwareProfile(SourceDir() + "/hardware/" + t.hardware);
  EXPECT_TRUE(model.ok() && hw.ok());
  PlanRequest r;
  r.height = r.width = t.size;
  r.steps = t.steps;
  r.cfg = model->default_cfg;
  auto plan = Plan(*model, *hw, r, gpus, 0);
  EXPECT_TRUE(plan.ok());
  std::map<std::string, double> out;
  for (const Prediction& p : plan->predictions) {
    if (p.invalid.empty()) out[ShortName(p.config)] = p.latency_seconds;
  }
  return out;
}

TEST(PlannerValidation, PublishedTables) {
  int rows = 0, within_20 = 0, best_right = 0, best_total = 0;
  for (const Table& t : Tables()) {
    std::printf("\n%s, profile hardware/%s\n\n| GPUs | configuration | published s | predicted s | error |\n|---|---|---|---|---|\n",
                t.title, t.hardware);
    std::map<int, std::map<std::string, double>> predicted;
    std::map<int, std::pair<std::string, double>> published_best, predicted_best;
    for (const Row& row : t.rows) {
      if (!predicted.count(row.gpus)) predicted[row.gpus] = Predicted(t, row.gpus);
      ASSERT_TRUE(predicted[row.gpus].count(row.configuration)) << row.configuration << " must be runnable";
      const double p = predicted[row.gpus][row.configuration];
      const double error = p / row.published_s - 1;
      std::printf("| %d | %s | %.2f | %.2f | %+.0f%% |\n", row.gpus, row.configuration, row.published_s, p, 100 * error);
      ++rows;
      within_20 += std::abs(error) <= 0.20;
      auto& pb = published_best[row.gpus];
      if (pb.first.empty() || row.published_s < pb.second) pb = {row.configuration, row.published_s};
      auto& qb = predicted_best[row.gpus];
      if (qb.first.empty() || p < qb.second) qb = {row.configuration, p};
    }
    for (const auto& [gpus, best] : published_best) {
      if (gpus == 1) continue;
      ++best_total;
      const bool same = predicted_best[gpus].first == best.first;
      best_right += same;
      std::printf("%d GPUs: published best %s, predicted best among the rows %s%s\n", gpus, best.first.c_str(),
                  predicted_best[gpus].first.c_str(), same ? "" : " (differs)");
    }
  }
  std::printf("\n%d of %d predictions within 20%%; the same best in %d of %d GPU counts\n", within_20, rows, best_right,
              best_total);
  // What the model achieves today (docs/planner.md): the bar only rises.
  EXPECT_GE(within_20, 16);
  EXPECT_GE(best_right, 6);
}

// The best configurations xDiT's sd3.md and hunyuandit.md name (8×A100
// NVLink; their charts give no numbers, so only the choice is checked; the
// step counts are the pipelines' defaults, the resolutions as the docs say).
TEST(PlannerValidation, NamedBestConfigurations) {
  struct Named {
    const char* preset;
    int size, steps, gpus;
    const char* best;
  };
  const std::vector<Named> named = {
      {"sd3-medium", 1024, 28, 2, "cfg2"},          {"sd3-medium", 1024, 28, 4, "cfg2 pp2"},
      {"sd3-medium", 1024, 28, 8, "cfg2 pp4"},      {"hunyuandit", 1024, 50, 2, "pp2"},
      {"hunyuandit", 1024, 50, 4, "cfg2 pp2"},      {"hunyuandit", 1024, 50, 8, "cfg2 pp4"},
      {"hunyuandit", 2048, 50, 8, "cfg2 pp2 r2"},
  };
  auto hw = ReadHardwareProfile(SourceDir() + "/hardware/xdit-pytorch/a100-nvlink.json");
  ASSERT_TRUE(hw.ok()) << hw.status();
  int same = 0;
  std::printf("\n| model | size | GPUs | published best | predicted best | predicted s |\n|---|---|---|---|---|---|\n");
  for (const Named& n : named) {
    auto model = PresetModel(n.preset);
    ASSERT_TRUE(model.ok());
    PlanRequest r;
    r.height = r.width = n.size;
    r.steps = n.steps;
    r.cfg = true;
    auto plan = Plan(*model, *hw, r, n.gpus, 0);
    ASSERT_TRUE(plan.ok());
    ASSERT_GE(plan->best, 0);
    const Prediction& best = plan->predictions[plan->best];
    same += ShortName(best.config) == n.best;
    std::printf("| %s | %d² | %d | %s | %s | %.2f |\n", n.preset, n.size, n.gpus, n.best,
                ShortName(best.config).c_str(), best.latency_seconds);
  }
  std::printf("\nthe same best in %d of %zu\n", same, named.size());
  EXPECT_GE(same, 5);  // today's figure (docs/planner.md)
}

}  // namespace
}  // namespace ditserve::planner
