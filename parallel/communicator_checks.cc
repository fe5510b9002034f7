#include "parallel/communicator_checks.h"

#include <ATen/ATen.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ditserve::parallel {
namespace {

std::string ShapeString(const at::Tensor& meta_row) {
  auto m = meta_row.accessor<int64_t, 1>();
  const int64_t ndim = m[0];
  std::vector<int64_t> sizes;
  for (int64_t i = 0; i < ndim && i < kShapeMetaSlots - 3; ++i) sizes.push_back(m[3 + i]);
  return absl::StrCat("[", absl::StrJoin(sizes, ", "), "] ",
                      c10::toString(static_cast<at::ScalarType>(m[1])));
}

}  // namespace

at::Tensor ShapeMeta(const at::Tensor& t) {
  at::Tensor meta = at::zeros({kShapeMetaSlots}, at::kLong);
  auto m = meta.accessor<int64_t, 1>();
  m[0] = t.dim();
  m[1] = static_cast<int64_t>(t.scalar_type());
  m[2] = t.numel();
  for (int64_t i = 0; i < t.dim() && i < kShapeMetaSlots - 3; ++i) m[3 + i] = t.size(i);
  return meta;
}

absl::Status CompareShapeMeta(const at::Tensor& gathered, const at::Tensor& mine, const char* op,
                              const std::string& group, int rank) {
  for (int64_t i = 0; i < gathered.size(0); ++i) {
    if (!at::equal(gathered[i], mine)) {
      return absl::InvalidArgumentError(absl::StrCat(
          op, " on group ", group, ": shapes differ across ranks: rank ", rank, " has ",
          ShapeString(mine), ", rank ", i, " has ", ShapeString(gathered[i])));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckReducible(const at::Tensor& t) {
  if (t.scalar_type() == at::kBool) return absl::InvalidArgumentError("all_reduce of bool tensors is not supported");
  return absl::OkStatus();
}

absl::Status CheckDim(const char* op, const std::string& group, const at::Tensor& t, int64_t dim) {
  if (t.dim() == 0 || dim < -t.dim() || dim >= t.dim()) {
    return absl::InvalidArgumentError(absl::StrCat(op, " on group ", group, ": dimension ", dim,
                                                   " is out of range for a ", t.dim(), "-d tensor"));
  }
  return absl::OkStatus();
}

absl::Status CheckPeer(const char* op, const std::string& group, int peer, int size) {
  if (peer < 0 || peer >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, " on group ", group, ": rank ", peer, " is outside [0, ", size, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckCpu(const char* op, const std::string& group, const char* backend,
                      const at::Tensor& t) {
  if (t.defined() && !t.device().is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat(op, " on group ", group, ": the ", backend,
                                                   " communicator takes CPU tensors, got ",
                                                   t.device().str()));
  }
  return absl::OkStatus();
}

}  // namespace ditserve::parallel
