// The public API's request validator on arbitrary GenerateRequest bytes:
// INVALID_ARGUMENT, or parameters inside every limit, never a crash.
#include <cstdint>
#include <cstdlib>

#include "server/request_validation.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ditserve::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  ditserve::server::Limits limits;  // the server's defaults
  ditserve::server::ModelShape shape;
  shape.size_multiple = 16;
  shape.default_size = 512;
  shape.parallel.ulysses_degree = 2;
  auto params = ditserve::server::ValidateRequest(request, limits, shape, 42);
  if (!params.ok()) {
    if (params.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  const auto& p = *params;
  if (p.height < 16 || p.width < 16 || p.height % 16 != 0 || p.width % 16 != 0) std::abort();
  if (static_cast<int64_t>(p.height) * p.width > limits.max_pixels) std::abort();
  if (p.num_inference_steps < 1 || p.num_inference_steps > limits.max_steps) std::abort();
  if (p.num_images < 1 || p.num_images > limits.max_images) std::abort();
  if (static_cast<int>(p.prompt.size()) > limits.max_prompt_bytes) std::abort();
  if (p.quality < 1 || p.quality > 100) std::abort();
  return 0;
}
