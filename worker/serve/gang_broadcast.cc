#include "worker/serve/gang_broadcast.h"

#include <cstring>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace ditserve::worker::serve {

absl::StatusOr<GangMessage> BroadcastGangMessage(parallel::Communicator& control,
                                                 const GangMessage& message) {
  const bool root = control.rank() == 0;
  at::Tensor header = at::zeros({2}, at::kLong);
  if (root) {
    header[0] = static_cast<int64_t>(message.command);
    header[1] = static_cast<int64_t>(message.payload.size());
  }
  if (absl::Status s = control.Broadcast(header, 0); !s.ok()) return s;
  GangMessage out;
  const int64_t command = header[0].item<int64_t>();
  const int64_t length = header[1].item<int64_t>();
  if (command < 0 || command > 2 || length < 0 || length > (int64_t{1} << 30)) {
    return absl::DataLossError(
        absl::StrCat("bad gang message header: command ", command, ", length ", length));
  }
  out.command = static_cast<GangCommand>(command);
  if (length == 0) return out;
  at::Tensor bytes = at::empty({length}, at::kByte);
  if (root) std::memcpy(bytes.data_ptr<uint8_t>(), message.payload.data(), length);
  if (absl::Status s = control.Broadcast(bytes, 0); !s.ok()) return s;
  out.payload.assign(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), length);
  return out;
}

}  // namespace ditserve::worker::serve
