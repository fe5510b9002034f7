#include "planner/plan.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ditserve::planner {

std::string ShortName(const parallel::ParallelConfig& c) {
  std::string s;
  const auto add = [&s](const char* name, int degree) {
    if (degree <= 1) return;
    absl::StrAppend(&s, s.empty() ? "" : " ", name, degree);
  };
  add("dp", c.data_parallel_degree);
  add("cfg", c.cfg_degree());
  add("pp", c.pipefusion_parallel_degree);
  add("u", c.ulysses_degree);
  add("r", c.ring_degree);
  return s.empty() ? "serial" : s;
}

absl::StatusOr<PlanResult> Plan(const ModelShape& model, const HardwareProfile& hw, const PlanRequest& request,
                                int gpus, double memory_cap_gib) {
  if (gpus < 1 || gpus > 1024) return absl::InvalidArgumentError(absl::StrCat("--gpus must be in [1, 1024], got ", gpus));
  if (request.nodes < 1 || gpus % request.nodes != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--nodes must be >= 1 and divide --gpus ", gpus, ", got ", request.nodes));
  }
  const int multiple = model.pixels_per_token();
  if (request.height < multiple || request.width < multiple || request.height > 16384 || request.width > 16384) {
    return absl::InvalidArgumentError(absl::StrCat("--height and --width must be in [", multiple, ", 16384], got ",
                                                   request.height, " x ", request.width));
  }
  if (request.steps < 1 || request.steps > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("--num_inference_steps must be in [1, 1000], got ", request.steps));
  }
  if (request.images < 1 || request.images > 64) {
    return absl::InvalidArgumentError(absl::StrCat("--images must be in [1, 64], got ", request.images));
  }
  PlanResult plan;
  plan.memory_cap_bytes = (memory_cap_gib > 0 ? memory_cap_gib : hw.device.memory_gib) * (1ull << 30);
  for (const parallel::ParallelConfig& c : parallel::EnumerateParallelConfigs(gpus)) {
    plan.predictions.push_back(Predict(model, hw, c, request));
  }
  std::stable_sort(plan.predictions.begin(), plan.predictions.end(), [](const Prediction& a, const Prediction& b) {
    if (a.invalid.empty() != b.invalid.empty()) return a.invalid.empty();
    return a.latency_seconds < b.latency_seconds;
  });
  for (size_t i = 0; i < plan.predictions.size(); ++i) {
    const Prediction& p = plan.predictions[i];
    if (p.invalid.empty() && p.peak_bytes <= plan.memory_cap_bytes) {
      plan.best = static_cast<int>(i);
      break;
    }
  }
  return plan;
}

std::string FormatPlanTable(const PlanResult& plan, int max_rows) {
  std::string out = absl::StrFormat("%-2s %-22s %9s %10s %8s %8s %12s %12s %12s %10s  %s\n", "", "configuration",
                                    "step s", "latency s", "text s", "vae s", "sp B/step", "pp B/step",
                                    "cfg B/step", "peak GiB", "note");
  int shown = 0;
  for (size_t i = 0; i < plan.predictions.size(); ++i) {
    if (max_rows > 0 && shown >= max_rows) break;
    const Prediction& p = plan.predictions[i];
    const auto per_step = [&p](std::initializer_list<const char*> names) {
      double sum = 0;
      for (const char* n : names) {
        auto it = p.bytes_per_step.find(n);
        if (it != p.bytes_per_step.end()) sum += it->second;
      }
      return sum;
    };
    std::string note = p.invalid;
    if (note.empty() && p.peak_bytes > plan.memory_cap_bytes) note = "over the memory cap";
    if (note.empty()) {
      ++shown;
      out += absl::StrFormat("%-2s %-22s %9.4f %10.3f %8.3f %8.3f %12.4g %12.4g %12.4g %10.2f  %s\n",
                             static_cast<int>(i) == plan.best ? "*" : "", ShortName(p.config), p.step_seconds,
                             p.latency_seconds, p.text_seconds, p.vae_seconds, per_step({"ulysses", "ring", "usp"}),
                             per_step({"pipefusion"}), per_step({"cfg"}), p.peak_bytes / (1ull << 30), note);
    } else if (max_rows <= 0) {
      out += absl::StrFormat("%-2s %-22s %9s %10s %8s %8s %12s %12s %12s %10s  %s\n", "", ShortName(p.config), "-", "-",
                             "-", "-", "-", "-", "-", "-", note);
    }
  }
  return out;
}

std::string PlanToJson(const PlanResult& plan, const ModelShape& model, const HardwareProfile& hw,
                       const PlanRequest& r) {
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < plan.predictions.size(); ++i) {
    const Prediction& p = plan.predictions[i];
    const parallel::ParallelConfig& c = p.config;
    rows.push_back({{"configuration", ShortName(c)},
                    {"data_parallel_degree", c.data_parallel_degree},
                    {"use_cfg_parallel", c.use_cfg_parallel},
                    {"pipefusion_parallel_degree", c.pipefusion_parallel_degree},
                    {"ulysses_degree", c.ulysses_degree},
                    {"ring_degree", c.ring_degree},
                    {"valid", p.invalid.empty()},
                    {"invalid", p.invalid},
                    {"fits", p.peak_bytes <= plan.memory_cap_bytes},
                    {"best", static_cast<int>(i) == plan.best},
                    {"step_seconds", p.step_seconds},
                    {"denoise_seconds", p.denoise_seconds},
                    {"text_seconds", p.text_seconds},
                    {"vae_seconds", p.vae_seconds},
                    {"latency_seconds", p.latency_seconds},
                    {"bytes_per_step", p.bytes_per_step},
                    {"bytes_sent", p.bytes_sent},
                    {"weights_bytes", p.weights_bytes},
                    {"activation_bytes", p.activation_bytes},
                    {"kv_buffer_bytes", p.kv_buffer_bytes},
                    {"vae_bytes", p.vae_bytes},
                    {"peak_bytes", p.peak_bytes}});
  }
  nlohmann::json root = {{"model", model.name},
                         {"hardware", hw.name},
                         {"hardware_source", hw.source},
                         {"height", r.height},
                         {"width", r.width},
                         {"num_inference_steps", r.steps},
                         {"images", r.images},
                         {"cfg", r.cfg},
                         {"memory_cap_bytes", plan.memory_cap_bytes},
                         {"configurations", rows}};
  return root.dump(2) + "\n";
}

std::string ExplainChoice(const PlanResult& plan) {
  if (plan.best < 0) return "no configuration fits under the memory cap";
  const Prediction& best = plan.predictions[plan.best];
  std::string s = absl::StrFormat("%s: predicted %.3f s (%.4f s per step, peak %.2f GiB per rank)",
                                  ShortName(best.config), best.latency_seconds, best.step_seconds,
                                  best.peak_bytes / (1ull << 30));
  for (size_t i = plan.best + 1; i < plan.predictions.size(); ++i) {
    const Prediction& next = plan.predictions[i];
    if (!next.invalid.empty()) break;
    absl::StrAppendFormat(&s, "; next %s %.3f s (%.1f%% slower)", ShortName(next.config), next.latency_seconds,
                          100 * (next.latency_seconds / best.latency_seconds - 1));
    break;
  }
  return s;
}

}  // namespace ditserve::planner
