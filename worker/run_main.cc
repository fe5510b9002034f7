// ditserve-run: starts a gang of ditserve-worker ranks on this machine (or
// this machine's share of a multi-node gang) and ends them together.
// Torch-free, so it starts instantly. Every worker flag is accepted and
// forwarded to the ranks.

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "parallel/parallel_config.h"
#include "planner/auto_parallel.h"
#include "parallel/shm_segment.h"
#include "util/free_port.h"
#include "util/process_gang.h"
#include "util/self_path.h"
#include "core/worker_exit_codes.h"
#include "core/worker_flags.h"

ABSL_FLAG(int, nproc, 1, "Ranks to start on this machine");
ABSL_FLAG(int, nnodes, 1, "Machines in the gang (each runs ditserve-run with the same --nproc)");
ABSL_FLAG(int, node_rank, 0, "Index of this machine (0 … nnodes-1); node 0 hosts rank 0");
ABSL_FLAG(std::string, worker_binary, "",
          "Path of ditserve-worker (default: next to this executable)");
ABSL_FLAG(std::string, parallel, "manual",
          "manual: the degree flags; auto: the planner picks the degrees for --nproc x --nnodes ranks from "
          "--hardware (logged with its prediction)");
ABSL_FLAG(std::string, hardware, "", "Hardware profile for --parallel auto (hardware/*.json)");
ABSL_FLAG(double, shutdown_grace_s, 10,
          "When a rank fails or a signal arrives, seconds between SIGTERM and SIGKILL for the "
          "other ranks");

namespace {

std::atomic<int> g_signal{0};  // set by the signal handler only
void OnSignal(int sig) { g_signal.store(sig); }

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "ditserve-run: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Starts W ranks of ditserve-worker and waits for them.\n"
      "  ditserve-run --nproc 4 --ulysses_degree 2 --ring_degree 2 --selfcheck\n"
      "Multi-node: ditserve-run --nproc 8 --nnodes 2 --node_rank N --master_addr HOST "
      "--master_port PORT ...");
  std::vector<std::string> prompts = ditserve::core::TakeRepeatedPrompts(argc, argv);
  absl::ParseCommandLine(argc, argv);
  ditserve::core::WorkerOptions base = ditserve::core::WorkerOptionsFromFlags();
  if (!prompts.empty()) base.prompts = prompts;
  const int nproc = absl::GetFlag(FLAGS_nproc);
  const int nnodes = absl::GetFlag(FLAGS_nnodes);
  const int node_rank = absl::GetFlag(FLAGS_node_rank);
  const double grace_s = absl::GetFlag(FLAGS_shutdown_grace_s);
  if (nproc < 1 || nproc > 1024) return Fail(2, absl::StrCat("--nproc must be in [1, 1024], got ", nproc));
  if (nnodes < 1 || nnodes > 1024) return Fail(2, absl::StrCat("--nnodes must be in [1, 1024], got ", nnodes));
  if (node_rank < 0 || node_rank >= nnodes) {
    return Fail(2, absl::StrCat("--node_rank must be in [0, ", nnodes, "), got ", node_rank));
  }
  if (grace_s < 0) return Fail(2, "--shutdown_grace_s must be >= 0");
  const int world = nproc * nnodes;
  const std::string parallel_mode = absl::GetFlag(FLAGS_parallel);
  if (parallel_mode != "manual" && parallel_mode != "auto") {
    return Fail(2, absl::StrCat("--parallel must be manual or auto, got '", parallel_mode, "'"));
  }
  if (parallel_mode == "auto") {
    if (!(base.parallel == ditserve::parallel::ParallelConfig{})) {
      return Fail(2, "--parallel auto chooses the degrees: drop --ulysses_degree, --ring_degree, "
                     "--pipefusion_parallel_degree, --use_cfg_parallel and --data_parallel_degree");
    }
    if (base.generation.model.empty()) return Fail(2, "--parallel auto needs --model");
    ditserve::planner::AutoParallelRequest a;
    a.model_dir = base.generation.model;
    a.hardware_path = absl::GetFlag(FLAGS_hardware);
    a.world_size = world;
    a.nodes = nnodes;
    a.height = base.generation.height;
    a.width = base.generation.width;
    a.steps = base.generation.num_inference_steps;
    a.images = std::max<int>(1, static_cast<int>(base.prompts.size()));
    a.guidance_scale = base.generation.guidance_scale;
    a.true_cfg_scale = base.generation.true_cfg_scale;
    a.max_sequence_length = base.generation.max_sequence_length;
    a.pipefusion = base.pipefusion;
    a.parallel_vae = base.generation.vae.parallel;
    auto choice = ditserve::planner::ChooseParallelConfig(a);
    if (!choice.ok()) return Fail(2, std::string(choice.status().message()));
    base.parallel = choice->config;
    std::fprintf(stderr, "ditserve-run: --parallel auto chose %s (%s)\n", base.parallel.ToString().c_str(),
                 choice->why.c_str());
  } else if (!absl::GetFlag(FLAGS_hardware).empty()) {
    return Fail(2, "--hardware is for --parallel auto");
  }
  if (absl::Status s = ditserve::parallel::Validate(base.parallel, world); !s.ok()) {
    return Fail(2, absl::StrCat(s.message(), " (--nproc ", nproc, " x --nnodes ", nnodes, ")"));
  }
  if (!base.selfcheck && !base.generation.model.empty()) {
    // Reject a configuration that cannot run before starting any rank:
    // a generation job, or (with --control_address) serving for ditserve-server.
    const absl::Status s = base.control_address.empty() ? ditserve::core::ValidateGenerationJob(base)
                                                        : ditserve::core::ValidateServing(base);
    if (!s.ok()) return Fail(2, std::string(s.message()));
  }
  const bool pick_port = base.master_port == 0;
  if (pick_port && nnodes > 1) return Fail(2, "--master_port is required when --nnodes > 1");
  std::string worker = absl::GetFlag(FLAGS_worker_binary);
  if (worker.empty()) worker = ditserve::util::ExecutableDirectory() + "/ditserve-worker";

  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  // A port picked here is free when picked, not when rank 0 binds it: another
  // process may take it meanwhile. Rank 0 then exits kWorkerExitStorePortInUse
  // at once, and the gang starts again on a newly picked port.
  constexpr int kPortAttempts = 5;
  ditserve::util::GangWaitResult result;
  for (int attempt = 1;; ++attempt) {
    if (pick_port) {
      auto port = ditserve::util::PickFreePort();
      if (!port.ok()) return Fail(1, std::string(port.status().message()));
      base.master_port = *port;
    }
    std::vector<ditserve::util::ChildSpec> specs;
    for (int i = 0; i < nproc; ++i) {
      ditserve::core::WorkerOptions o = base;
      o.rank = node_rank * nproc + i;
      o.world_size = world;
      o.local_rank = i;
      o.local_world_size = nproc;
      ditserve::util::ChildSpec spec;
      spec.argv.push_back(worker);
      for (std::string& a : ditserve::core::ToWorkerArgs(o)) spec.argv.push_back(std::move(a));
      specs.push_back(std::move(spec));
    }
    auto gang = ditserve::util::ProcessGang::Start(std::move(specs));
    if (!gang.ok()) return Fail(1, std::string(gang.status().message()));
    result = (*gang)->Wait(absl::InfiniteFuture(), /*stop_on_failure=*/true, absl::Seconds(grace_s),
                           [] { return g_signal.load() != 0; });
    const bool port_taken = !result.stopped && !result.exits.empty() && result.exits[0].exited &&
                            result.exits[0].exit_code == ditserve::core::kWorkerExitStorePortInUse;
    if (!pick_port || !port_taken || attempt == kPortAttempts) break;
    for (const auto& e : result.exits) ditserve::parallel::ShmSegment::RemoveLeftovers(e.pid);
    std::fprintf(stderr, "ditserve-run: port %d was taken before rank 0 bound it; starting again\n",
                 base.master_port);
  }
  // A rank that died while creating a shared-memory group leaves its name.
  for (const auto& e : result.exits) ditserve::parallel::ShmSegment::RemoveLeftovers(e.pid);
  if (result.stopped) {
    return Fail(128 + g_signal.load(),
                absl::StrCat("stopped by signal ", g_signal.load(), "; all ranks ended"));
  }
  if (result.first_failure.has_value()) {
    const auto& bad = result.exits[*result.first_failure];
    return Fail(1, absl::StrCat("rank ", node_rank * nproc + bad.index, " ", bad.Describe(),
                                "; the other ranks were stopped"));
  }
  return 0;
}
