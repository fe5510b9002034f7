// ditserve-calibrate: measures this machine's device and link for the
// planner and writes a hardware profile (hardware/*.json). It runs the
// engine's own kernels (LibTorch's GEMM, kernels::AttentionWithLse, a
// 3×3 convolution, an element-wise add) on one rank — on the CPU with
// --threads threads in float32, or with --device cuda on GPU 0 in bfloat16
// at a FLUX.1-sized width, timed between device synchronisations — and the
// engine's communicators between two ranks on this host (an all-to-all of
// --link_mib MiB for the bandwidth, of 64 bytes for the latency): shared
// memory or Gloo on the CPU, NCCL between GPUs 0 and 1 with --device cuda.
// A machine with one GPU has no link to measure: --links_from PROFILE
// copies the links (and gpus_per_node) of an existing profile, and the
// source says so.
//   ditserve-calibrate --out hardware/cpu-dev.json --name "dev VM, 2 cores"
//   ditserve-calibrate --device cuda --links_from hardware/h100-sxm.json
//     --out hardware/h100-sxm.json --name "H100 SXM (calibrated)"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#if DITSERVE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/attention.h"
#include "parallel/process_groups.h"
#include "parallel/rendezvous.h"
#include "parallel/world_config.h"
#include "planner/hardware_profile.h"
#include "util/free_port.h"
#include "util/malloc_tuning.h"
#include "util/process_gang.h"

ABSL_FLAG(std::string, out, "", "Profile to write (JSON)");
ABSL_FLAG(std::string, name, "this machine (CPU)", "The profile's name");
ABSL_FLAG(int, threads, 1, "CPU threads per rank, as the gang runs (ditserve-run --threads)");
ABSL_FLAG(int, link_mib, 8, "MiB each rank sends in the bandwidth all-to-all");
ABSL_FLAG(int, repeats, 5, "Timed repeats per measurement (the median is kept)");
ABSL_FLAG(bool, shared_memory, true, "The ranks exchange through shared memory (false: Gloo over TCP)");
ABSL_FLAG(double, memory_gib, 0, "Memory per rank to record (0: this machine's RAM / 2)");
ABSL_FLAG(std::string, device, "cpu", "cpu (float32, --threads threads) or cuda (bfloat16 on GPU 0; NCCL links)");
ABSL_FLAG(std::string, links_from, "",
          "A profile whose links (and gpus_per_node) to copy instead of measuring them (a one-GPU machine)");
ABSL_FLAG(int, rank, -1, "internal: run as link rank");
ABSL_FLAG(int, master_port, 0, "internal");

namespace {

using namespace ditserve;

// Waits for the device's queued work (a no-op on the CPU).
void Synchronize(const c10::Device& device) {
#if DITSERVE_HAVE_CUDA
  if (device.is_cuda()) cudaDeviceSynchronize();
#else
  (void)device;
#endif
}

template <typename F>
double MedianSeconds(int repeats, F&& f, const c10::Device& device = c10::Device(c10::kCPU)) {
  f();  // warm up
  Synchronize(device);
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    f();
    Synchronize(device);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The device rates of `p` on `device` in `dtype`: GEMMs of width k × n at
// several row counts (the large-M rate and the rows at half of it),
// attention, a VAE convolution, an element-wise add, the per-operator host
// time: the CPU at the small preset's sizes, the GPU at FLUX.1's.
void MeasureDevice(planner::DeviceProfile& d, const c10::Device& device, at::ScalarType dtype, int repeats) {
  const bool gpu = device.is_cuda();
  const at::TensorOptions o = at::TensorOptions().device(device).dtype(dtype);
  d.element_bytes = static_cast<int>(c10::elementSize(dtype));
  const int64_t k = gpu ? 3072 : 512, n = gpu ? 12288 : 2048;
  const at::Tensor w = at::randn({k, n}, o);
  std::vector<std::pair<double, double>> rates;  // rows, FLOP/s
  const std::vector<int64_t> rows = gpu ? std::vector<int64_t>{64, 256, 1024, 4096, 8192}
                                        : std::vector<int64_t>{16, 64, 256, 1024, 2048};
  for (int64_t m : rows) {
    const at::Tensor x = at::randn({m, k}, o);
    const double t = MedianSeconds(repeats, [&] { (void)at::mm(x, w); }, device);
    rates.emplace_back(static_cast<double>(m), 2.0 * m * k * n / t);
  }
  double peak = 0;
  for (const auto& r : rates) peak = std::max(peak, r.second);
  d.gemm_tflops = peak / 1e12;
  // rate(M) = peak·M/(M + h): h from the smallest GEMM.
  d.gemm_half_rows = std::max(0.0, rates[0].first * (peak / rates[0].second - 1));
  // Attention: the small preset at 512² on the CPU (1536 tokens, 8 × 64);
  // FLUX.1 at 1024² on the GPU (4608 tokens, 24 × 128).
  const int64_t tokens = gpu ? 4608 : 1536, heads = gpu ? 24 : 8, head_dim = gpu ? 128 : 64;
  const at::Tensor q = at::randn({1, tokens, heads, head_dim}, o), kk = at::randn({1, tokens, heads, head_dim}, o),
                   v = at::randn({1, tokens, heads, head_dim}, o);
  const double t_attn =
      MedianSeconds(repeats, [&] { (void)kernels::AttentionWithLse(q, kk, v, at::Tensor()); }, device);
  d.attention_tflops = 4.0 * tokens * tokens * heads * head_dim / t_attn / 1e12;
  // A VAE convolution, 3×3: 64 → 64 channels at 128² (CPU), 128 → 128 at
  // 512² (GPU, a 1024² decoder's middle resolution).
  const int64_t ch = gpu ? 128 : 64, side = gpu ? 512 : 128;
  const at::Tensor img = at::randn({1, ch, side, side}, o), cw = at::randn({ch, ch, 3, 3}, o);
  const double t_conv = MedianSeconds(repeats, [&] { (void)at::conv2d(img, cw, {}, 1, 1); }, device);
  d.conv_tflops = 2.0 * 9 * ch * ch * side * side / t_conv / 1e12;
  // Element-wise: a + b (read two, write one) over 32 MiB (CPU) or 512 MiB
  // (GPU, past its caches) operands.
  const int64_t elements = (gpu ? 512LL << 20 : 32LL << 20) / d.element_bytes;
  const at::Tensor a = at::randn({elements}, o), b = at::randn({elements}, o);
  at::Tensor c = at::empty_like(a);
  const double t_add = MedianSeconds(repeats, [&] { at::add_out(c, a, b); }, device);
  d.memory_bandwidth_gbs = 3.0 * a.nbytes() / t_add / 1e9;
  // The host's cost per operator: a 16-element add, 1000 times.
  const at::Tensor s1 = at::randn({16}, o), s2 = at::randn({16}, o);
  at::Tensor s3 = at::empty_like(s1);
  const double t_small = MedianSeconds(repeats, [&] {
    for (int i = 0; i < 1000; ++i) at::add_out(s3, s1, s2);
  }, device);
  d.kernel_launch_us = t_small / 1000 * 1e6;
}

std::string SelfExe() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0)));
}

// One of the two link ranks: rank 0 prints "bandwidth_gbs latency_us".
int RunLinkRank(int rank, int port, int mib, int repeats) {
  parallel::ParallelConfig config;
  config.ulysses_degree = 2;
  auto world = parallel::WorldConfig::Create(config, rank);
  parallel::RendezvousOptions rdzv;
  rdzv.master_port = port;
  rdzv.rank = rank;
  rdzv.world_size = 2;
  auto store = parallel::JoinRendezvous(rdzv);
  if (!world.ok() || !store.ok()) return 1;
  parallel::ProcessGroupsOptions pg;
  pg.check_shapes = false;
  pg.shared_memory = absl::GetFlag(FLAGS_shared_memory);
  const bool gpu = absl::GetFlag(FLAGS_device) == "cuda";
  if (gpu) {
    pg.data_backend = parallel::Backend::kNccl;
    pg.cuda_device = rank;
  }
  const c10::Device device = gpu ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(rank)) : c10::Device(c10::kCPU);
  auto groups = parallel::ProcessGroups::Create(*world, *store, pg);
  if (!groups.ok()) {
    std::fprintf(stderr, "%s\n", groups.status().ToString().c_str());
    return 1;
  }
  auto& u = (*groups)->group(parallel::Dim::kUlysses);
  // Each rank sends half of its tensor to the other.
  const at::Tensor big = at::randn({2, static_cast<int64_t>(mib) * (1 << 20) / 4}, at::TensorOptions().device(device));
  const at::Tensor small = at::randn({2, 8}, at::TensorOptions().device(device));
  bool ok = true;
  const auto exchange = [&](const at::Tensor& t) {
    ok = ok && (*groups)->control().Barrier().ok();
    ok = ok && u.AllToAll(t, 0, 0).ok();
    Synchronize(device);
  };
  const double barrier = MedianSeconds(repeats * 4, [&] { ok = ok && (*groups)->control().Barrier().ok(); });
  const double t_big = MedianSeconds(repeats, [&] { exchange(big); }) - barrier;
  const double t_small = MedianSeconds(repeats * 4, [&] { exchange(small); }) - barrier;
  if (!ok) return 1;
  if (rank == 0) {
    const double sent = static_cast<double>(big.nbytes()) / 2;
    std::printf("%.3f %.3f\n", sent / std::max(t_big - t_small, 1e-9) / 1e9, std::max(t_small, 0.0) * 1e6);
  }
  return 0;
}

absl::StatusOr<std::pair<double, double>> MeasureLink(int mib, int repeats) {
  auto port = util::PickFreePort();
  if (!port.ok()) return port.status();
  const std::string out_path = absl::StrCat("/tmp/ditserve-calibrate-", getpid(), ".out");
  std::vector<util::ChildSpec> specs;
  for (int rank = 0; rank < 2; ++rank) {
    util::ChildSpec spec;
    spec.argv = {SelfExe(), absl::StrCat("--rank=", rank), absl::StrCat("--master_port=", *port),
                 absl::StrCat("--link_mib=", mib), absl::StrCat("--repeats=", repeats),
                 absl::StrCat("--shared_memory=", absl::GetFlag(FLAGS_shared_memory) ? "true" : "false"),
                 absl::StrCat("--threads=", absl::GetFlag(FLAGS_threads)),
                 absl::StrCat("--device=", absl::GetFlag(FLAGS_device))};
    if (rank == 0) spec.output_path = out_path;
    specs.push_back(std::move(spec));
  }
  auto gang = util::ProcessGang::Start(std::move(specs));
  if (!gang.ok()) return gang.status();
  auto result = (*gang)->Wait(absl::Now() + absl::Minutes(10), true, absl::Seconds(5));
  if (result.first_failure.has_value() || result.timed_out) return absl::InternalError("the link ranks failed");
  double bw = 0, lat = 0;
  FILE* f = std::fopen(out_path.c_str(), "r");
  const bool read = f != nullptr && std::fscanf(f, "%lf %lf", &bw, &lat) == 2;
  if (f != nullptr) std::fclose(f);
  unlink(out_path.c_str());
  if (!read) return absl::InternalError("the link ranks printed no result");
  return std::make_pair(bw, lat);
}

int Fail(const std::string& m) {
  std::fprintf(stderr, "ditserve-calibrate: %s\n", m.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  util::KeepFreedMemoryForReuse();
  absl::SetProgramUsageMessage("measures this machine for the planner and writes a hardware profile");
  absl::ParseCommandLine(argc, argv);
  const int threads = absl::GetFlag(FLAGS_threads), repeats = absl::GetFlag(FLAGS_repeats);
  const int mib = absl::GetFlag(FLAGS_link_mib);
  if (threads < 1 || threads > 1024) return Fail("--threads must be in [1, 1024]");
  if (repeats < 1 || repeats > 1000) return Fail("--repeats must be in [1, 1000]");
  if (mib < 1 || mib > 4096) return Fail("--link_mib must be in [1, 4096]");
  at::set_num_threads(threads);
  if (absl::GetFlag(FLAGS_rank) >= 0) {
    return RunLinkRank(absl::GetFlag(FLAGS_rank), absl::GetFlag(FLAGS_master_port), mib, repeats);
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return Fail("--out FILE is required");
  const std::string device_name = absl::GetFlag(FLAGS_device);
  if (device_name != "cpu" && device_name != "cuda") {
    return Fail(absl::StrCat("--device must be cpu or cuda, got '", device_name, "'"));
  }
  const bool gpu = device_name == "cuda";
  int gpus = 0;
#if DITSERVE_HAVE_CUDA
  if (cudaGetDeviceCount(&gpus) != cudaSuccess) gpus = 0;
#endif
  if (gpu && gpus == 0) return Fail("--device cuda but no CUDA device is available (or this build has no CUDA)");
  const std::string links_from = absl::GetFlag(FLAGS_links_from);
  if (gpu && gpus < 2 && links_from.empty()) {
    return Fail("one GPU has no link to measure: pass --links_from PROFILE (e.g. hardware/h100-sxm.json)");
  }
  at::manual_seed(0);
  planner::HardwareProfile p;
  p.name = absl::GetFlag(FLAGS_name);
  planner::DeviceProfile& d = p.device;
  const c10::Device device = gpu ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  MeasureDevice(d, device, gpu ? at::kBFloat16 : at::kFloat, repeats);
  if (gpu) {
    size_t free_bytes = 0, total_bytes = 0;
#if DITSERVE_HAVE_CUDA
    cudaMemGetInfo(&free_bytes, &total_bytes);
#endif
    d.memory_gib = absl::GetFlag(FLAGS_memory_gib) > 0 ? absl::GetFlag(FLAGS_memory_gib)
                                                       : static_cast<double>(total_bytes) / (1ull << 30);
  } else {
    const double ram_gib = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE) / (1ull << 30);
    d.memory_gib = absl::GetFlag(FLAGS_memory_gib) > 0 ? absl::GetFlag(FLAGS_memory_gib) : ram_gib / 2;
  }
  std::string links_source;
  if (!links_from.empty()) {
    auto from = planner::ReadHardwareProfile(links_from);
    if (!from.ok()) return Fail(std::string(from.status().message()));
    p.gpus_per_node = from->gpus_per_node;
    p.intra_node = from->intra_node;
    p.inter_node = from->inter_node;
    p.pipeline_overhead_s = from->pipeline_overhead_s;
    links_source = absl::StrCat("; links copied from ", links_from, " (", from->source, ")");
  } else {
    auto link = MeasureLink(mib, repeats);
    if (!link.ok()) return Fail(std::string(link.status().message()));
    p.gpus_per_node = gpu ? gpus : 2;
    const std::string kind = gpu ? "nccl" : (absl::GetFlag(FLAGS_shared_memory) ? "shared-memory" : "gloo-tcp-loopback");
    p.intra_node = {kind, link->first, link->second};
    p.inter_node = p.intra_node;
    p.pipeline_overhead_s = 0;
  }
  p.source = absl::StrCat("calibrated: ditserve-calibrate --device ", device_name, " --threads ", threads,
                          " --link_mib ", mib, " --repeats ", repeats, " --shared_memory=",
                          absl::GetFlag(FLAGS_shared_memory) ? "true" : "false", ", ",
                          absl::FormatTime("%Y-%m-%d %H:%M UTC", absl::Now(), absl::UTCTimeZone()), links_source);
  std::ofstream f(out);
  f << planner::HardwareProfileToJson(p);
  if (!f) return Fail(absl::StrCat("cannot write ", out));
  std::fputs(planner::HardwareProfileToJson(p).c_str(), stdout);
  return 0;
}
