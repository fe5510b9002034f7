#pragma once

// xDiT's parallel VAE (--use_parallel_vae): the final latents split by rows
// across every rank of the gang, each rank decoding its band
// (VaeDecoder::DecodeBand) with the halo rows, group-norm sums and
// attention tokens exchanged over one communicator. Equal to the one-rank
// decode to float rounding. Traffic counts in CommStats under "vae".

#include <cstdint>
#include <utility>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "worker/models/vae/autoencoder_kl.h"
#include "worker/models/vae/band_exchange.h"
#include "worker/pipelines/comm_stats.h"

namespace ditserve::worker::pipelines {

// Rows [first, end) of `rank` when `rows` split over `ranks` in rank order:
// balanced, the first rows % ranks ranks one more. rows >= ranks.
std::pair<int64_t, int64_t> BandRows(int64_t rows, int ranks, int rank);

// VaeBandExchange over `group` (rank order = band order). The group and
// `stats` must outlive it; one thread.
class GangBandExchange final : public vae::VaeBandExchange {
 public:
  GangBandExchange(parallel::Communicator& group, CommStats* stats) : group_(group), stats_(stats) {}
  absl::StatusOr<at::Tensor> WithHalo(const at::Tensor& x) override;
  absl::Status Sum(at::Tensor& t) override;
  absl::StatusOr<at::Tensor> GatherBands(const at::Tensor& x) override;

 private:
  parallel::Communicator& group_;
  CommStats* stats_;
  int calls_ = 0;  // halo exchanges so far: their tags
};

// Collective over `group`: every rank holds the same scaled latents z
// [B, C, h, w] and decodes its band of them; returns the whole image,
// float32 [B, 3, H, W], on every rank. INVALID_ARGUMENT when h has fewer
// rows than the group has ranks. `peak_bytes` gets this rank's largest
// activation.
absl::StatusOr<at::Tensor> DecodeInBands(const vae::VaeDecoder& vae, const at::Tensor& z,
                                         parallel::Communicator& group, CommStats* stats,
                                         int64_t* peak_bytes = nullptr);

}  // namespace ditserve::worker::pipelines
