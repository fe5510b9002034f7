#pragma once

// Spawn mode (--spawn_workers): starts the gang's W ranks as child
// processes of the frontend and restarts the gang whenever it fails. Each
// rank is ditserve-worker with the same flags ditserve-run would give it
// plus the frontend's control address. A failure (any rank exits or is
// killed; a hung rank makes its peers' collectives time out and exit) is
// reported through `on_lost` before the next gang starts, after a backoff
// that doubles per failure in a row (up to 30 s). Torch-free.

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "server/server_options.h"

namespace ditserve::server {

class GangSupervisor {
 public:
  // `on_lost(why)` runs on the supervisor's thread after a gang ended
  // unexpectedly (its processes are already reaped); `on_restart` right
  // before a replacement starts.
  GangSupervisor(const ServerOptions& options, std::function<void(const absl::Status&)> on_lost,
                 std::function<void()> on_restart);
  // Stops the gang (SIGTERM, then SIGKILL after --shutdown_grace_s) and joins.
  ~GangSupervisor();

  // Starts the gang's ranks, which attach to `control_address` (host:port).
  void Start(const std::string& control_address);
  void Stop();
  // Kills the current gang (SIGTERM, then SIGKILL after the grace) and
  // starts a new one, as after a failure. Thread-safe.
  void Restart();
  // Resident memory of the current gang's ranks, summed (bytes).
  double gang_resident_bytes() const { return gang_rss_.load(); }

 private:
  void Loop();

  const ServerOptions options_;
  std::string control_address_;  // set by Start, before the thread
  std::function<void(const absl::Status&)> on_lost_;
  std::function<void()> on_restart_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> restart_{false};
  std::atomic<double> gang_rss_{0};
  std::thread thread_;
};

}  // namespace ditserve::server
