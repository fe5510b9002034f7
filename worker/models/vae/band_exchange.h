#pragma once

// The cross-rank operations of a VAE decode split by rows across ranks
// (VaeDecoder::DecodeBand, xDiT's DistVAE): each rank holds a band of rows
// of every feature map, in rank order, at least one row each. A 3×3
// convolution needs one row of each neighbour (the halo), a group norm the
// sums over every band, and the mid block's attention every band's tokens.
// Implemented over the gang's communicator (worker/pipelines/
// parallel_vae.h); every call is collective over the ranks, in the same
// order on each.

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ditserve::worker::vae {

class VaeBandExchange {
 public:
  virtual ~VaeBandExchange() = default;
  // x [B, C, rows, W], this rank's band. Returns [B, C, rows + 2, W]: the
  // previous rank's last row on top (zeros above the image's first row),
  // the band, the next rank's first row below (zeros past the last).
  virtual absl::StatusOr<at::Tensor> WithHalo(const at::Tensor& x) = 0;
  // In place: the element-wise sum over every rank.
  virtual absl::Status Sum(at::Tensor& t) = 0;
  // Every rank's band [B, C, rows_r, W] concatenated along dim 2 in rank
  // order (the bands may differ in rows).
  virtual absl::StatusOr<at::Tensor> GatherBands(const at::Tensor& x) = 0;
};

// The one-rank case: the band is the whole image (zero halo rows, the sums
// and bands are this rank's own). DecodeBand with it is a whole decode
// that measures its largest activation as the banded decode does.
class SingleBandExchange final : public VaeBandExchange {
 public:
  absl::StatusOr<at::Tensor> WithHalo(const at::Tensor& x) override;
  absl::Status Sum(at::Tensor&) override { return absl::OkStatus(); }
  absl::StatusOr<at::Tensor> GatherBands(const at::Tensor& x) override { return x; }
};

}  // namespace ditserve::worker::vae
