#pragma once

// The tensor side of step caching (core/step_cache.h has the options and
// the decision rule) for one replica's run: per request, the signal that
// decides, the anchor the cached residual is added to, and the blocks'
// output at the last computed step.
//
// A step on a caching run:
//  1. Stage 0 computes the method's signal for its tokens: First-Block-
//     Cache runs block 0 and takes its image residual (output − input);
//     TeaCache takes block 0's modulated input. The anchor is block 0's
//     output (First-Block-Cache) or the embedded input (TeaCache).
//  2. Per request, Σ|signal − previous| and Σ|previous| over its rows
//     (every CFG branch) and its real tokens; the caller sums them over the
//     SP group and the CFG group, so the distance is the whole image's,
//     as one process would compute it, and every rank decides alike.
//  3. A computing request's rows run the remaining blocks; its blocks'
//     output becomes the reference. A cached request's rows become
//     reference + (anchor − reference anchor): the anchor plus the cached
//     residual of the remaining blocks.
//
// Decisions are per request: a request's image does not depend on what it
// is batched with. The blocks run (on the whole batch) when any request
// computes; they are skipped when none does.
//
// Token ranges index the padded image (generation_plan.h); state tensors
// cover it whole, [rows, padded tokens, hidden], and each rank reads and
// writes only the ranges it computes. Not thread-safe.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "core/step_cache.h"

namespace ditserve::worker::pipelines {

class StepCache {
 public:
  // `options`: one per request of the replica (all kNone, or all one
  // method). `branches`: model-batch rows per request (2 when CFG runs in
  // one batch), rows ordered branch-major (row = branch·n + request).
  // `padded_tokens` image tokens of which the first `real_tokens` are real;
  // state lives on `device`.
  StepCache(std::vector<core::StepCacheOptions> options, int steps, int branches, int64_t padded_tokens,
            int64_t real_tokens, core::TeaCachePolynomial teacache, c10::Device device);

  // Whether any request caches (else nothing here needs calling).
  bool active() const { return method_ != core::StepCacheMethod::kNone; }
  core::StepCacheMethod method() const { return method_; }

  // Stage 0. Starts step `step`'s sums.
  void BeginStep();
  // The signal [rows, L, hidden] of tokens [begin, begin + L) and the anchor
  // of the same tokens (see above).
  void AddSignal(const at::Tensor& signal, const at::Tensor& anchor, int64_t begin);
  // Per request (Σ|signal − previous|, Σ|previous|) as float64 [2, n], to be
  // summed over the SP and CFG groups in place before Decide.
  at::Tensor& partial_sums() { return sums_; }
  // Each request's decision from the (summed) distances: int32 [n], 1 =
  // compute; to be agreed (MAX) over the same groups and passed to Agree.
  at::Tensor Decide(int step);
  // Every rank: the gang's decisions for `step` (Decide's after agreement,
  // or stage 0's as received under PipeFusion).
  void Agree(int step, const at::Tensor& computes);

  bool any_computes() const { return any_; }
  bool all_compute() const { return all_; }
  // [rows] bool on `device`: whether each row's request computes.
  const at::Tensor& row_mask() const { return row_mask_; }

  // Stage 0: anchor − reference anchor of tokens [begin, begin + length).
  at::Tensor AnchorDelta(int64_t begin, int64_t length) const;
  // Stage 0, after the step's last AddSignal and AnchorDelta: the signals
  // and anchors of computing requests become the references (TeaCache's
  // signal always: it compares consecutive steps).
  void CommitStage0();

  // Last stage: the hidden the head reads for tokens [begin, begin + L):
  // `computed` (the blocks' output; undefined when no request computes) for
  // computing rows, reference + `delta` (AnchorDelta's; undefined when all
  // compute) for cached rows. Computing rows' output becomes the reference.
  at::Tensor Merge(const at::Tensor& computed, const at::Tensor& delta, int64_t begin, int64_t length);

  // The state a rank keeps of the whole image, for a caller that must make
  // every range current (PipeFusion's warmup → patches transition).
  std::vector<at::Tensor*> state() { return {&signal_ref_, &anchor_ref_, &output_ref_}; }

  // Per request, per step decided so far: whether it computed.
  const std::vector<std::vector<bool>>& decisions() const { return decisions_; }

 private:
  void Store(at::Tensor& state, const at::Tensor& value, int64_t begin) const;
  // Rows of computing requests of `from` into `to` (whole tensors).
  void CopyComputingRows(at::Tensor& to, const at::Tensor& from) const;

  core::StepCacheMethod method_ = core::StepCacheMethod::kNone;
  std::vector<core::StepCacheRule> rules_;
  int branches_;
  int64_t padded_tokens_, real_tokens_;
  c10::Device device_;
  std::vector<int> local_;  // this rank's Decide, before agreement
  at::Tensor sums_;
  at::Tensor signal_ref_, signal_now_, anchor_ref_, anchor_now_, output_ref_;
  std::vector<bool> computes_;
  std::vector<int64_t> computing_rows_;
  at::Tensor row_mask_, computing_index_;
  bool any_ = true, all_ = true;
  std::vector<std::vector<bool>> decisions_;
};

}  // namespace ditserve::worker::pipelines
