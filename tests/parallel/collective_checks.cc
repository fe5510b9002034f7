#include "tests/parallel/collective_checks.h"

#include "absl/strings/str_cat.h"
#include "tests/parallel/test_gang.h"
#include "util/status_macros.h"

namespace ditserve::parallel {
namespace {

// A tensor every rank can rebuild for any global rank: small integers, so
// f16/bf16 hold them exactly. Shape [3, 5] transposed: non-contiguous [5, 3].
at::Tensor Input(int global_rank, at::ScalarType dtype, c10::Device device) {
  at::Tensor base = (at::arange(15, at::kFloat).reshape({3, 5}) + global_rank).remainder(13);
  return base.to(device, dtype).t();  // non-contiguous
}

absl::Status CheckEqual(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  if (!got.sizes().equals(want.sizes())) {
    return absl::InternalError(absl::StrCat(what, ": shape ", c10::str(got.sizes()), " want ",
                                            c10::str(want.sizes())));
  }
  if (got.scalar_type() != want.scalar_type()) {
    return absl::InternalError(absl::StrCat(what, ": dtype differs"));
  }
  if (!at::equal(got, want)) {
    return absl::InternalError(absl::StrCat(what, ": values differ; max diff ",
                                            (got.to(at::kFloat) - want.to(at::kFloat)).abs().max().item<float>()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckGroupCollectives(Communicator& comm, const std::vector<int>& members, int me,
                                   at::ScalarType dtype, c10::Device device) {
  const auto Input = [&](int rank, at::ScalarType type) { return parallel::Input(rank, type, device); };
  const int p = comm.size();
  const int g = comm.rank();
  const std::string where = absl::StrCat(comm.name(), " ", c10::toString(dtype));
  DITSERVE_RETURN_IF_ERROR(Check(members[g] == me, where + ": group rank mismatch"));

  // all_reduce sum and max, in place into a non-contiguous view; f16/bf16
  // are summed in f32 and rounded once.
  {
    at::Tensor t = Input(me, dtype);
    DITSERVE_RETURN_IF_ERROR(comm.AllReduce(t, ReduceOp::kSum));
    at::Tensor want = at::zeros({5, 3}, at::TensorOptions().dtype(at::kFloat).device(device));
    for (int m : members) want += Input(m, at::kFloat);
    DITSERVE_RETURN_IF_ERROR(CheckEqual(t, want.to(dtype), where + " all_reduce(sum)"));
    DITSERVE_RETURN_IF_ERROR(Check(!t.is_contiguous(), where + ": result left the caller's view"));
  }
  {
    at::Tensor t = Input(me, dtype);
    DITSERVE_RETURN_IF_ERROR(comm.AllReduce(t, ReduceOp::kMax));
    at::Tensor want = Input(members[0], dtype).clone();
    for (int m : members) want = at::maximum(want, Input(m, dtype));
    DITSERVE_RETURN_IF_ERROR(CheckEqual(t, want, where + " all_reduce(max)"));
  }
  // all_gather along each dimension of an odd-sized non-contiguous tensor.
  for (int64_t dim : {0, 1, -1}) {
    auto got = comm.AllGather(Input(me, dtype), dim);
    DITSERVE_RETURN_IF_ERROR(got.status());
    std::vector<at::Tensor> parts;
    for (int m : members) parts.push_back(Input(m, dtype));
    DITSERVE_RETURN_IF_ERROR(CheckEqual(*got, at::cat(parts, dim), absl::StrCat(where, " all_gather dim ", dim)));
  }
  // all_to_all [2, 3p, 5] scatter dim 1, gather dim 2 (Ulysses' pattern) and
  // scatter 0 / gather 0.
  {
    const auto make = [&](int rank) {
      return (at::arange(2 * 3 * p * 5, at::kFloat).reshape({2, 3 * p, 5}) * 7 + rank)
          .remainder(97)
          .to(device, dtype);
    };
    auto got = comm.AllToAll(make(me), 1, 2);
    DITSERVE_RETURN_IF_ERROR(got.status());
    std::vector<at::Tensor> parts;  // from member i: its chunk g along dim 1
    for (int m : members) parts.push_back(make(m).narrow(1, 3 * g, 3));
    DITSERVE_RETURN_IF_ERROR(CheckEqual(*got, at::cat(parts, 2), where + " all_to_all(1->2)"));
    at::Tensor flat = make(me).reshape({-1}).narrow(0, 0, 4 * p);
    auto got0 = comm.AllToAll(flat, 0, 0);
    DITSERVE_RETURN_IF_ERROR(got0.status());
    std::vector<at::Tensor> parts0;
    for (int m : members) parts0.push_back(make(m).reshape({-1}).narrow(0, 4 * g, 4));
    DITSERVE_RETURN_IF_ERROR(CheckEqual(*got0, at::cat(parts0, 0), where + " all_to_all(0->0)"));
  }
  // broadcast from the last group rank into a non-contiguous view.
  {
    at::Tensor t = Input(me, dtype);
    DITSERVE_RETURN_IF_ERROR(comm.Broadcast(t, p - 1));
    DITSERVE_RETURN_IF_ERROR(CheckEqual(t, Input(members[p - 1], dtype), where + " broadcast"));
  }
  // send/recv around the ring, receiving into a non-contiguous view.
  if (p > 1) {
    const int next = (g + 1) % p, prev = (g + p - 1) % p;
    at::Tensor in = at::zeros({3, 5}, at::TensorOptions().dtype(dtype).device(device)).t();
    auto recv = comm.Recv(in, prev, 7);
    DITSERVE_RETURN_IF_ERROR(recv.status());
    auto send = comm.Send(Input(me, dtype), next, 7);
    DITSERVE_RETURN_IF_ERROR(send.status());
    DITSERVE_RETURN_IF_ERROR((*send)->Wait());
    DITSERVE_RETURN_IF_ERROR((*recv)->Wait());
    DITSERVE_RETURN_IF_ERROR(CheckEqual(in, Input(members[prev], dtype), where + " send/recv"));
  }
  return comm.Barrier();
}


}  // namespace ditserve::parallel
