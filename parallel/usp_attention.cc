#include "parallel/usp_attention.h"

#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace ditserve::parallel {
namespace {

int64_t Bytes(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

void Count(const UspOptions& o, int64_t bytes) {
  if (o.stats != nullptr) o.stats->bytes_sent += bytes;
}

// Runs `op` (a wait or a blocking collective), adding its wall time to the
// stats' wait_seconds.
template <typename Op>
auto Waited(const UspOptions& o, Op&& op) {
  const auto start = std::chrono::steady_clock::now();
  auto result = op();
  if (o.stats != nullptr) {
    o.stats->wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return result;
}
absl::Status WaitFor(PendingTransfer& transfer, const UspOptions& o) {
  return Waited(o, [&] { return transfer.Wait(); });
}

absl::Status CheckQkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (!q.defined() || !k.defined() || !v.defined() || q.dim() != 4 || !q.sizes().equals(k.sizes()) ||
      !q.sizes().equals(v.sizes())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "USP attention: q, k, v must be equal [B, S, H, D] shards, got q ",
        q.defined() ? c10::str(q.sizes()) : "undefined", ", k ",
        k.defined() ? c10::str(k.sizes()) : "undefined", ", v ",
        v.defined() ? c10::str(v.sizes()) : "undefined"));
  }
  return absl::OkStatus();
}

absl::Status CheckHeads(const Communicator& ulysses, int64_t heads) {
  if (heads % ulysses.size() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("USP attention: the number of heads (", heads,
                                                   ") must divide by the Ulysses degree (",
                                                   ulysses.size(), ")"));
  }
  return absl::OkStatus();
}

// key_valid (optional) must be bool [B, S] for q [B, S, H, D].
absl::Status CheckKeyValid(const at::Tensor& q, const at::Tensor& key_valid) {
  if (key_valid.defined() && (key_valid.dim() != 2 || key_valid.size(0) != q.size(0) ||
                              key_valid.size(1) != q.size(1) || key_valid.scalar_type() != at::kBool)) {
    return absl::InvalidArgumentError(absl::StrCat("USP attention: key_valid must be bool [",
                                                   q.size(0), ", ", q.size(1), "]"));
  }
  return absl::OkStatus();
}

// Every ring rank must hold shards of one shape: checked with one small
// all-gather, since send/recv cannot check it.
absl::Status CheckSameShapes(Communicator& comm, const at::Tensor& q, const at::Tensor& once_k) {
  if (comm.size() == 1) return absl::OkStatus();
  at::Tensor meta = at::zeros({6}, at::kLong);
  for (int i = 0; i < 4; ++i) meta[i] = q.size(i);
  meta[4] = static_cast<int64_t>(q.scalar_type());
  meta[5] = once_k.defined() ? once_k.size(1) : -1;
  if (!q.device().is_cpu()) meta = meta.to(q.device());
  auto all = comm.AllGather(meta.unsqueeze(0), 0);
  if (!all.ok()) return all.status();
  at::Tensor rows = all->cpu();
  for (int r = 0; r < comm.size(); ++r) {
    if (!at::equal(rows[r], meta.cpu())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "USP attention on group ", comm.name(), ": shard shapes differ across ranks: rank ",
          comm.rank(), " has ", c10::str(q.sizes()), ", rank ", r, " has [", rows[r][0].item<int64_t>(),
          ", ", rows[r][1].item<int64_t>(), ", ", rows[r][2].item<int64_t>(), ", ",
          rows[r][3].item<int64_t>(), "]"));
    }
  }
  return absl::OkStatus();
}

// [B, S/P, H, D] -> [B, S, H/P, D] and back.
absl::StatusOr<at::Tensor> HeadsToSequence(Communicator& c, const at::Tensor& x, const UspOptions& o) {
  if (c.size() == 1) return x;
  Count(o, Bytes(x) * (c.size() - 1) / c.size());
  return Waited(o, [&] { return c.AllToAll(x, /*scatter_dim=*/2, /*gather_dim=*/1); });
}
absl::StatusOr<at::Tensor> SequenceToHeads(Communicator& c, const at::Tensor& x, const UspOptions& o) {
  if (c.size() == 1) return x;
  Count(o, Bytes(x) * (c.size() - 1) / c.size());
  return Waited(o, [&] { return c.AllToAll(x, /*scatter_dim=*/1, /*gather_dim=*/2); });
}
absl::StatusOr<at::Tensor> Gather(Communicator& c, const at::Tensor& x, int64_t dim, const UspOptions& o) {
  if (c.size() == 1 || !x.defined()) return x;
  Count(o, Bytes(x) * (c.size() - 1));
  return Waited(o, [&] { return c.AllGather(x, dim); });
}

// The Ulysses forward exchange of q, k, v (heads scattered, sequence
// gathered) and of the key mask (gathered).
struct Exchanged {
  at::Tensor q, k, v, valid;
};
absl::StatusOr<Exchanged> UlyssesExchange(Communicator& c, const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v, const at::Tensor& key_valid,
                                          const UspOptions& o) {
  Exchanged x;
  for (auto [in, out] : {std::pair{&q, &x.q}, std::pair{&k, &x.k}, std::pair{&v, &x.v}}) {
    auto moved = HeadsToSequence(c, *in, o);
    DITSERVE_RETURN_IF_ERROR(moved.status());
    *out = *std::move(moved);
  }
  auto valid = Gather(c, key_valid, 1, o);
  DITSERVE_RETURN_IF_ERROR(valid.status());
  x.valid = *std::move(valid);
  return x;
}

// Ulysses with its all-to-alls as point-to-point transfers overlapped with
// attention. Rank r owns heads [r·Hp, (r+1)·Hp) and, for those heads, needs
// every sequence shard's q, k, v. They are kept in arrival order (slot 0 the
// own shard, slot i shard (r+i) mod U: every rank sends to its predecessors
// first) in one buffer, so the keys of all slots arrived so far are one
// strided view. When slot i arrives, its queries attend every key present in
// one call, and the earlier slots' queries attend the new keys, merged by
// log-sum-exp; a shard's output travels back as soon as it is complete (at
// U = 2: three kernel calls and one merge). Same bytes as xDiT's all-to-alls.
// q, k and v travel as three messages, sent from and received into strided
// views (no packing copies where the transport copies from strides, as the
// shared-memory one does), and the outputs land in the result directly.
absl::StatusOr<at::Tensor> OverlappedUlysses(Communicator& c, const at::Tensor& q, const at::Tensor& k,
                                             const at::Tensor& v, const at::Tensor& key_valid,
                                             const UspOptions& o) {
  const int u = c.size(), r = c.rank();
  const int64_t B = q.size(0), Ss = q.size(1), hp = q.size(2) / u, D = q.size(3);
  enum Tag { kQ = 0, kK = 1, kV = 2, kMask = 3, kOut = 4 };
  const at::Tensor* inputs[3] = {&q, &k, &v};
  const auto shard_of = [&](int slot) { return (r + slot) % u; };
  // This shard's q (w = 0), k (1) or v (2) for rank p's heads: [B, Ss, Hp, D].
  const auto input_for = [&](int w, int p) { return inputs[w]->narrow(2, p * hp, hp); };
  at::Tensor qkv = at::empty({u * Ss, 3, B, hp, D}, q.options());  // slot i: rows [i·Ss, (i+1)·Ss)
  // [B, n·Ss, Hp, D] views of q (w = 0), k (1) or v (2) of slots [first, first + n).
  const auto part = [&](int w, int first, int n) {
    return qkv.narrow(0, first * Ss, n * Ss).select(1, w).transpose(0, 1);
  };
  for (int w = 0; w < 3; ++w) part(w, 0, 1).copy_(input_for(w, r));
  at::Tensor valid;  // [B, U·Ss] in slot order
  const at::Tensor local_mask = key_valid.defined() ? key_valid.to(at::kByte).contiguous() : at::Tensor();
  if (key_valid.defined()) {
    valid = at::empty({B, u * Ss}, key_valid.options());
    valid.narrow(1, 0, Ss).copy_(key_valid);
  }
  at::Tensor result = at::empty({B, Ss, q.size(2), D}, q.options());
  std::vector<std::unique_ptr<PendingTransfer>> sends, mask_recv(u), out_recv(u);
  std::vector<std::vector<std::unique_ptr<PendingTransfer>>> qkv_recv(u);
  std::vector<at::Tensor> mask_bytes(u), outs(u);
  for (int i = 1; i < u; ++i) {
    const int s = shard_of(i);
    for (int w = 0; w < 3; ++w) {
      at::Tensor slot = part(w, i, 1);
      auto rw = c.Recv(slot, s, kQ + w);
      DITSERVE_RETURN_IF_ERROR(rw.status());
      qkv_recv[i].push_back(*std::move(rw));
    }
    if (key_valid.defined()) {
      mask_bytes[i] = at::empty_like(local_mask);
      auto rm = c.Recv(mask_bytes[i], s, kMask);
      DITSERVE_RETURN_IF_ERROR(rm.status());
      mask_recv[i] = *std::move(rm);
    }
    outs[s] = result.narrow(2, s * hp, hp);
    auto ro = c.Recv(outs[s], s, kOut);
    DITSERVE_RETURN_IF_ERROR(ro.status());
    out_recv[i] = *std::move(ro);
  }
  std::vector<at::Tensor> sent;  // kept alive until the sends complete
  const auto send = [&](const at::Tensor& t, int dst, int tag) -> absl::Status {
    auto pending = c.Send(t, dst, tag);
    DITSERVE_RETURN_IF_ERROR(pending.status());
    sends.push_back(*std::move(pending));
    sent.push_back(t);
    Count(o, Bytes(t));
    return absl::OkStatus();
  };
  for (int i = 1; i < u; ++i) {
    const int p = (r + u - i) % u;  // predecessors first: they wait for us first
    for (int w = 0; w < 3; ++w) DITSERVE_RETURN_IF_ERROR(send(input_for(w, p), p, kQ + w));
    if (key_valid.defined()) DITSERVE_RETURN_IF_ERROR(send(local_mask, p, kMask));
  }
  const auto attend = [&](int q_slot, int first, int n) {
    return kernels::AttentionWithLse(part(0, q_slot, 1), part(1, first, n), part(2, first, n),
                                     valid.defined() ? valid.narrow(1, first * Ss, n * Ss) : at::Tensor(),
                                     o.attention);
  };
  std::vector<kernels::AttentionResult> acc(u);
  const auto finish = [&](int slot) -> absl::Status {
    if (slot == 0) return absl::OkStatus();
    return send(acc[slot].out.to(q.scalar_type()), shard_of(slot), kOut);
  };
  for (int i = 0; i < u; ++i) {
    if (i > 0) {
      for (auto& pending : qkv_recv[i]) DITSERVE_RETURN_IF_ERROR(WaitFor(*pending, o));
      if (key_valid.defined()) {
        DITSERVE_RETURN_IF_ERROR(WaitFor(*mask_recv[i], o));
        valid.narrow(1, i * Ss, Ss).copy_(mask_bytes[i]);
      }
    }
    const bool last = i + 1 == u;
    // The new slot's queries against every key present …
    auto all = attend(i, 0, i + 1);
    DITSERVE_RETURN_IF_ERROR(all.status());
    acc[i] = *std::move(all);
    if (last) DITSERVE_RETURN_IF_ERROR(finish(i));
    // … and the earlier slots' queries against the new keys.
    for (int t = 0; t < i; ++t) {
      auto more = attend(t, i, 1);
      DITSERVE_RETURN_IF_ERROR(more.status());
      DITSERVE_RETURN_IF_ERROR(kernels::MergeAttentionInto(acc[t], *more));
      if (last) DITSERVE_RETURN_IF_ERROR(finish(t));
    }
  }
  result.narrow(2, r * hp, hp).copy_(acc[0].out);
  for (int i = 1; i < u; ++i) DITSERVE_RETURN_IF_ERROR(WaitFor(*out_recv[i], o));
  for (auto& pending : sends) DITSERVE_RETURN_IF_ERROR(WaitFor(*pending, o));
  return result;
}

// The shared core of USP: Ulysses exchange, ring, Ulysses exchange back.
// `text_*` are replicated text tokens (already validated) or undefined.
// Returns (text result [B,T,H/U,D] f32 or undefined, image out [B,Sl,H,D]).
absl::StatusOr<std::pair<at::Tensor, at::Tensor>> UspCore(
    Communicator& ulysses, Communicator& ring, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& key_valid, const at::Tensor& text_q,
    const at::Tensor& text_k, const at::Tensor& text_v, const UspOptions& o) {
  DITSERVE_RETURN_IF_ERROR(CheckQkv(q, k, v));
  DITSERVE_RETURN_IF_ERROR(CheckHeads(ulysses, q.size(2)));
  DITSERVE_RETURN_IF_ERROR(CheckKeyValid(q, key_valid));
  auto x = UlyssesExchange(ulysses, q, k, v, key_valid, o);
  DITSERVE_RETURN_IF_ERROR(x.status());
  const int64_t heads_per_rank = q.size(2) / ulysses.size();
  at::Tensor query = x->q, tk, tv;
  int64_t text_len = 0;
  if (text_q.defined()) {
    const int64_t h0 = ulysses.rank() * heads_per_rank;
    text_len = text_q.size(1);
    query = at::cat({text_q.narrow(2, h0, heads_per_rank), x->q}, 1);
    tk = text_k.narrow(2, h0, heads_per_rank);
    tv = text_v.narrow(2, h0, heads_per_rank);
  }
  auto result = RingAttention(ring, query, x->k, x->v, x->valid, tk, tv, o);
  DITSERVE_RETURN_IF_ERROR(result.status());
  at::Tensor image = result->out.narrow(1, text_len, x->q.size(1)).to(q.scalar_type());
  auto back = SequenceToHeads(ulysses, image.contiguous(), o);
  DITSERVE_RETURN_IF_ERROR(back.status());
  at::Tensor text;
  if (text_q.defined()) text = result->out.narrow(1, 0, text_len);
  return std::make_pair(text, *back);
}

}  // namespace

absl::StatusOr<kernels::AttentionResult> RingAttention(Communicator& ring, const at::Tensor& q,
                                                       const at::Tensor& k, const at::Tensor& v,
                                                       const at::Tensor& key_valid,
                                                       const at::Tensor& once_k,
                                                       const at::Tensor& once_v,
                                                       const UspOptions& o) {
  if (!q.defined() || !k.defined() || !v.defined() || q.dim() != 4 || !k.sizes().equals(v.sizes())) {
    return absl::InvalidArgumentError("ring attention: q, k, v must be [B, S, H, D]");
  }
  if (o.check_shapes) DITSERVE_RETURN_IF_ERROR(Waited(o, [&] { return CheckSameShapes(ring, k, once_k); }));
  kernels::AttentionResult acc;
  if (once_k.defined()) {
    auto front = kernels::AttentionWithLse(q, once_k, once_v, at::Tensor(), o.attention);
    DITSERVE_RETURN_IF_ERROR(front.status());
    acc = *std::move(front);
  }
  const int p = ring.size();
  const int next = (ring.rank() + 1) % p, prev = (ring.rank() + p - 1) % p;
  // K and V travel together; the validity mask (if any) rides along as a
  // third "channel" of the same dtype.
  at::Tensor block = at::stack({k, v}, 0).contiguous();
  at::Tensor valid = key_valid;
  for (int step = 0; step < p; ++step) {
    std::unique_ptr<PendingTransfer> send, recv, send_mask, recv_mask;
    at::Tensor incoming, incoming_mask;
    if (step + 1 < p) {
      incoming = at::empty_like(block);
      auto r = ring.Recv(incoming, prev, 2 * step);
      DITSERVE_RETURN_IF_ERROR(r.status());
      recv = *std::move(r);
      auto s = ring.Send(block, next, 2 * step);
      DITSERVE_RETURN_IF_ERROR(s.status());
      send = *std::move(s);
      Count(o, Bytes(block));
      if (valid.defined()) {
        const at::Tensor mask_bytes = valid.to(at::kByte).contiguous();
        incoming_mask = at::empty_like(mask_bytes);
        auto rm = ring.Recv(incoming_mask, prev, 2 * step + 1);
        DITSERVE_RETURN_IF_ERROR(rm.status());
        recv_mask = *std::move(rm);
        auto sm = ring.Send(mask_bytes, next, 2 * step + 1);
        DITSERVE_RETURN_IF_ERROR(sm.status());
        send_mask = *std::move(sm);
        Count(o, Bytes(mask_bytes));
      }
    }
    // A block whose keys are all padding contributes nothing: skip it.
    if (!valid.defined() || valid.any().item<bool>()) {
      auto part = kernels::AttentionWithLse(q, block[0], block[1], valid, o.attention);
      DITSERVE_RETURN_IF_ERROR(part.status());
      DITSERVE_RETURN_IF_ERROR(kernels::MergeAttentionInto(acc, *part));
    }
    if (step + 1 < p) {
      DITSERVE_RETURN_IF_ERROR(WaitFor(*send, o));
      DITSERVE_RETURN_IF_ERROR(WaitFor(*recv, o));
      block = incoming;
      if (valid.defined()) {
        DITSERVE_RETURN_IF_ERROR(WaitFor(*send_mask, o));
        DITSERVE_RETURN_IF_ERROR(WaitFor(*recv_mask, o));
        valid = incoming_mask.to(at::kBool);
      }
    }
  }
  if (!acc.out.defined()) {
    // Every key was padding: out 0, lse -inf, as serial attention gives.
    auto none = kernels::AttentionWithLse(q, k, v, key_valid, o.attention);
    DITSERVE_RETURN_IF_ERROR(none.status());
    acc = *std::move(none);
  }
  return acc;
}

absl::StatusOr<at::Tensor> UlyssesAttention(Communicator& ulysses, const at::Tensor& q,
                                            const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& key_valid, const UspOptions& o) {
  DITSERVE_RETURN_IF_ERROR(CheckQkv(q, k, v));
  DITSERVE_RETURN_IF_ERROR(CheckHeads(ulysses, q.size(2)));
  DITSERVE_RETURN_IF_ERROR(CheckKeyValid(q, key_valid));
  if (ulysses.size() == 1) {
    auto r = kernels::AttentionWithLse(q, k, v, key_valid, o.attention);
    DITSERVE_RETURN_IF_ERROR(r.status());
    return r->out.to(q.scalar_type());
  }
  if (o.check_shapes) DITSERVE_RETURN_IF_ERROR(Waited(o, [&] { return CheckSameShapes(ulysses, q, at::Tensor()); }));
  return OverlappedUlysses(ulysses, q, k, v, key_valid, o);
}

absl::StatusOr<at::Tensor> UspAttention(Communicator& ulysses, Communicator& ring,
                                        const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& key_valid,
                                        const UspOptions& o) {
  if (ring.size() == 1) return UlyssesAttention(ulysses, q, k, v, key_valid, o);
  auto r = UspCore(ulysses, ring, q, k, v, key_valid, at::Tensor(), at::Tensor(), at::Tensor(), o);
  DITSERVE_RETURN_IF_ERROR(r.status());
  return r->second;
}

absl::StatusOr<JointOutputs> JointUspAttention(Communicator& ulysses, Communicator& ring,
                                               const at::Tensor& text_q, const at::Tensor& text_k,
                                               const at::Tensor& text_v, const at::Tensor& image_q,
                                               const at::Tensor& image_k, const at::Tensor& image_v,
                                               const at::Tensor& image_valid,
                                               const UspOptions& o) {
  DITSERVE_RETURN_IF_ERROR(CheckQkv(text_q, text_k, text_v));
  DITSERVE_RETURN_IF_ERROR(CheckQkv(image_q, image_k, image_v));
  if (text_q.size(0) != image_q.size(0) || text_q.size(2) != image_q.size(2) ||
      text_q.size(3) != image_q.size(3) || text_q.scalar_type() != image_q.scalar_type()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "joint attention: text ", c10::str(text_q.sizes()), " and image ",
        c10::str(image_q.sizes()), " must agree on batch, heads, head size and dtype"));
  }
  const int sp = ulysses.size() * ring.size();
  const int sp_rank = ulysses.rank() + ulysses.size() * ring.rank();
  const int64_t T = text_q.size(1);
  const int64_t Si = image_q.size(1);
  if (T % sp == 0) {
    // Shard the text with the image: attention does not care where a key
    // sits, so [text shard, image shard] per rank gives the serial result.
    const int64_t t = T / sp;
    const auto shard = [&](const at::Tensor& x, const at::Tensor& img) {
      return at::cat({x.narrow(1, sp_rank * t, t), img}, 1);
    };
    at::Tensor valid;
    if (image_valid.defined()) {
      valid = at::cat({at::ones({image_q.size(0), t}, image_valid.options()), image_valid}, 1);
    }
    auto out = UspAttention(ulysses, ring, shard(text_q, image_q), shard(text_k, image_k),
                            shard(text_v, image_v), valid, o);
    DITSERVE_RETURN_IF_ERROR(out.status());
    auto text = GatherSequence(ulysses, ring, out->narrow(1, 0, t).contiguous(), T);
    DITSERVE_RETURN_IF_ERROR(text.status());
    Count(o, Bytes(out->narrow(1, 0, t)) * (sp - 1));
    return JointOutputs{*text, out->narrow(1, t, Si).contiguous()};
  }
  // Replicated text: every rank attends the text keys once (front) and
  // computes its heads' text output; the heads are gathered at the end.
  auto r = UspCore(ulysses, ring, image_q, image_k, image_v, image_valid, text_q, text_k, text_v, o);
  DITSERVE_RETURN_IF_ERROR(r.status());
  auto text = Gather(ulysses, r->first.to(text_q.scalar_type()).contiguous(), 2, o);
  DITSERVE_RETURN_IF_ERROR(text.status());
  return JointOutputs{*text, r->second};
}

SequenceShard ShardSequence(const at::Tensor& full, int sp_rank, int sp_size) {
  const int64_t S = full.size(1);
  const int64_t len = (S + sp_size - 1) / sp_size;
  const int64_t start = std::min<int64_t>(S, static_cast<int64_t>(sp_rank) * len);
  const int64_t real = std::max<int64_t>(0, std::min<int64_t>(S, start + len) - start);
  std::vector<int64_t> shape = full.sizes().vec();
  shape[1] = len;
  at::Tensor local = at::zeros(shape, full.options());
  if (real > 0) local.narrow(1, 0, real).copy_(full.narrow(1, start, real));
  at::Tensor valid = at::zeros({full.size(0), len}, full.options().dtype(at::kBool));
  if (real > 0) valid.narrow(1, 0, real).fill_(true);
  return {local, valid};
}

absl::StatusOr<at::Tensor> GatherSequence(Communicator& ulysses, Communicator& ring,
                                          const at::Tensor& local, int64_t total_length) {
  at::Tensor x = local;
  if (ulysses.size() > 1) {
    auto g = ulysses.AllGather(x, 1);
    DITSERVE_RETURN_IF_ERROR(g.status());
    x = *g;
  }
  if (ring.size() > 1) {
    auto g = ring.AllGather(x, 1);
    DITSERVE_RETURN_IF_ERROR(g.status());
    x = *g;
  }
  if (total_length > x.size(1)) {
    return absl::InvalidArgumentError(absl::StrCat("GatherSequence: total length ", total_length,
                                                   " exceeds the gathered ", x.size(1)));
  }
  return x.narrow(1, 0, total_length).contiguous();
}

}  // namespace ditserve::parallel
