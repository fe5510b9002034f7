// ditserve-worker: one rank of a gang. Joins the rendezvous, builds the
// process groups and runs the collective self-check (--selfcheck), the
// generation job (--model with --prompt), or serves the model for
// ditserve-server (--model with --control_address). Usually started by
// ditserve-run or by ditserve-server --spawn_workers.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <string>

#include <c10/core/Device.h>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "parallel/process_groups.h"
#include "parallel/rendezvous.h"
#include "parallel/world_config.h"
#include "util/malloc_tuning.h"
#include "worker/device.h"
#include "worker/generation_job.h"
#include "worker/selfcheck.h"
#ifdef DITSERVE_WORKER_SERVE
#include "worker/serve/gang_engine.h"
#include "worker/serve/serve_loop.h"
#endif
#include "core/worker_exit_codes.h"
#include "core/worker_flags.h"

namespace {

// Ends the process without running exit handlers: Debian's libsentencepiece
// (loaded for the T5 tokenizer) registers handlers that crash when they run
// in a process that also uses abseil's flags.
[[noreturn]] void Exit(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "ditserve-worker: %s\n", message.c_str());
  Exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  // Tensor work reuses freed memory instead of page-faulting it back in.
  ditserve::util::KeepFreedMemoryForReuse();
  absl::SetProgramUsageMessage(
      "One rank of a ditserve gang. Usually started by ditserve-run:\n"
      "  ditserve-run --nproc 4 --ulysses_degree 2 --ring_degree 2 --selfcheck");
  std::vector<std::string> prompts = ditserve::core::TakeRepeatedPrompts(argc, argv);
  absl::ParseCommandLine(argc, argv);
  ditserve::core::WorkerOptions options = ditserve::core::WorkerOptionsFromFlags();
  if (!prompts.empty()) options.prompts = prompts;
  namespace parallel = ditserve::parallel;

  if (absl::Status s = parallel::Validate(options.parallel, options.world_size); !s.ok()) {
    return Fail(2, std::string(s.message()));
  }
  auto world = parallel::WorldConfig::Create(options.parallel, options.rank);
  if (!world.ok()) return Fail(2, std::string(world.status().message()));
  const bool serve = !options.selfcheck && !options.generation.model.empty() && !options.control_address.empty();
  const bool generate = !options.selfcheck && !options.generation.model.empty() && !serve;
  if (!options.selfcheck && !generate && !serve) return Fail(2, "nothing to do: pass --selfcheck or --model");
#ifndef DITSERVE_WORKER_SERVE
  if (serve) return Fail(2, "this build has no serving (configure with -DDITSERVE_SERVER=ON)");
#endif
  if (serve) {
    if (absl::Status s = ditserve::core::ValidateServing(options); !s.ok()) {
      return Fail(2, std::string(s.message()));
    }
  }
  if (generate) {
    if (absl::Status s = ditserve::core::ValidateGenerationJob(options); !s.ok()) {
      return Fail(2, std::string(s.message()));
    }
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(options.threads > 0 ? options.threads
                                          : std::max(1, cores / std::max(1, options.local_world_size)));
  auto device = ditserve::worker::ResolveDevice(options.device, options.local_rank,
                                                options.local_world_size,
                                                ditserve::worker::CudaDeviceCount());
  if (!device.ok()) return Fail(2, std::string(device.status().message()));
  if (options.selfcheck_elements < 1 || options.selfcheck_elements > (1 << 26)) {
    return Fail(2, absl::StrCat("--selfcheck_elements must be in [1, 67108864], got ",
                                options.selfcheck_elements));
  }

  parallel::RendezvousOptions rdzv;
  rdzv.master_addr = options.master_addr;
  rdzv.master_port = options.master_port;
  rdzv.rank = options.rank;
  rdzv.world_size = options.world_size;
  rdzv.timeout = absl::Seconds(options.rendezvous_timeout_s);
  auto store = parallel::JoinRendezvous(rdzv);
  if (!store.ok()) {
    return Fail(store.status().code() == absl::StatusCode::kAlreadyExists
                    ? ditserve::core::kWorkerExitStorePortInUse
                    : ditserve::core::kWorkerExitFailure,
                std::string(store.status().message()));
  }

  parallel::ProcessGroupsOptions pg;
  pg.data_backend = device->is_cuda() ? parallel::Backend::kNccl : parallel::Backend::kGloo;
  pg.timeout = absl::Seconds(options.collective_timeout_s);
  pg.gloo_interface = options.gloo_socket_ifname;
  pg.shared_memory = options.shared_memory_transport;
  pg.loopback_only = options.master_addr == "127.0.0.1" || options.master_addr == "localhost";
  pg.cuda_device = device->is_cuda() ? device->index() : 0;
  // Generation agrees on every tensor shape once per call
  // (GangModel::AgreeOnCall), so the per-collective check only costs a
  // round trip per collective; the self-check keeps it.
  pg.check_shapes = options.selfcheck;
  auto groups = parallel::ProcessGroups::Create(*world, *store, pg);
  if (!groups.ok()) return Fail(1, std::string(groups.status().message()));

#ifdef DITSERVE_WORKER_SERVE
  if (serve) {
    const std::string dtype = ditserve::core::ResolvedDtype(options.generation, device->is_cuda());
    auto engine = ditserve::worker::serve::GangEngine::Load(
        options.generation.model, dtype == "bf16" ? at::kBFloat16 : at::kFloat, *device, **groups,
        options.pipefusion, options.generation.vae);
    if (!engine.ok()) {
      return Fail(engine.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                  absl::StrCat("rank ", options.rank, ": ", engine.status().message()));
    }
    absl::Status s = ditserve::worker::serve::RunServeLoop(options, device->str(), dtype, **engine,
                                                          **groups);
    if (!s.ok()) {
      (*groups)->AbortAll();
      return Fail(1, absl::StrCat("rank ", options.rank, ": ", s.message()));
    }
    Exit(0);
  }
#endif
  if (generate) {
    absl::Status s = ditserve::worker::RunGenerationJob(options, **groups, *device);
    if (!s.ok()) {
      return Fail(s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                  absl::StrCat("rank ", options.rank, ": ", s.message()));
    }
    Exit(0);
  }
  auto rows = ditserve::worker::RunSelfCheck(**groups, *device, options.selfcheck_elements);
  auto merged = ditserve::worker::GatherSelfCheck(**groups, rows);
  if (!merged.ok()) return Fail(1, std::string(merged.status().message()));
  if (options.rank != 0) return 0;
  int failed = 0;
  for (const auto& row : *merged) failed += row.ok ? 0 : 1;
  std::printf("ditserve self-check: world %d (%s), device %s, %d elements per tensor\n",
              options.world_size, options.parallel.ToString().c_str(), device->str().c_str(),
              options.selfcheck_elements);
  std::printf("%s", ditserve::worker::FormatSelfCheckTable(*merged).c_str());
  if (failed > 0) {
    std::printf("self-check FAILED: %d of %zu checks\n", failed, merged->size());
    return 1;
  }
  std::printf("self-check passed: %zu checks\n", merged->size());
  return 0;
}
