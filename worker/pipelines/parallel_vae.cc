#include "worker/pipelines/parallel_vae.h"

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace ditserve::worker::pipelines {
namespace {

// Halo messages on the gang's world group: base + 2·(call mod 512) for the
// rows going down the ranks, + 1 for the rows going up. Clear of the
// pipeline's result tags (3 << 10, 4 << 10 + replica).
constexpr int kTagHalo = 8 << 10;

}  // namespace

std::pair<int64_t, int64_t> BandRows(int64_t rows, int ranks, int rank) {
  const int64_t base = rows / ranks, extra = rows % ranks;
  const int64_t first = rank * base + std::min<int64_t>(rank, extra);
  return {first, first + base + (rank < extra ? 1 : 0)};
}

absl::StatusOr<at::Tensor> GangBandExchange::WithHalo(const at::Tensor& x) {
  const int r = group_.rank(), n = group_.size();
  const int tag = kTagHalo + 2 * (calls_++ % 512);
  const int64_t rows = x.size(2);
  at::Tensor above = at::zeros_like(x.narrow(2, 0, 1)), below = at::zeros_like(x.narrow(2, 0, 1));
  const at::Tensor first = x.narrow(2, 0, 1).contiguous(), last = x.narrow(2, rows - 1, 1).contiguous();
  CommTimer timer(stats_, "vae");
  std::vector<std::unique_ptr<parallel::PendingTransfer>> pending;
  const auto post = [&](absl::StatusOr<std::unique_ptr<parallel::PendingTransfer>> t) -> absl::Status {
    if (!t.ok()) return t.status();
    pending.push_back(*std::move(t));
    return absl::OkStatus();
  };
  if (r > 0) {
    DITSERVE_RETURN_IF_ERROR(post(group_.Recv(above, r - 1, tag)));
    DITSERVE_RETURN_IF_ERROR(post(group_.Send(first, r - 1, tag + 1)));
    timer.AddBytes(static_cast<int64_t>(first.nbytes()));
  }
  if (r + 1 < n) {
    DITSERVE_RETURN_IF_ERROR(post(group_.Recv(below, r + 1, tag + 1)));
    DITSERVE_RETURN_IF_ERROR(post(group_.Send(last, r + 1, tag)));
    timer.AddBytes(static_cast<int64_t>(last.nbytes()));
  }
  for (auto& p : pending) DITSERVE_RETURN_IF_ERROR(p->Wait());
  return at::cat({above, x, below}, 2);
}

absl::Status GangBandExchange::Sum(at::Tensor& t) {
  CommTimer timer(stats_, "vae");
  timer.AddBytes(static_cast<int64_t>(t.nbytes()));
  return group_.AllReduce(t, parallel::ReduceOp::kSum);
}

absl::StatusOr<at::Tensor> GangBandExchange::GatherBands(const at::Tensor& x) {
  CommTimer timer(stats_, "vae");
  auto counts = group_.AllGather(at::full({1}, x.size(2), at::TensorOptions().dtype(at::kLong).device(x.device())), 0);
  if (!counts.ok()) return counts.status();
  const at::Tensor rows = counts->cpu();
  const int64_t most = rows.max().item<int64_t>();
  const at::Tensor padded = at::constant_pad_nd(x, {0, 0, 0, most - x.size(2)}).contiguous();
  timer.AddBytes(static_cast<int64_t>(padded.nbytes()));
  auto all = group_.AllGather(padded, 2);
  if (!all.ok()) return all.status();
  std::vector<at::Tensor> bands;
  for (int64_t j = 0; j < rows.size(0); ++j) bands.push_back(all->narrow(2, j * most, rows[j].item<int64_t>()));
  return at::cat(bands, 2);
}

absl::StatusOr<at::Tensor> DecodeInBands(const vae::VaeDecoder& vae, const at::Tensor& z,
                                         parallel::Communicator& group, CommStats* stats, int64_t* peak_bytes) {
  const int64_t rows = z.size(2);
  if (rows < group.size()) {
    return absl::InvalidArgumentError(absl::StrCat("--use_parallel_vae needs a latent row per rank: ", rows,
                                                   " latent rows over ", group.size(), " ranks"));
  }
  const auto [first, end] = BandRows(rows, group.size(), group.rank());
  GangBandExchange exchange(group, stats);
  auto band = vae.DecodeBand(z.narrow(2, first, end - first), exchange, peak_bytes);
  if (!band.ok()) return band.status();
  return exchange.GatherBands(*band);
}

}  // namespace ditserve::worker::pipelines
