#include "worker/pipelines/pipefusion_attention.h"

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/attention.h"

namespace ditserve::worker::pipelines {
namespace {

}  // namespace

PipeFusionAttention::PipeFusionAttention(parallel::Communicator& ulysses, parallel::Communicator& ring,
                                         int64_t text_tokens, int64_t image_tokens, int64_t real_image_tokens,
                                         CommStats* stats)
    : ulysses_(ulysses), ring_(ring), text_tokens_(text_tokens), image_tokens_(image_tokens),
      real_image_tokens_(real_image_tokens), stats_(stats) {}

void PipeFusionAttention::Write(at::Tensor slot, const at::Tensor& fresh) const {
  if (!writable_rows_.defined()) {
    slot.copy_(fresh);
    return;
  }
  slot.copy_(at::where(writable_rows_.view({-1, 1, 1, 1}), fresh, slot));
}

PipeFusionAttention::Rows PipeFusionAttention::Export(const std::vector<int64_t>& rows) const {
  Rows out;
  out.count = static_cast<int64_t>(rows.size());
  for (const auto& [layer, buf] : layers_) {
    const at::Tensor index = at::tensor(rows, at::kLong).to(buf.k.device());
    out.layers[layer] = Rows::Layer{buf.k.index_select(0, index), buf.v.index_select(0, index),
                                    buf.valid.index_select(0, index)};
  }
  return out;
}

void PipeFusionAttention::Remap(const std::vector<int64_t>& index, int64_t old_rows, const Rows* imported) {
  const int64_t imported_rows = imported == nullptr ? 0 : imported->count;
  // Every layer either side has seen.
  std::map<int, std::pair<const Rows::Layer*, const Rows::Layer*>> sides;
  std::map<int, Rows::Layer> mine;
  for (const auto& [layer, buf] : layers_) {
    mine[layer] = Rows::Layer{buf.k, buf.v, buf.valid};
    sides[layer].first = &mine[layer];
  }
  if (imported != nullptr) {
    for (const auto& [layer, rows] : imported->layers) sides[layer].second = &rows;
  }
  std::vector<int64_t> pick;  // into [old rows, imported rows, one empty row]
  for (int64_t i : index) pick.push_back(i < 0 ? old_rows + imported_rows : i);
  std::map<int, LayerBuffer> remapped;
  for (const auto& [layer, side] : sides) {
    const at::Tensor& like = side.first != nullptr ? side.first->k : side.second->k;
    // `n` empty rows (zeros, every entry invalid): a side that has not seen
    // the layer, and the row index −1 takes.
    const auto empty = [&](int64_t n) {
      std::vector<int64_t> sizes = like.sizes().vec();
      sizes[0] = n;
      const at::Tensor zeros = at::zeros(sizes, like.options());
      return Rows::Layer{zeros, zeros, at::zeros({n, like.size(1)}, like.options().dtype(at::kBool))};
    };
    const Rows::Layer parts[] = {side.first != nullptr ? *side.first : empty(old_rows),
                                 side.second != nullptr ? *side.second : empty(imported_rows), empty(1)};
    const at::Tensor rows = at::tensor(pick, at::kLong).to(like.device());
    const auto gather = [&](at::Tensor Rows::Layer::*field) {
      return at::cat({parts[0].*field, parts[1].*field, parts[2].*field}, 0).index_select(0, rows);
    };
    LayerBuffer buf;
    buf.k = gather(&Rows::Layer::k);
    buf.v = gather(&Rows::Layer::v);
    buf.valid = gather(&Rows::Layer::valid);
    buf.all_valid = buf.valid.numel() > 0 && buf.valid.all().item<bool>();
    remapped[layer] = std::move(buf);
  }
  layers_ = std::move(remapped);
}

absl::StatusOr<models::JointAttentionOutputs> PipeFusionAttention::Attend(int layer, const models::Qkv& text,
                                                                         const models::Qkv& image) {
  return AttendBuffered(layer, text, image, text_tokens_);
}

absl::StatusOr<at::Tensor> PipeFusionAttention::AttendImage(int layer, const models::Qkv& image) {
  auto out = AttendBuffered(layer, models::Qkv{}, image, 0);
  if (!out.ok()) return out.status();
  return out->image;
}

absl::StatusOr<models::JointAttentionOutputs> PipeFusionAttention::AttendBuffered(int layer, const models::Qkv& text,
                                                                                 const models::Qkv& image,
                                                                                 int64_t text_tokens) {
  const int U = ulysses_.size(), R = ring_.size();
  const int64_t B = image.q.size(0), H = image.q.size(2), D = image.q.size(3);
  const int64_t T = text_tokens;
  if (H % U != 0) return absl::InvalidArgumentError(absl::StrCat("PipeFusion attention: ", H, " heads over Ulysses ", U));
  const int64_t Hl = H / U;
  if (image.q.size(1) * U * R != patch_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("PipeFusion attention: ", image.q.size(1), " local tokens x SP ",
                                                   U * R, " != patch of ", patch_.size()));
  }
  if (text.q.defined() && text.q.size(1) != T) {
    return absl::InvalidArgumentError(absl::StrCat("PipeFusion attention: ", text.q.size(1), " text tokens, expected ", T));
  }
  // Ulysses: [3, B, L, H, D] -> [3, B, L·U, H/U, D] (this rank's heads of
  // its ring rank's band). Without Ulysses and Ring nothing is packed.
  at::Tensor queries = image.q, k = image.k, v = image.v;
  at::Tensor kv;  // [2, B, tokens, H/U, D] once a collective has packed k and v
  if (U > 1) {
    const at::Tensor qkv = at::stack({image.q, image.k, image.v}, 0);
    CommTimer timer(stats_, "pipefusion_ulysses");
    timer.AddBytes(static_cast<int64_t>(qkv.nbytes()) * (U - 1) / U);
    auto a2a = ulysses_.AllToAll(qkv, 3, 2);
    if (!a2a.ok()) return a2a.status();
    queries = (*a2a)[0];
    kv = a2a->narrow(0, 1, 2);
  }
  if (R > 1) {
    if (!kv.defined()) kv = at::stack({k, v}, 0);
    CommTimer timer(stats_, "pipefusion_ring");
    timer.AddBytes(static_cast<int64_t>(kv.nbytes()) * (R - 1));
    auto gathered = ring_.AllGather(kv.contiguous(), 2);
    if (!gathered.ok()) return gathered.status();
    kv = *gathered;  // [2, B, patch, H/U, D]
  }
  if (kv.defined()) {
    k = kv[0];
    v = kv[1];
  }
  LayerBuffer& buf = layers_[layer];
  if (!buf.k.defined()) {
    buf.k = at::zeros({B, T + image_tokens_, Hl, D}, image.k.options());
    buf.v = at::zeros_like(buf.k);
    buf.valid = at::zeros({B, T + image_tokens_}, image.k.options().dtype(at::kBool));
  }
  if (buf.k.size(0) != B) {
    return absl::InternalError(absl::StrCat("PipeFusion attention: a batch of ", B, " rows, the buffers hold ",
                                            buf.k.size(0)));
  }
  Write(buf.k.narrow(1, T + patch_.begin, patch_.size()), k);
  Write(buf.v.narrow(1, T + patch_.begin, patch_.size()), v);
  const int64_t real_end = std::min(patch_.end, real_image_tokens_);
  if (real_end > patch_.begin) buf.valid.narrow(1, T + patch_.begin, real_end - patch_.begin).fill_(true);
  const int u = ulysses_.rank();
  if (text.q.defined()) {
    Write(buf.k.narrow(1, 0, T), text.k.narrow(2, u * Hl, Hl));
    Write(buf.v.narrow(1, 0, T), text.v.narrow(2, u * Hl, Hl));
    buf.valid.narrow(1, 0, T).fill_(true);
    queries = at::cat({text.q.narrow(2, u * Hl, Hl), queries}, 1);
  }
  // Once every patch has been seen (after the first step) no key is
  // masked: the unmasked kernel is the cheaper one.
  if (!buf.all_valid) buf.all_valid = buf.valid.all().item<bool>();
  auto attended = kernels::AttentionWithLse(queries, buf.k, buf.v,
                                            buf.all_valid ? at::Tensor() : buf.valid);
  if (!attended.ok()) return attended.status();
  at::Tensor out = attended->out.to(image.q.scalar_type());
  models::JointAttentionOutputs result;
  at::Tensor image_out = text.q.defined() ? out.narrow(1, T, out.size(1) - T) : out;
  if (text.q.defined()) {
    result.text = out.narrow(1, 0, T).contiguous();
    if (U > 1) {
      CommTimer timer(stats_, "pipefusion_ulysses");
      timer.AddBytes(static_cast<int64_t>(result.text.nbytes()) * (U - 1));
      auto heads = ulysses_.AllGather(result.text, 2);
      if (!heads.ok()) return heads.status();
      result.text = *heads;
    }
  }
  if (U > 1) {
    CommTimer timer(stats_, "pipefusion_ulysses");
    image_out = image_out.contiguous();
    timer.AddBytes(static_cast<int64_t>(image_out.nbytes()) * (U - 1) / U);
    auto back = ulysses_.AllToAll(image_out, 1, 2);
    if (!back.ok()) return back.status();
    image_out = *back;
  }
  result.image = image_out.contiguous();
  return result;
}

}  // namespace ditserve::worker::pipelines
