#pragma once

// Argument checks and the cross-rank shape check shared by the
// communicators (Gloo, shared memory, NCCL), so all reject bad calls with
// the same INVALID_ARGUMENT messages.

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

namespace ditserve::parallel {

// A rank's shape and dtype as a fixed-size int64 row (kShapeMetaSlots
// values), gathered from every member by the shape check.
inline constexpr int kShapeMetaSlots = 16;  // ndim, dtype, numel, up to 13 sizes
at::Tensor ShapeMeta(const at::Tensor& t);

// `gathered` holds every member's ShapeMeta row [size, kShapeMetaSlots];
// INVALID_ARGUMENT naming both ranks and shapes when a row differs from
// `mine`.
absl::Status CompareShapeMeta(const at::Tensor& gathered, const at::Tensor& mine, const char* op,
                              const std::string& group, int rank);

// INVALID_ARGUMENT for a tensor all_reduce cannot sum (bool).
absl::Status CheckReducible(const at::Tensor& t);
// INVALID_ARGUMENT unless `dim` indexes a dimension of `t`.
absl::Status CheckDim(const char* op, const std::string& group, const at::Tensor& t, int64_t dim);
// INVALID_ARGUMENT unless 0 <= peer < size.
absl::Status CheckPeer(const char* op, const std::string& group, int peer, int size);
// INVALID_ARGUMENT unless `t` is on the CPU (`backend` names the caller).
absl::Status CheckCpu(const char* op, const std::string& group, const char* backend,
                      const at::Tensor& t);

}  // namespace ditserve::parallel
