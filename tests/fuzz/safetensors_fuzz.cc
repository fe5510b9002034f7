// The safetensors header parser on arbitrary bytes: OK or INVALID_ARGUMENT,
// and an OK header keeps every tensor inside the input, its byte range the
// size its dtype and shape say.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <c10/core/ScalarType.h>

#include "worker/weights/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto header = ditserve::worker::weights::ParseSafetensors(bytes);
  if (!header.ok()) {
    if (header.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (header->data_offset > size) std::abort();
  for (const auto& t : header->tensors) {
    if (t.begin > t.end || header->data_offset + t.end > size) std::abort();
    uint64_t elements = 1;
    for (int64_t d : t.shape) {
      if (d < 0) std::abort();
      elements *= static_cast<uint64_t>(d);
    }
    if ((t.end - t.begin) != elements * c10::elementSize(t.dtype)) std::abort();
  }
  return 0;
}
