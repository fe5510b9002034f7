#pragma once

// PipeFusion's attention (xDiT): a stage computes one patch of the image at
// a time, and each of its attention layers keeps a K/V buffer of the whole
// sequence [text, image]. A patch's fresh K/V overwrite its slice of the
// buffer; its queries attend the whole buffer, whose other patches hold the
// K/V of the previous step (or nothing yet, masked out, before the first
// full pass). A call carrying the whole image (a warmup step) is exact.
//
// Sequence-parallel inside a stage: the patch's tokens are sharded over the
// SP group (ulysses × ring, see generation_plan.h). Q/K/V go through
// Ulysses' all-to-all (heads -> sequence), so the buffer holds H/U heads of
// the full sequence; the ring group all-gathers the patch's fresh K/V
// (instead of passing the stale buffer around). Text tokens are replicated
// on every SP rank and carried by patch 0 only; each rank attends its H/U
// heads of them and the Ulysses group gathers the heads.

#include <cstdint>
#include <map>
#include <vector>
#include <utility>

#include <ATen/core/Tensor.h>

#include "parallel/communicator.h"
#include "core/generation_plan.h"
#include "worker/models/common/joint_attention.h"
#include "worker/pipelines/comm_stats.h"

namespace ditserve::worker::pipelines {

class PipeFusionAttention final : public models::JointAttention {
 public:
  // `text_tokens` and `image_tokens`: the full sequence lengths, the image
  // with its SP padding (generation_plan.h), of which the first
  // `real_image_tokens` are real: the padding's keys are always masked. The
  // communicators and `stats` (may be null) must outlive this object.
  PipeFusionAttention(parallel::Communicator& ulysses, parallel::Communicator& ring, int64_t text_tokens,
                      int64_t image_tokens, int64_t real_image_tokens, CommStats* stats);

  // Where the next calls' image tokens sit: the whole patch (all SP ranks
  // together) in full-image token order.
  void SetPatch(core::TokenRange patch) { patch_ = patch; }
  // Which batch rows the next calls write into the buffers ([B] bool;
  // undefined: all). The others attend but leave their stale K/V as they
  // were: rows of a request whose step is cached (step_cache.h).
  void SetWritableRows(at::Tensor rows) { writable_rows_ = std::move(rows); }
  // Forgets every buffer (a new generation).
  void Reset() { layers_.clear(); }

  // An open running set's rows change between steps (replica_run.h): the
  // buffers' rows move with their requests. `Export` copies rows `rows` of
  // every layer's buffers (to move a request to another run); `Remap`
  // rebuilds every buffer so that its row j is the old row index[j] when
  // 0 <= index[j] < old_rows (the batch before), row index[j] − old_rows
  // of `imported` (may be null) when beyond, and an empty row (zeros,
  // every key masked, as a request's own run starts) for −1.
  struct Rows {
    struct Layer {
      at::Tensor k, v, valid;  // [count, T + S, H/U, D], valid [count, T + S]
    };
    int64_t count = 0;
    std::map<int, Layer> layers;
  };
  Rows Export(const std::vector<int64_t>& rows) const;
  void Remap(const std::vector<int64_t>& index, int64_t old_rows, const Rows* imported);

  absl::StatusOr<models::JointAttentionOutputs> Attend(int layer, const models::Qkv& text,
                                                      const models::Qkv& image) override;
  // An image-only layer: its buffer holds the image's K/V alone.
  absl::StatusOr<at::Tensor> AttendImage(int layer, const models::Qkv& image) override;

 private:
  // Attend with `text_tokens` text keys in the layer's buffer (0: none).
  absl::StatusOr<models::JointAttentionOutputs> AttendBuffered(int layer, const models::Qkv& text,
                                                              const models::Qkv& image, int64_t text_tokens);
  struct LayerBuffer {
    at::Tensor k, v;   // [B, T + S, H/U, D]
    at::Tensor valid;  // [B, T + S] bool: the row's entry was filled at least once, and is not padding
    bool all_valid = false;  // every entry of `valid` is true (never with padding)
  };
  parallel::Communicator& ulysses_;
  parallel::Communicator& ring_;
  int64_t text_tokens_, image_tokens_, real_image_tokens_;
  CommStats* stats_;
  // Writes `fresh` into `slot` (a view of a buffer) for the writable rows.
  void Write(at::Tensor slot, const at::Tensor& fresh) const;

  core::TokenRange patch_;
  at::Tensor writable_rows_;
  std::map<int, LayerBuffer> layers_;
};

}  // namespace ditserve::worker::pipelines
