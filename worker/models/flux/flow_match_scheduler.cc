#include "worker/models/flux/flow_match_scheduler.h"

#include <ATen/ATen.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ditserve::worker::flux {

absl::StatusOr<FlowMatchSchedulerConfig> ParseFlowMatchSchedulerConfig(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("scheduler config: not a JSON object");
  FlowMatchSchedulerConfig c;
  const auto number = [&](const char* key, double* out, double lo) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    if (!j[key].is_number() || j[key].get<double>() < lo) {
      return absl::InvalidArgumentError(absl::StrCat("scheduler config: ", key, " must be a number >= ", lo,
                                                     ", got ", j[key].dump()));
    }
    *out = j[key].get<double>();
    return absl::OkStatus();
  };
  double train = c.num_train_timesteps, base_len = c.base_image_seq_len, max_len = c.max_image_seq_len;
  for (auto [key, out, lo] : {std::tuple{"num_train_timesteps", &train, 1.0}, {"shift", &c.shift, 1e-6},
                              {"base_shift", &c.base_shift, -100.0}, {"max_shift", &c.max_shift, -100.0},
                              {"base_image_seq_len", &base_len, 1.0}, {"max_image_seq_len", &max_len, 1.0}}) {
    if (absl::Status s = number(key, out, lo); !s.ok()) return s;
  }
  c.num_train_timesteps = static_cast<int>(train);
  c.base_image_seq_len = static_cast<int>(base_len);
  c.max_image_seq_len = static_cast<int>(max_len);
  if (c.max_image_seq_len <= c.base_image_seq_len) {
    return absl::InvalidArgumentError("scheduler config: max_image_seq_len must exceed base_image_seq_len");
  }
  if (j.contains("use_dynamic_shifting")) c.use_dynamic_shifting = j["use_dynamic_shifting"].get<bool>();
  for (const char* flag : {"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas",
                           "stochastic_sampling"}) {
    if (j.contains(flag) && j[flag].is_boolean() && j[flag].get<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat("scheduler config: ", flag, " is not supported"));
    }
  }
  if (j.contains("shift_terminal") && !j["shift_terminal"].is_null()) {
    return absl::InvalidArgumentError("scheduler config: shift_terminal is not supported");
  }
  if (j.contains("time_shift_type") && j["time_shift_type"] != "exponential") {
    return absl::InvalidArgumentError(absl::StrCat("scheduler config: time_shift_type ",
                                                   j["time_shift_type"].dump(), " is not supported"));
  }
  return c;
}

double FluxMu(int64_t image_seq_len, const FlowMatchSchedulerConfig& c) {
  const double m = (c.max_shift - c.base_shift) / (c.max_image_seq_len - c.base_image_seq_len);
  const double b = c.base_shift - m * c.base_image_seq_len;
  return static_cast<double>(image_seq_len) * m + b;
}

std::vector<float> FluxSigmas(int num_steps, int64_t image_seq_len, const FlowMatchSchedulerConfig& c) {
  std::vector<float> sigmas;
  if (num_steps < 1) return sigmas;
  const double end = 1.0 / num_steps;
  const double exp_mu = std::exp(FluxMu(image_seq_len, c));
  for (int i = 0; i < num_steps; ++i) {
    // np.linspace in float64, then cast to float32.
    const double t = num_steps == 1 ? 1.0 : 1.0 + (end - 1.0) * i / (num_steps - 1);
    const float s = static_cast<float>(t);
    float shifted;
    if (c.use_dynamic_shifting) {
      shifted = static_cast<float>(exp_mu) / (static_cast<float>(exp_mu) + (1.0f / s - 1.0f));
    } else {
      const float shift = static_cast<float>(c.shift);
      shifted = shift * s / (1.0f + (shift - 1.0f) * s);
    }
    sigmas.push_back(shifted);
  }
  sigmas.push_back(0.0f);
  return sigmas;
}

std::vector<float> DefaultScheduleSigmas(int num_steps, int64_t image_seq_len, const FlowMatchSchedulerConfig& c) {
  std::vector<float> sigmas;
  if (num_steps < 1) return sigmas;
  const int N = c.num_train_timesteps;
  // The training schedule's ends, in float32 as the scheduler's __init__.
  const auto train_sigma = [&](int t) {
    const float s = static_cast<float>(t) / static_cast<float>(N);
    if (c.use_dynamic_shifting) return s;
    const float shift = static_cast<float>(c.shift);
    return shift * s / (1.0f + (shift - 1.0f) * s);
  };
  const double start = static_cast<double>(train_sigma(N)) * N, stop = static_cast<double>(train_sigma(1)) * N;
  const double exp_mu = std::exp(FluxMu(image_seq_len, c));
  for (int i = 0; i < num_steps; ++i) {
    // np.linspace: i·step + start, the last value exactly `stop`.
    double t = start;
    if (num_steps > 1) t = i == num_steps - 1 ? stop : i * ((stop - start) / (num_steps - 1)) + start;
    const double s = t / N;
    const double shifted = c.use_dynamic_shifting ? exp_mu / (exp_mu + (1.0 / s - 1.0))
                                                  : c.shift * s / (1.0 + (c.shift - 1.0) * s);
    sigmas.push_back(static_cast<float>(shifted));
  }
  sigmas.push_back(0.0f);
  return sigmas;
}

at::Tensor FlowMatchEulerStep(const at::Tensor& sample, const at::Tensor& velocity, float sigma,
                              float sigma_next) {
  const at::Tensor dt = at::scalar_tensor(sigma_next, at::kFloat) - at::scalar_tensor(sigma, at::kFloat);
  return (sample.to(at::kFloat) + dt * velocity).to(velocity.scalar_type());
}

at::Tensor PackLatents(const at::Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  return x.view({B, C, H / 2, 2, W / 2, 2}).permute({0, 2, 4, 1, 3, 5}).reshape({B, (H / 2) * (W / 2), C * 4});
}

at::Tensor UnpackLatents(const at::Tensor& t, int64_t H, int64_t W) {
  const int64_t B = t.size(0), C4 = t.size(2);
  return t.view({B, H / 2, W / 2, C4 / 4, 2, 2}).permute({0, 3, 1, 4, 2, 5}).reshape({B, C4 / 4, H, W});
}

at::Tensor LatentImageIds(int64_t H, int64_t W) {
  at::Tensor ids = at::zeros({H / 2, W / 2, 3}, at::kFloat);
  ids.select(2, 1).add_(at::arange(H / 2, at::kFloat).unsqueeze(1));
  ids.select(2, 2).add_(at::arange(W / 2, at::kFloat).unsqueeze(0));
  return ids.reshape({(H / 2) * (W / 2), 3});
}

}  // namespace ditserve::worker::flux
