#include "core/step_cache.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace ditserve::core {

std::string_view StepCacheMethodName(StepCacheMethod method) {
  switch (method) {
    case StepCacheMethod::kNone:
      return "none";
    case StepCacheMethod::kFirstBlock:
      return "first_block";
    case StepCacheMethod::kTeaCache:
      return "teacache";
  }
  return "none";
}

absl::StatusOr<StepCacheMethod> ParseStepCacheMethod(std::string_view name) {
  for (StepCacheMethod m : {StepCacheMethod::kNone, StepCacheMethod::kFirstBlock, StepCacheMethod::kTeaCache}) {
    if (name == StepCacheMethodName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown step cache \"", std::string(name), "\": expected none, first_block or teacache"));
}

double DefaultStepCacheThreshold(StepCacheMethod method) {
  switch (method) {
    case StepCacheMethod::kNone:
      return 0;
    case StepCacheMethod::kFirstBlock:
      return 0.12;
    case StepCacheMethod::kTeaCache:
      return 0.4;
  }
  return 0;
}

double MaxStepCacheThreshold(StepCacheMethod method) {
  switch (method) {
    case StepCacheMethod::kNone:
      return 0;
    case StepCacheMethod::kFirstBlock:
      return 1.0;
    case StepCacheMethod::kTeaCache:
      return 2.0;
  }
  return 0;
}

absl::Status ValidateStepCache(const StepCacheOptions& options, double max_threshold, std::string_view field) {
  if (options.method == StepCacheMethod::kNone) {
    if (options.threshold != 0) {
      return absl::InvalidArgumentError(absl::StrCat(std::string(field), " must be 0 (or unset) without a step cache, got ",
                                                     options.threshold));
    }
    return absl::OkStatus();
  }
  if (!std::isfinite(options.threshold) || options.threshold < 0 || options.threshold > max_threshold) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(field), " must be in [0, ", max_threshold, "] for ",
                                                   std::string(StepCacheMethodName(options.method)), ", got ", options.threshold));
  }
  return absl::OkStatus();
}

double EvaluatePolynomial(const TeaCachePolynomial& coefficients, double x) {
  double y = 0;
  for (double c : coefficients) y = y * x + c;
  return y;
}

StepCacheRule::StepCacheRule(StepCacheOptions options, int steps, TeaCachePolynomial teacache)
    : options_(options), steps_(steps), teacache_(std::move(teacache)) {}

bool StepCacheRule::Forced(int step) const {
  return options_.method == StepCacheMethod::kNone || options_.threshold <= 0 || step == 0 || step >= steps_ - 1;
}

bool StepCacheRule::Decide(int step, double distance) {
  if (Forced(step)) {
    accumulated_ = 0;
    return true;
  }
  if (options_.method == StepCacheMethod::kFirstBlock) return !(distance <= options_.threshold);
  // TeaCache: a NaN distance (a zero signal) computes.
  accumulated_ += EvaluatePolynomial(teacache_, distance);
  if (accumulated_ < options_.threshold) return false;
  accumulated_ = 0;
  return true;
}

void StepCacheRule::Overrule(bool computes) {
  if (computes) accumulated_ = 0;
}

}  // namespace ditserve::core
