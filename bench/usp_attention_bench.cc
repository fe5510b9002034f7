// Serial attention versus USP on 2 ranks (Ulysses 2, then Ring 2), one
// thread per rank, and the bytes each rank sends per attention call next to
// xDiT's communication-volume predictions.
//
//   build/bin/ditserve-bench-usp [--seq 4096 --heads 24 --head_dim 128 --repeats 3]
//                                [--shared_memory=false]  # Gloo over TCP instead
//
// Runs the serial case in this process, then starts 2 copies of itself as
// ranks for each parallel mode.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "kernels/attention.h"
#include "parallel/process_groups.h"
#include "parallel/rendezvous.h"
#include "parallel/usp_attention.h"
#include "util/free_port.h"
#include "util/malloc_tuning.h"
#include "util/process_gang.h"

ABSL_FLAG(int, seq, 4096, "Sequence length S");
ABSL_FLAG(int, heads, 24, "Heads H");
ABSL_FLAG(int, head_dim, 128, "Head size D");
ABSL_FLAG(int, repeats, 3, "Timed calls per case (the median is reported)");
ABSL_FLAG(bool, shared_memory, true,
          "Ranks exchange through shared memory (false: Gloo over loopback TCP)");
ABSL_FLAG(std::string, mode, "", "internal: ulysses, ring or ideal, run as a rank");
ABSL_FLAG(int, rank, 0, "internal");
ABSL_FLAG(int, master_port, 0, "internal");

namespace {

using namespace ditserve;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string SelfExe() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0)));
}

// One rank of a 2-rank run; rank 0 prints "time bytes wait". Mode "ideal":
// each rank attends its half of the heads over the whole sequence, with no
// transfers, both ranks at once (the two cores' contention without any
// communication: the bound for ulysses and ring).
int RunRank(const std::string& mode, int rank, int port, int S, int H, int D, int repeats) {
  parallel::ParallelConfig config;
  (mode == "ring" ? config.ring_degree : config.ulysses_degree) = 2;
  auto world = parallel::WorldConfig::Create(config, rank);
  parallel::RendezvousOptions rdzv;
  rdzv.master_port = port;
  rdzv.rank = rank;
  rdzv.world_size = 2;
  auto store = parallel::JoinRendezvous(rdzv);
  if (!world.ok() || !store.ok()) return 1;
  parallel::ProcessGroupsOptions pg;
  pg.check_shapes = false;  // as the generation pipeline runs them
  pg.shared_memory = absl::GetFlag(FLAGS_shared_memory);
  auto groups = parallel::ProcessGroups::Create(*world, *store, pg);
  if (!groups.ok()) {
    std::fprintf(stderr, "%s\n", groups.status().ToString().c_str());
    return 1;
  }
  at::manual_seed(rank);
  const bool ideal = mode == "ideal";
  const std::vector<int64_t> shape = ideal ? std::vector<int64_t>{1, S, H / 2, D} : std::vector<int64_t>{1, S / 2, H, D};
  const at::Tensor q = at::randn(shape), k = at::randn(shape), v = at::randn(shape);
  auto& u = (*groups)->group(parallel::Dim::kUlysses);
  auto& r = (*groups)->group(parallel::Dim::kRing);
  std::vector<double> times, waits;
  parallel::UspStats stats;
  for (int i = 0; i < repeats + 1; ++i) {  // the first call warms up
    if (!(*groups)->control().Barrier().ok()) return 1;
    parallel::UspOptions options;
    parallel::UspStats call;
    options.stats = i == 0 ? &stats : &call;
    const auto start = std::chrono::steady_clock::now();
    if (ideal) {
      if (!kernels::AttentionWithLse(q, k, v, at::Tensor()).ok()) return 1;
    } else {
      auto out = parallel::UspAttention(u, r, q, k, v, at::Tensor(), options);
      if (!out.ok()) {
        std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
        return 1;
      }
    }
    // The call is done when both ranks are done.
    if (!(*groups)->control().Barrier().ok()) return 1;
    if (i > 0) times.push_back(Seconds(start));
    if (i > 0) waits.push_back(call.wait_seconds);
  }
  if (rank == 0) {
    std::printf("%.6f %lld %.6f\n", Median(times), static_cast<long long>(stats.bytes_sent), Median(waits));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // As the engine's processes do (ditserve-worker, ditserve-generate).
  ditserve::util::KeepFreedMemoryForReuse();
  absl::ParseCommandLine(argc, argv);
  at::set_num_threads(1);
  const int S = absl::GetFlag(FLAGS_seq), H = absl::GetFlag(FLAGS_heads),
            D = absl::GetFlag(FLAGS_head_dim), repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  if (S < 2 || S % 2 != 0 || H < 2 || H % 2 != 0 || D < 1) {
    std::fprintf(stderr, "ditserve-bench-usp: --seq and --heads must be even and >= 2\n");
    return 2;
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (!mode.empty()) {
    return RunRank(mode, absl::GetFlag(FLAGS_rank), absl::GetFlag(FLAGS_master_port), S, H, D,
                   repeats);
  }
  std::printf("attention S=%d H=%d D=%d fp32, B=1, one thread per rank, median of %d, %s\n", S, H, D,
              repeats, absl::GetFlag(FLAGS_shared_memory) ? "shared memory" : "Gloo over TCP");
  at::manual_seed(0);
  const at::Tensor q = at::randn({1, S, H, D}), k = at::randn({1, S, H, D}), v = at::randn({1, S, H, D});
  std::vector<double> serial_times;
  for (int i = 0; i < repeats + 1; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto r = kernels::AttentionWithLse(q, k, v, at::Tensor());
    if (!r.ok()) return 1;
    if (i > 0) serial_times.push_back(Seconds(start));
  }
  const double serial = Median(serial_times);
  std::printf("%-10s %9s %8s %9s %14s %22s\n", "mode", "time_s", "speedup", "wait_s", "bytes/rank",
              "xDiT predicts");
  std::printf("%-10s %9.3f %8s %9s %14s %22s\n", "serial", serial, "1.00x", "-", "0", "-");
  const double elems = static_cast<double>(S) * H * D;  // p·hs
  for (const std::string m : {"ideal", "ulysses", "ring"}) {
    auto port = util::PickFreePort();
    if (!port.ok()) return 1;
    const std::string out_path = absl::StrCat("/tmp/ditserve-bench-usp-", getpid(), ".out");
    std::vector<util::ChildSpec> specs;
    for (int rank = 0; rank < 2; ++rank) {
      util::ChildSpec spec;
      spec.argv = {SelfExe(), "--mode=" + m, absl::StrCat("--rank=", rank),
                   absl::StrCat("--master_port=", *port), absl::StrCat("--seq=", S),
                   absl::StrCat("--heads=", H), absl::StrCat("--head_dim=", D),
                   absl::StrCat("--repeats=", repeats),
                   absl::StrCat("--shared_memory=", absl::GetFlag(FLAGS_shared_memory) ? "true" : "false")};
      spec.env = {{"OMP_NUM_THREADS", "1"}};
      if (rank == 0) spec.output_path = out_path;
      specs.push_back(std::move(spec));
    }
    auto gang = util::ProcessGang::Start(std::move(specs));
    if (!gang.ok()) return 1;
    auto result = (*gang)->Wait(absl::Now() + absl::Minutes(30), true, absl::Seconds(5));
    if (result.first_failure.has_value() || result.timed_out) {
      std::fprintf(stderr, "ditserve-bench-usp: the %s ranks failed\n", m.c_str());
      return 1;
    }
    double t = 0, wait = 0;
    long long bytes = 0;
    FILE* f = std::fopen(out_path.c_str(), "r");
    if (f == nullptr || std::fscanf(f, "%lf %lld %lf", &t, &bytes, &wait) != 3) return 1;
    std::fclose(f);
    unlink(out_path.c_str());
    // xDiT's table, per device and attention layer, N = 2: Ulysses (4/N)·p·hs
    // elements, Ring 2·p·hs (as O(); the exact all-to-all and ring volumes
    // carry a factor (N-1)/N).
    if (m == "ideal") {
      std::printf("%-10s %9.3f %7.2fx %9s %14lld %22s\n", "ideal2", t, serial / t, "-", bytes, "-");
      continue;
    }
    const double predicted = (m == "ulysses" ? 4.0 / 2 : 2.0) * elems * 4;
    std::printf("%-10s %9.3f %7.2fx %9.3f %14lld %14.0f (x1/2: %.0f)\n", (m + "2").c_str(), t,
                serial / t, wait, bytes, predicted, predicted / 2);
  }
  return 0;
}
