#pragma once

// Step caching (xDiT's First-Block-Cache and TeaCache), torch-free: what a
// request asks for, its checks, and the per-request rule that decides, step
// by step, whether the transformer's blocks run or the cached residual of
// the last computed step stands in for them. The tensor side (the signals,
// the residuals, the collectives that make every rank decide alike) is
// worker/pipelines/step_cache.h.
//
// Which steps always compute: the first (nothing is cached yet) and the
// last (its output is the image); a threshold of 0 computes every step, so
// it is the uncached generation bit for bit. No other step is forced.

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ditserve::core {

enum class StepCacheMethod {
  kNone,
  // First-Block-Cache (ParaAttention's, as diffusers' FirstBlockCacheConfig):
  // the first block always runs; the relative L1 change of its image-stream
  // residual (output − input) against the last computed step's decides.
  kFirstBlock,
  // TeaCache: the relative L1 change of the first block's modulated image
  // input against the previous step's, rescaled by the family's polynomial,
  // accumulates; a step computes once the sum reaches the threshold (and
  // the sum restarts at 0).
  kTeaCache,
};

// "none", "first_block", "teacache" (the wire and flag names).
std::string_view StepCacheMethodName(StepCacheMethod method);
// The inverse; INVALID_ARGUMENT naming the accepted names.
absl::StatusOr<StepCacheMethod> ParseStepCacheMethod(std::string_view name);

struct StepCacheOptions {
  StepCacheMethod method = StepCacheMethod::kNone;
  double threshold = 0;  // 0: every step computes
  bool operator==(const StepCacheOptions&) const = default;
};

// The thresholds a method takes when a request names none, and the largest
// it accepts (server and launcher flags may lower both).
double DefaultStepCacheThreshold(StepCacheMethod method);
double MaxStepCacheThreshold(StepCacheMethod method);

// INVALID_ARGUMENT naming `field` unless the threshold is finite and in
// [0, max_threshold] (and 0 for kNone).
absl::Status ValidateStepCache(const StepCacheOptions& options, double max_threshold,
                               std::string_view field = "cache_threshold");

// TeaCache's rescaling polynomial, highest power first (numpy.poly1d).
using TeaCachePolynomial = std::vector<double>;
double EvaluatePolynomial(const TeaCachePolynomial& coefficients, double x);

// The decision rule of one request over one run of `steps` steps. Every
// rank holding the request feeds it the same distances and so decides the
// same. Thread-compatible.
class StepCacheRule {
 public:
  StepCacheRule(StepCacheOptions options, int steps, TeaCachePolynomial teacache = {});

  // Whether step `step` (0-based, in order, each once) runs the blocks.
  // `distance` is the method's relative L1 change (see StepCacheMethod),
  // read only on steps that are not forced.
  bool Decide(int step, double distance);
  // Whether `step` computes whatever the distance is (first, last, or a
  // threshold of 0, or no caching).
  bool Forced(int step) const;

  // The gang's agreed decision for the step last decided, when it differs
  // from this rule's (a rank that computed a distance a rounding apart):
  // computing restarts TeaCache's accumulation.
  void Overrule(bool computes);

  const StepCacheOptions& options() const { return options_; }
  // For TeaCache, the accumulated rescaled distance after the last Decide.
  double accumulated() const { return accumulated_; }

 private:
  StepCacheOptions options_;
  int steps_;
  TeaCachePolynomial teacache_;
  double accumulated_ = 0;
};

}  // namespace ditserve::core
