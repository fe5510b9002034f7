#pragma once

// Exit statuses of ditserve-worker that its launchers (ditserve-run, the
// server's GangSupervisor) act on. Torch-free, so launchers can include it.

namespace ditserve::core {

// 1: a runtime failure (named on stderr). 2: a configuration that cannot run.
inline constexpr int kWorkerExitFailure = 1;
inline constexpr int kWorkerExitBadConfiguration = 2;
// Rank 0 could not host the rendezvous store: its --master_port was taken
// (EADDRINUSE). A launcher that picked that port itself picks another one
// and starts the gang again; a port the user chose is reported as is.
inline constexpr int kWorkerExitStorePortInUse = 3;

}  // namespace ditserve::core
