#include "parallel/rendezvous.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ditserve::parallel {

absl::StatusOr<c10::intrusive_ptr<c10d::Store>> JoinRendezvous(const RendezvousOptions& options) {
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--world_size must be >= 1, got ", options.world_size));
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("--rank must be in [0, ", options.world_size,
                                                   "), got ", options.rank));
  }
  if (options.master_port < 1 || options.master_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--master_port must be in [1, 65535], got ", options.master_port));
  }
  if (options.master_addr.empty()) return absl::InvalidArgumentError("--master_addr is empty");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the rendezvous timeout must be positive");
  }
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(options.master_port);
  store_options.isServer = options.rank == 0;
  store_options.numWorkers = static_cast<size_t>(options.world_size);
  store_options.waitWorkers = true;
  store_options.timeout = absl::ToChronoMilliseconds(options.timeout);
  const std::string where = absl::StrCat(options.master_addr, ":", options.master_port);
  try {
    auto store = c10::make_intrusive<c10d::TCPStore>(options.master_addr, store_options);
    return c10::intrusive_ptr<c10d::Store>(std::move(store));
  } catch (const std::exception& e) {
    const std::string what = e.what();
    const std::string first_line = what.substr(0, what.find('\n'));
    const std::string message = absl::StrCat(
        "rank ", options.rank, " of ", options.world_size, " could not join the rendezvous at ",
        where, " within ", absl::FormatDuration(options.timeout), ": ", first_line);
    if (options.rank == 0 &&
        (absl::StrContains(what, "EADDRINUSE") || absl::StrContains(what, "ddress already in use"))) {
      return absl::AlreadyExistsError(message);
    }
    if (absl::StrContains(what, "imeout") || absl::StrContains(what, "imed out")) {
      return absl::DeadlineExceededError(message);
    }
    return absl::UnavailableError(message);
  }
}

}  // namespace ditserve::parallel
