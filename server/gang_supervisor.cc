#include "server/gang_supervisor.h"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/worker_exit_codes.h"
#include "server/metrics.h"
#include "util/free_port.h"
#include "parallel/shm_segment.h"
#include "util/process_gang.h"
#include "util/self_path.h"

namespace ditserve::server {
GangSupervisor::GangSupervisor(const ServerOptions& options,
                               std::function<void(const absl::Status&)> on_lost,
                               std::function<void()> on_restart)
    : options_(options),
      on_lost_(std::move(on_lost)),
      on_restart_(std::move(on_restart)) {}

GangSupervisor::~GangSupervisor() { Stop(); }

void GangSupervisor::Start(const std::string& control_address) {
  control_address_ = control_address;
  thread_ = std::thread([this] { Loop(); });
}

void GangSupervisor::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void GangSupervisor::Restart() { restart_.store(true); }

void GangSupervisor::Loop() {
  const std::string binary =
      options_.worker_binary.empty() ? util::ExecutableDirectory() + "/ditserve-worker" : options_.worker_binary;
  const int world = static_cast<int>(options_.worker.parallel.world_size());
  absl::Duration backoff = absl::Seconds(options_.restart_backoff_s);
  bool first = true;
  int port_retries = 0;  // immediate restarts after a picked port was taken
  while (!stop_.load()) {
    if (!first) {
      // Sleep the backoff in small slices so Stop() stays prompt.
      const absl::Time until = absl::Now() + backoff;
      while (!stop_.load() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
      if (stop_.load()) break;
      backoff = std::min(backoff * 2, absl::Seconds(30));
      if (on_restart_) on_restart_();
    }
    first = false;
    core::WorkerOptions base = options_.worker;
    base.control_address = control_address_;
    base.selfcheck = false;
    const bool pick_port = base.master_port == 0;
    if (pick_port) {
      auto port = util::PickFreePort();
      if (!port.ok()) {
        if (on_lost_) on_lost_(port.status());
        continue;
      }
      base.master_port = *port;
    }
    std::vector<util::ChildSpec> specs;
    for (int rank = 0; rank < world; ++rank) {
      core::WorkerOptions o = base;
      o.rank = rank;
      o.world_size = world;
      o.local_rank = rank;
      o.local_world_size = world;
      util::ChildSpec spec;
      spec.argv.push_back(binary);
      for (std::string& a : core::ToWorkerArgs(o)) spec.argv.push_back(std::move(a));
      specs.push_back(std::move(spec));
    }
    auto gang = util::ProcessGang::Start(std::move(specs));
    if (!gang.ok()) {
      if (on_lost_) on_lost_(gang.status());
      continue;
    }
    const absl::Time started = absl::Now();
    absl::Time next_sample = absl::Now();
    util::ProcessGang* g = gang->get();
    const util::GangWaitResult result = g->Wait(
        absl::InfiniteFuture(), /*stop_on_failure=*/true, absl::Seconds(options_.shutdown_grace_s),
        [&] {
          if (absl::Now() >= next_sample) {  // on this thread: ProcessGang is single-owner
            double rss = 0;
            for (pid_t pid : g->pids()) rss += ResidentBytes(pid);
            gang_rss_.store(rss);
            next_sample = absl::Now() + absl::Seconds(1);
          }
          return stop_.load() || restart_.load();
        });
    gang_rss_.store(0);
    // A rank that died while creating a shared-memory group leaves its name.
    for (const util::ChildExit& e : result.exits) parallel::ShmSegment::RemoveLeftovers(e.pid);
    if (stop_.load()) break;
    // A picked port can be taken before rank 0 binds it; rank 0 then exits at
    // once, before the gang served anything: start again on a new port.
    constexpr int kMaxPortRetries = 4;
    const bool port_taken = pick_port && !result.exits.empty() && result.exits[0].exited &&
                            result.exits[0].exit_code == core::kWorkerExitStorePortInUse;
    if (port_taken && port_retries < kMaxPortRetries && !restart_.load()) {
      ++port_retries;
      std::fprintf(stderr, "ditserve-server: port %d was taken before rank 0 bound it; starting the gang again\n",
                   base.master_port);
      first = true;
      continue;
    }
    port_retries = 0;
    std::string why = "the gang's ranks exited";
    if (restart_.exchange(false)) {
      why = "the gang was hung and has been stopped";
    } else if (result.first_failure.has_value()) {
      const util::ChildExit& bad = result.exits[*result.first_failure];
      why = absl::StrCat("rank ", bad.index, " ", bad.Describe());
    }
    std::fprintf(stderr, "ditserve-server: gang failed: %s; restarting\n", why.c_str());
    // A gang that served for a while earns a fresh backoff.
    if (absl::Now() - started > absl::Seconds(60)) backoff = absl::Seconds(options_.restart_backoff_s);
    if (on_lost_) on_lost_(absl::UnavailableError(why));
  }
}

}  // namespace ditserve::server
