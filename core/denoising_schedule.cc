#include "core/denoising_schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ditserve::core {
namespace {

using nlohmann::json;

// Python's json writes -Infinity, Infinity and NaN bare (diffusers' configs
// hold "lambda_min_clipped": -Infinity); JSON has no such numbers. They
// become strings here, outside string literals, and NumberField reads them.
std::string QuoteNonFiniteNumbers(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) {
        out += text[++i];
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    bool replaced = false;
    for (const char* word : {"-Infinity", "Infinity", "NaN"}) {
      const size_t n = std::char_traits<char>::length(word);
      if (text.compare(i, n, word) == 0) {
        absl::StrAppend(&out, "\"", word, "\"");
        i += n - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += c;
  }
  return out;
}

absl::Status FieldError(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("scheduler_config.json: ", field, " ", what));
}

// Reads `field` into `out` when present and not null.
absl::Status NumberField(const json& j, const std::string& field, double& out) {
  if (!j.contains(field) || j[field].is_null()) return absl::OkStatus();
  const json& v = j[field];
  if (v.is_number()) {
    out = v.get<double>();
  } else if (v.is_string() && v.get<std::string>() == "-Infinity") {
    out = -std::numeric_limits<double>::infinity();
  } else if (v.is_string() && v.get<std::string>() == "Infinity") {
    out = std::numeric_limits<double>::infinity();
  } else {
    return FieldError(field, "must be a number");
  }
  return absl::OkStatus();
}
absl::Status IntField(const json& j, const std::string& field, int& out) {
  if (!j.contains(field) || j[field].is_null()) return absl::OkStatus();
  if (!j[field].is_number_integer()) return FieldError(field, "must be an integer");
  out = j[field].get<int>();
  return absl::OkStatus();
}
absl::Status BoolField(const json& j, const std::string& field, bool& out) {
  if (!j.contains(field) || j[field].is_null()) return absl::OkStatus();
  if (!j[field].is_boolean()) return FieldError(field, "must be true or false");
  out = j[field].get<bool>();
  return absl::OkStatus();
}
absl::Status StringField(const json& j, const std::string& field, std::string& out,
                         const std::vector<std::string>& accepted) {
  if (!j.contains(field) || j[field].is_null()) return absl::OkStatus();
  if (!j[field].is_string()) return FieldError(field, "must be a string");
  out = j[field].get<std::string>();
  if (std::find(accepted.begin(), accepted.end(), out) == accepted.end()) {
    return FieldError(field, absl::StrCat("\"", out, "\" is not supported (supported: ", absl::StrJoin(accepted, ", "), ")"));
  }
  return absl::OkStatus();
}
// A field that must be absent, null or `expected` (an option not written).
absl::Status Unsupported(const json& j, const std::string& field, const json& expected) {
  if (!j.contains(field) || j[field].is_null() || j[field] == expected) return absl::OkStatus();
  return FieldError(field, absl::StrCat("= ", j[field].dump(), " is not supported (only ", expected.dump(), ")"));
}

#define DITSERVE_FIELD(expr)          \
  if (absl::Status s = (expr); !s.ok()) { \
    return s;                         \
  }

// torch.linspace(start, end, n, dtype=float32) on CPU: the step in float,
// the first half counted from start, the second from end.
std::vector<float> LinspaceF32(double start_d, double end_d, int n) {
  const float start = static_cast<float>(start_d), end = static_cast<float>(end_d);
  std::vector<float> v(n);
  if (n == 1) {
    v[0] = start;
    return v;
  }
  const float step = (end - start) / static_cast<float>(n - 1);
  const int halfway = n / 2;
  for (int i = 0; i < n; ++i) {
    v[i] = i < halfway ? start + step * static_cast<float>(i) : end - step * static_cast<float>(n - 1 - i);
  }
  return v;
}

// np.linspace(start, stop, num) in float64.
std::vector<double> Linspace(double start, double stop, int num) {
  std::vector<double> v(num);
  if (num == 1) {
    v[0] = start;
    return v;
  }
  const double step = (stop - start) / (num - 1);
  for (int i = 0; i < num; ++i) v[i] = i * step + start;
  v[num - 1] = stop;
  return v;
}

// np.arange(start, 0, -step) for start > 0, step > 0.
std::vector<double> ArangeDown(double start, double step) {
  std::vector<double> v;
  const int64_t n = static_cast<int64_t>(std::ceil(start / step));
  for (int64_t k = 0; k < n; ++k) v.push_back(start + k * -step);
  return v;
}

// np.round: halves to even (the default floating-point rounding mode).
double RoundHalfEven(double x) { return std::nearbyint(x); }

absl::Status CheckSpacing(const DiscreteSchedulerConfig& c, int steps) {
  if (steps < 1) return absl::InvalidArgumentError("num_inference_steps must be at least 1");
  if (steps > c.num_train_timesteps) {
    return absl::InvalidArgumentError(absl::StrCat("num_inference_steps ", steps, " exceeds the scheduler's ",
                                                   c.num_train_timesteps, " training timesteps"));
  }
  return absl::OkStatus();
}

// The noise level sigma = sqrt((1 − ᾱ)/ᾱ) of every training timestep, in
// float32 as the schedulers compute it.
std::vector<float> TrainingSigmas(const std::vector<float>& ac) {
  std::vector<float> s(ac.size());
  for (size_t i = 0; i < ac.size(); ++i) s[i] = std::sqrt((1.0f - ac[i]) / ac[i]);
  return s;
}

float LastSigma(const DiscreteSchedulerConfig& c, const std::vector<float>& ac) {
  return c.final_sigmas_type == "sigma_min" ? std::sqrt((1.0f - ac[0]) / ac[0]) : 0.0f;
}

absl::StatusOr<DenoisingSchedule> DpmSolverSchedule(const DiscreteSchedulerConfig& c, int n) {
  const std::vector<float> ac = AlphasCumprod(c);
  const int N = c.num_train_timesteps;
  // lambda_min_clipped: the timesteps whose log-SNR lies below it are cut.
  int clipped = 0;
  for (int t = N - 1; t >= 0; --t) {
    const double lambda = std::log(std::sqrt(static_cast<double>(ac[t]))) - std::log(std::sqrt(1.0 - ac[t]));
    if (lambda < c.lambda_min_clipped) ++clipped;
  }
  const int last = N - clipped;
  std::vector<int64_t> timesteps;
  if (c.timestep_spacing == "linspace") {
    const std::vector<double> v = Linspace(0, last - 1, n + 1);
    for (int i = n; i >= 1; --i) timesteps.push_back(static_cast<int64_t>(RoundHalfEven(v[i])));
  } else if (c.timestep_spacing == "leading") {
    const int ratio = last / (n + 1);
    if (ratio < 1) {
      return absl::InvalidArgumentError(absl::StrCat("leading spacing places at most ", last - 1, " steps"));
    }
    for (int i = n; i >= 1; --i) timesteps.push_back(static_cast<int64_t>(i) * ratio + c.steps_offset);
  } else {
    for (double t : ArangeDown(last, static_cast<double>(N) / n)) {
      timesteps.push_back(static_cast<int64_t>(RoundHalfEven(t)) - 1);
    }
  }
  if (static_cast<int>(timesteps.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat("the ", c.timestep_spacing, " spacing gives ", timesteps.size(),
                                                   " timesteps for ", n, " steps"));
  }
  const std::vector<float> train = TrainingSigmas(ac);
  std::vector<double> sigma;
  for (int64_t t : timesteps) {
    if (t < 0 || t >= N) return absl::InvalidArgumentError(absl::StrCat("timestep ", t, " is outside [0, ", N, ")"));
    sigma.push_back(train[t]);
  }
  sigma.push_back(LastSigma(c, ac));
  const auto alpha_of = [](double s) { return 1.0 / std::sqrt(s * s + 1.0); };
  const auto lambda_of = [&](double s) {
    const double a = alpha_of(s);
    return std::log(a) - std::log(s * a);
  };
  DenoisingSchedule d;
  d.scheduler = c.class_name;
  for (int i = 0; i < n; ++i) {
    d.model_times.push_back(static_cast<double>(timesteps[i]));
    d.input_scales.push_back(1.0);
    StepUpdate u;
    const double s0 = sigma[i], st = sigma[i + 1];
    const double alpha_s0 = alpha_of(s0), sigma_s0 = s0 * alpha_s0;
    const double alpha_t = alpha_of(st), sigma_t = st * alpha_t;
    // The data prediction m_i (convert_model_output).
    if (c.prediction_type == "epsilon") {
      u.history_sample = 1.0 / alpha_s0;
      u.history_output = -sigma_s0 / alpha_s0;
    } else if (c.prediction_type == "v_prediction") {
      u.history_sample = alpha_s0;
      u.history_output = -sigma_s0;
    } else {
      u.history_output = 1.0;
    }
    const bool lower_order_final =
        i == n - 1 && (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type == "zero");
    const double h = lambda_of(st) - lambda_of(s0);  // +inf at a final sigma of 0
    const double phi = alpha_t * (std::exp(-h) - 1.0);
    u.sample = sigma_t / sigma_s0;
    if (c.solver_order == 1 || i < 1 || lower_order_final) {
      u.history = {-phi};
    } else {
      const double h0 = lambda_of(s0) - lambda_of(sigma[i - 1]);
      const double r0 = h0 / h;
      // x' = A·x − φ·D0 + C·D1, D1 = (m0 − m1)/r0.
      const double C = c.solver_type == "midpoint" ? -0.5 * phi : alpha_t * ((std::exp(-h) - 1.0) / h + 1.0);
      u.history = {-phi + C / r0, -C / r0};
    }
    d.updates.push_back(u);
  }
  return d;
}

absl::StatusOr<DenoisingSchedule> EulerSchedule(const DiscreteSchedulerConfig& c, int n) {
  const std::vector<float> ac = AlphasCumprod(c);
  const int N = c.num_train_timesteps;
  std::vector<float> timesteps;
  if (c.timestep_spacing == "linspace") {
    const std::vector<double> v = Linspace(0, N - 1, n);
    for (int i = n - 1; i >= 0; --i) timesteps.push_back(static_cast<float>(v[i]));
  } else if (c.timestep_spacing == "leading") {
    const int ratio = N / n;
    for (int i = n - 1; i >= 0; --i) timesteps.push_back(static_cast<float>(i * ratio) + c.steps_offset);
  } else {
    for (double t : ArangeDown(N, static_cast<double>(N) / n)) timesteps.push_back(static_cast<float>(RoundHalfEven(t)) - 1);
  }
  if (static_cast<int>(timesteps.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat("the ", c.timestep_spacing, " spacing gives ", timesteps.size(),
                                                   " timesteps for ", n, " steps"));
  }
  const std::vector<float> train = TrainingSigmas(ac);
  std::vector<float> sigma;
  for (float t : timesteps) {
    // np.interp over arange(N).
    const double tt = std::clamp(static_cast<double>(t), 0.0, static_cast<double>(N - 1));
    const int lo = std::min(static_cast<int>(std::floor(tt)), N - 1), hi = std::min(lo + 1, N - 1);
    const double frac = tt - lo;
    sigma.push_back(static_cast<float>(hi == lo ? train[lo] : train[lo] + (train[hi] - static_cast<double>(train[lo])) * frac));
  }
  sigma.push_back(LastSigma(c, ac));
  DenoisingSchedule d;
  d.scheduler = c.class_name;
  const double max_sigma = *std::max_element(sigma.begin(), sigma.end());
  d.init_noise_sigma = c.timestep_spacing == "leading" ? std::sqrt(max_sigma * max_sigma + 1.0) : max_sigma;
  for (int i = 0; i < n; ++i) {
    const double s = sigma[i];
    const double dt = static_cast<double>(sigma[i + 1]) - s;
    d.model_times.push_back(timesteps[i]);
    d.input_scales.push_back(1.0 / std::sqrt(s * s + 1.0));
    // x' = x + dt·derivative, derivative = (x − x0)/sigma.
    StepUpdate u;
    if (c.prediction_type == "epsilon") {
      u.output = dt;
    } else if (c.prediction_type == "v_prediction") {
      u.sample = 1.0 + dt * s / (s * s + 1.0);
      u.output = dt / std::sqrt(s * s + 1.0);
    } else {
      u.sample = 1.0 + dt / s;
      u.output = -dt / s;
    }
    d.updates.push_back(u);
  }
  return d;
}

// DDIM's and DDPM's set_timesteps: n integer timesteps, descending.
absl::StatusOr<std::vector<int64_t>> IntegerTimesteps(const DiscreteSchedulerConfig& c, int n) {
  const int N = c.num_train_timesteps;
  std::vector<int64_t> timesteps;
  if (c.timestep_spacing == "linspace") {
    const std::vector<double> v = Linspace(0, N - 1, n);
    for (int i = n - 1; i >= 0; --i) timesteps.push_back(static_cast<int64_t>(RoundHalfEven(v[i])));
  } else if (c.timestep_spacing == "leading") {
    const int ratio = N / n;
    for (int i = n - 1; i >= 0; --i) timesteps.push_back(static_cast<int64_t>(i) * ratio + c.steps_offset);
  } else {
    for (double t : ArangeDown(N, static_cast<double>(N) / n)) {
      timesteps.push_back(static_cast<int64_t>(RoundHalfEven(t)) - 1);
    }
  }
  if (static_cast<int>(timesteps.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat("the ", c.timestep_spacing, " spacing gives ", timesteps.size(),
                                                   " timesteps for ", n, " steps"));
  }
  return timesteps;
}

absl::StatusOr<DenoisingSchedule> DdimSchedule(const DiscreteSchedulerConfig& c, int n) {
  const std::vector<float> ac = AlphasCumprod(c);
  const int N = c.num_train_timesteps;
  auto spaced = IntegerTimesteps(c, n);
  if (!spaced.ok()) return spaced.status();
  const std::vector<int64_t>& timesteps = *spaced;
  const double final_alpha = c.set_alpha_to_one ? 1.0 : ac[0];
  DenoisingSchedule d;
  d.scheduler = c.class_name;
  for (int64_t t : timesteps) {
    if (t < 0 || t >= N) return absl::InvalidArgumentError(absl::StrCat("timestep ", t, " is outside [0, ", N, ")"));
    const int64_t prev = t - N / n;
    const double a = ac[t], ap = prev >= 0 ? ac[prev] : final_alpha;
    const double sa = std::sqrt(a), sb = std::sqrt(1.0 - a), sap = std::sqrt(ap), sbp = std::sqrt(1.0 - ap);
    d.model_times.push_back(static_cast<double>(t));
    d.input_scales.push_back(1.0);
    // x' = sqrt(ᾱ_prev)·clip(x0) + sqrt(1 − ᾱ_prev)·ε.
    StepUpdate u;
    u.clip_range = c.clip_sample ? c.clip_sample_range : 0.0;
    u.history = {sap};
    if (c.prediction_type == "epsilon") {
      u.history_sample = 1.0 / sa;
      u.history_output = -sb / sa;
      u.sample = 0.0;
      u.output = sbp;
    } else if (c.prediction_type == "v_prediction") {
      u.history_sample = sa;
      u.history_output = -sb;
      u.sample = sbp * sb;
      u.output = sbp * sa;
    } else {
      u.history_output = 1.0;
      u.sample = sbp / sb;
      u.output = -sbp * sa / sb;
    }
    d.updates.push_back(u);
  }
  return d;
}

absl::StatusOr<DenoisingSchedule> DdpmSchedule(const DiscreteSchedulerConfig& c, int n) {
  const std::vector<float> ac = AlphasCumprod(c);
  const int N = c.num_train_timesteps;
  auto spaced = IntegerTimesteps(c, n);
  if (!spaced.ok()) return spaced.status();
  const std::vector<int64_t>& timesteps = *spaced;
  DenoisingSchedule d;
  d.scheduler = c.class_name;
  for (int i = 0; i < n; ++i) {
    const int64_t t = timesteps[i];
    if (t < 0 || t >= N) return absl::InvalidArgumentError(absl::StrCat("timestep ", t, " is outside [0, ", N, ")"));
    // previous_timestep: the next one in the list, -1 after the last.
    const int64_t prev = i + 1 < n ? timesteps[i + 1] : -1;
    const double a = ac[t], ap = prev >= 0 ? ac[prev] : 1.0;
    const double beta = 1.0 - a, beta_prev = 1.0 - ap;
    const double alpha_t = a / ap, beta_t = 1.0 - alpha_t;
    d.model_times.push_back(static_cast<double>(t));
    d.input_scales.push_back(1.0);
    // x' = c0·clip(x0) + cs·x + σ·z.
    StepUpdate u;
    u.clip_range = c.clip_sample ? c.clip_sample_range : 0.0;
    u.history = {std::sqrt(ap) * beta_t / beta};
    u.sample = std::sqrt(alpha_t) * beta_prev / beta;
    if (c.prediction_type == "epsilon") {
      u.history_sample = 1.0 / std::sqrt(a);
      u.history_output = -std::sqrt(beta) / std::sqrt(a);
    } else if (c.prediction_type == "v_prediction") {
      u.history_sample = std::sqrt(a);
      u.history_output = -std::sqrt(beta);
    } else {
      u.history_output = 1.0;
    }
    if (t > 0) {
      const double variance = std::max(beta_prev / beta * beta_t, 1e-20);
      // fixed_small_log's std is exp(0.5·log variance): the same value.
      u.noise = c.variance_type == "fixed_large" ? std::sqrt(beta_t) : std::sqrt(variance);
    }
    d.updates.push_back(u);
  }
  return d;
}

}  // namespace

bool DenoisingSchedule::stochastic() const {
  for (const StepUpdate& u : updates) {
    if (u.noise != 0.0) return true;
  }
  return false;
}

int DenoisingSchedule::history_depth() const {
  size_t depth = 0;
  for (const StepUpdate& u : updates) depth = std::max(depth, u.history.size());
  return static_cast<int>(depth);
}

const std::vector<std::string>& SupportedDiscreteSchedulers() {
  static const auto* names =
      new std::vector<std::string>{"DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "DDIMScheduler",
                                   "DDPMScheduler"};
  return *names;
}

absl::StatusOr<DiscreteSchedulerConfig> ParseDiscreteSchedulerConfig(const std::string& json_text) {
  json j;
  try {
    j = json::parse(QuoteNonFiniteNumbers(json_text));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("scheduler_config.json is not JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError("scheduler_config.json must hold an object");
  DiscreteSchedulerConfig c;
  if (!j.contains("_class_name") || !j["_class_name"].is_string()) return FieldError("_class_name", "is missing");
  c.class_name = j["_class_name"].get<std::string>();
  const auto& supported = SupportedDiscreteSchedulers();
  if (std::find(supported.begin(), supported.end(), c.class_name) == supported.end()) {
    return FieldError("_class_name", absl::StrCat("\"", c.class_name, "\" is not supported (supported: ",
                                                  absl::StrJoin(supported, ", "), ", FlowMatchEulerDiscreteScheduler)"));
  }
  const bool dpm = c.class_name == "DPMSolverMultistepScheduler";
  const bool euler = c.class_name == "EulerDiscreteScheduler";
  const bool ddim = c.class_name == "DDIMScheduler";
  const bool ddpm = c.class_name == "DDPMScheduler";
  if (ddim || ddpm) c.timestep_spacing = "leading";  // their default
  DITSERVE_FIELD(IntField(j, "num_train_timesteps", c.num_train_timesteps));
  if (c.num_train_timesteps < 2 || c.num_train_timesteps > 100000) {
    return FieldError("num_train_timesteps", "must be in [2, 100000]");
  }
  DITSERVE_FIELD(NumberField(j, "beta_start", c.beta_start));
  DITSERVE_FIELD(NumberField(j, "beta_end", c.beta_end));
  if (!(c.beta_start > 0 && c.beta_end < 1 && c.beta_start <= c.beta_end)) {
    return FieldError("beta_start/beta_end", "must satisfy 0 < beta_start <= beta_end < 1");
  }
  DITSERVE_FIELD(StringField(j, "beta_schedule", c.beta_schedule, {"linear", "scaled_linear", "squaredcos_cap_v2"}));
  DITSERVE_FIELD(StringField(j, "prediction_type", c.prediction_type, {"epsilon", "v_prediction", "sample"}));
  DITSERVE_FIELD(StringField(j, "timestep_spacing", c.timestep_spacing, {"linspace", "leading", "trailing"}));
  DITSERVE_FIELD(IntField(j, "steps_offset", c.steps_offset));
  DITSERVE_FIELD(Unsupported(j, "trained_betas", json()));
  DITSERVE_FIELD(Unsupported(j, "thresholding", false));
  DITSERVE_FIELD(Unsupported(j, "rescale_betas_zero_snr", false));
  DITSERVE_FIELD(Unsupported(j, "use_karras_sigmas", false));
  DITSERVE_FIELD(Unsupported(j, "use_exponential_sigmas", false));
  DITSERVE_FIELD(Unsupported(j, "use_beta_sigmas", false));
  if (dpm) {
    DITSERVE_FIELD(IntField(j, "solver_order", c.solver_order));
    if (c.solver_order != 1 && c.solver_order != 2) return FieldError("solver_order", "must be 1 or 2");
    DITSERVE_FIELD(StringField(j, "algorithm_type", c.algorithm_type, {"dpmsolver++"}));
    DITSERVE_FIELD(StringField(j, "solver_type", c.solver_type, {"midpoint", "heun"}));
    DITSERVE_FIELD(BoolField(j, "lower_order_final", c.lower_order_final));
    DITSERVE_FIELD(BoolField(j, "euler_at_final", c.euler_at_final));
    DITSERVE_FIELD(StringField(j, "final_sigmas_type", c.final_sigmas_type, {"zero", "sigma_min"}));
    DITSERVE_FIELD(NumberField(j, "lambda_min_clipped", c.lambda_min_clipped));
    DITSERVE_FIELD(Unsupported(j, "use_lu_lambdas", false));
    DITSERVE_FIELD(Unsupported(j, "use_flow_sigmas", false));
    DITSERVE_FIELD(Unsupported(j, "use_dynamic_shifting", false));
  }
  if (euler) {
    DITSERVE_FIELD(StringField(j, "interpolation_type", c.interpolation_type, {"linear"}));
    DITSERVE_FIELD(StringField(j, "final_sigmas_type", c.final_sigmas_type, {"zero", "sigma_min"}));
    DITSERVE_FIELD(Unsupported(j, "timestep_type", "discrete"));
  }
  if (ddim || ddpm) {
    DITSERVE_FIELD(BoolField(j, "clip_sample", c.clip_sample));
    DITSERVE_FIELD(NumberField(j, "clip_sample_range", c.clip_sample_range));
    if (!(c.clip_sample_range > 0)) return FieldError("clip_sample_range", "must be positive");
  }
  if (ddim) DITSERVE_FIELD(BoolField(j, "set_alpha_to_one", c.set_alpha_to_one));
  if (ddpm) {
    // learned / learned_range read the model's variance channels, which
    // the pipelines drop before the step; fixed_large_log is NaN in
    // diffusers (the square root of a log).
    DITSERVE_FIELD(StringField(j, "variance_type", c.variance_type, {"fixed_small", "fixed_small_log", "fixed_large"}));
  }
  return c;
}

std::vector<float> AlphasCumprod(const DiscreteSchedulerConfig& c) {
  const int N = c.num_train_timesteps;
  std::vector<float> betas;
  if (c.beta_schedule == "linear") {
    betas = LinspaceF32(c.beta_start, c.beta_end, N);
  } else if (c.beta_schedule == "scaled_linear") {
    betas = LinspaceF32(std::sqrt(c.beta_start), std::sqrt(c.beta_end), N);
    for (float& b : betas) b = b * b;
  } else {  // squaredcos_cap_v2: betas_for_alpha_bar in float64, then float32
    const double pi = std::acos(-1.0);
    const auto alpha_bar = [&](double t) {
      const double x = std::cos((t + 0.008) / 1.008 * pi / 2);
      return x * x;
    };
    for (int i = 0; i < N; ++i) {
      const double t1 = static_cast<double>(i) / N, t2 = static_cast<double>(i + 1) / N;
      betas.push_back(static_cast<float>(std::min(1.0 - alpha_bar(t2) / alpha_bar(t1), 0.999)));
    }
  }
  std::vector<float> ac(N);
  double product = 1.0;
  for (int i = 0; i < N; ++i) {
    product *= static_cast<double>(1.0f - betas[i]);
    ac[i] = static_cast<float>(product);
  }
  return ac;
}

absl::StatusOr<DenoisingSchedule> MakeDiscreteSchedule(const DiscreteSchedulerConfig& config, int steps) {
  if (absl::Status s = CheckSpacing(config, steps); !s.ok()) return s;
  absl::StatusOr<DenoisingSchedule> d;
  if (config.class_name == "DPMSolverMultistepScheduler") {
    d = DpmSolverSchedule(config, steps);
  } else if (config.class_name == "EulerDiscreteScheduler") {
    d = EulerSchedule(config, steps);
  } else if (config.class_name == "DDIMScheduler") {
    d = DdimSchedule(config, steps);
  } else if (config.class_name == "DDPMScheduler") {
    d = DdpmSchedule(config, steps);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("scheduler ", config.class_name, " is not supported"));
  }
  if (!d.ok()) return d;
  // Two timesteps that round to one (more steps than the spacing can
  // place apart) make a zero step: diffusers would compute NaN there.
  bool finite = std::isfinite(d->init_noise_sigma);
  for (const StepUpdate& u : d->updates) {
    for (double c : {u.sample, u.output, u.history_sample, u.history_output, u.noise}) {
      finite = finite && std::isfinite(c);
    }
    for (double c : u.history) finite = finite && std::isfinite(c);
  }
  if (!finite) {
    return absl::InvalidArgumentError(absl::StrCat(config.class_name, " with ", config.timestep_spacing,
                                                   " spacing cannot place ", steps,
                                                   " distinct steps (two timesteps coincide)"));
  }
  return d;
}

DenoisingSchedule FlowMatchSchedule(const std::vector<float>& sigmas) {
  DenoisingSchedule d;
  d.scheduler = "FlowMatchEulerDiscreteScheduler";
  for (size_t i = 0; i + 1 < sigmas.size(); ++i) {
    d.model_times.push_back(sigmas[i]);
    d.input_scales.push_back(1.0);
    StepUpdate u;
    u.output = static_cast<double>(sigmas[i + 1] - sigmas[i]);  // float32 difference
    d.updates.push_back(u);
  }
  return d;
}

}  // namespace ditserve::core
