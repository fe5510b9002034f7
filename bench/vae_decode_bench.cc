// The VAE decode of one image: one rank (whole), one rank in tiles
// (--vae_tiling) and the gang in bands (--use_parallel_vae), at several
// sizes: time, the largest activation per rank (measured by the decode's
// walk; equal to DecodeActivationBytes' closed form), each process's peak resident memory,
// and the images against the whole decode (bands: uint8 values that
// differ; tiles: PSNR).
//
//   build/bin/ditserve-bench-vae --model DIR [--sizes 512,1024,2048] [--ranks 2]
//                                [--tile_size 0] [--repeats 2]
//
// Every case runs in a fresh process (so its peak resident memory is its
// own); one rank runs on one thread and on --ranks threads, each band rank
// on one thread.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <limits.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "parallel/process_groups.h"
#include "parallel/rendezvous.h"
#include "util/free_port.h"
#include "util/malloc_tuning.h"
#include "util/process_gang.h"
#include "worker/families/components.h"
#include "worker/models/vae/tiled_decode.h"
#include "worker/pipelines/parallel_vae.h"

ABSL_FLAG(std::string, model, "", "diffusers directory with vae/ (config.json, weights)");
ABSL_FLAG(std::string, sizes, "512,1024,2048", "Image sizes in pixels (square), comma-separated");
ABSL_FLAG(int, ranks, 2, "Ranks of the banded decode");
ABSL_FLAG(int, tile_size, 0, "Tile size in pixels (0: the VAE's sample_size)");
ABSL_FLAG(int, repeats, 2, "Timed decodes per case after one warm-up (the median is reported)");
ABSL_FLAG(std::string, mode, "", "internal: whole, tiled or bands, run as one process");
ABSL_FLAG(int, size, 0, "internal");
ABSL_FLAG(int, threads, 1, "internal");
ABSL_FLAG(int, rank, 0, "internal");
ABSL_FLAG(int, world_size, 1, "internal");
ABSL_FLAG(int, master_port, 0, "internal");
ABSL_FLAG(std::string, image_out, "", "internal");

namespace {

using namespace ditserve;

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string SelfExe() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0)));
}

// One case in this process; rank 0 prints "time_s peak_bytes maxrss_bytes"
// and writes the uint8 image to --image_out.
int RunCase(const std::string& mode) {
  at::set_num_threads(absl::GetFlag(FLAGS_threads));
  at::NoGradGuard no_grad;
  const std::string dir = absl::GetFlag(FLAGS_model);
  std::ifstream in(dir + "/vae/config.json");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto config = worker::vae::ParseVaeConfig(text);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 1;
  }
  auto vae = worker::families::LoadVaeDecoder(dir, *config, at::kFloat, c10::Device(c10::kCPU));
  if (!vae.ok()) {
    std::fprintf(stderr, "%s\n", vae.status().ToString().c_str());
    return 1;
  }
  const int64_t f = config->scale_factor(), h = absl::GetFlag(FLAGS_size) / f;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor z = at::randn({1, config->latent_channels, h, h}, gen);
  const int rank = absl::GetFlag(FLAGS_rank), world_size = absl::GetFlag(FLAGS_world_size);
  std::unique_ptr<parallel::ProcessGroups> groups;
  if (mode == "bands") {
    parallel::ParallelConfig pc;
    pc.data_parallel_degree = world_size;
    auto world = parallel::WorldConfig::Create(pc, rank);
    parallel::RendezvousOptions rdzv;
    rdzv.master_port = absl::GetFlag(FLAGS_master_port);
    rdzv.rank = rank;
    rdzv.world_size = world_size;
    auto store = parallel::JoinRendezvous(rdzv);
    if (!world.ok() || !store.ok()) return 1;
    parallel::ProcessGroupsOptions pg;
    pg.check_shapes = false;
    auto made = parallel::ProcessGroups::Create(*world, *store, pg);
    if (!made.ok()) {
      std::fprintf(stderr, "%s\n", made.status().ToString().c_str());
      return 1;
    }
    groups = *std::move(made);
  }
  auto tiles = worker::vae::MakeTileGeometry(
      *config, absl::GetFlag(FLAGS_tile_size) > 0 ? absl::GetFlag(FLAGS_tile_size) : config->sample_size);
  if (!tiles.ok()) {
    std::fprintf(stderr, "%s\n", tiles.status().ToString().c_str());
    return 1;
  }
  std::vector<double> times;
  at::Tensor image;
  int64_t peak = 0;
  for (int i = 0; i < absl::GetFlag(FLAGS_repeats) + 1; ++i) {
    if (groups && !groups->control().Barrier().ok()) return 1;
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<at::Tensor> out;
    if (mode == "whole") {
      out = (*vae)->Decode(z, &peak);
    } else if (mode == "tiled") {
      out = worker::vae::DecodeTiled(**vae, z, *tiles, &peak);
    } else {
      out = worker::pipelines::DecodeInBands(**vae, z, groups->group(parallel::Dim::kWorld), nullptr, &peak);
      peak = std::max(peak, static_cast<int64_t>(out.ok() ? out->nbytes() : 0));
    }
    if (!out.ok()) {
      std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
      return 1;
    }
    if (groups && !groups->control().Barrier().ok()) return 1;
    if (i > 0) times.push_back(Seconds(start));
    image = *out;
  }
  if (rank != 0) return 0;
  std::sort(times.begin(), times.end());
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("%.6f %lld %lld\n", times[times.size() / 2], static_cast<long long>(peak),
              static_cast<long long>(usage.ru_maxrss) * 1024);
  const at::Tensor rgb = worker::vae::ToUint8Rgb(image).contiguous();
  std::ofstream(absl::GetFlag(FLAGS_image_out), std::ios::binary)
      .write(reinterpret_cast<const char*>(rgb.data_ptr<uint8_t>()), static_cast<std::streamsize>(rgb.numel()));
  return 0;
}

struct Outcome {
  double seconds = 0;
  long long peak = 0, maxrss = 0;
  std::string image;
};

bool Launch(const std::string& mode, int size, int threads, int ranks, Outcome& out) {
  auto port = util::PickFreePort();
  if (!port.ok()) return false;
  const std::string base = absl::StrCat("/tmp/ditserve-bench-vae-", getpid(), "-", mode);
  std::vector<util::ChildSpec> specs;
  for (int rank = 0; rank < ranks; ++rank) {
    util::ChildSpec spec;
    spec.argv = {SelfExe(), "--mode=" + mode, "--model=" + absl::GetFlag(FLAGS_model), absl::StrCat("--size=", size),
                 absl::StrCat("--threads=", threads), absl::StrCat("--rank=", rank),
                 absl::StrCat("--world_size=", ranks), absl::StrCat("--master_port=", *port),
                 absl::StrCat("--tile_size=", absl::GetFlag(FLAGS_tile_size)),
                 absl::StrCat("--repeats=", absl::GetFlag(FLAGS_repeats)), "--image_out=" + base + ".rgb"};
    spec.env = {{"OMP_NUM_THREADS", absl::StrCat(threads)}};
    if (rank == 0) spec.output_path = base + ".out";
    specs.push_back(std::move(spec));
  }
  auto gang = util::ProcessGang::Start(std::move(specs));
  if (!gang.ok()) return false;
  auto result = (*gang)->Wait(absl::Now() + absl::Minutes(60), true, absl::Seconds(5));
  if (result.first_failure.has_value() || result.timed_out) {
    std::fprintf(stderr, "ditserve-bench-vae: %s at %d px failed (log %s.out)\n", mode.c_str(), size, base.c_str());
    return false;
  }
  FILE* f = std::fopen((base + ".out").c_str(), "r");
  const bool read = f != nullptr && std::fscanf(f, "%lf %lld %lld", &out.seconds, &out.peak, &out.maxrss) == 3;
  if (f != nullptr) std::fclose(f);
  std::ifstream in(base + ".rgb", std::ios::binary);
  out.image.assign((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  unlink((base + ".out").c_str());
  unlink((base + ".rgb").c_str());
  return read;
}

std::string Against(const Outcome& a, const Outcome& whole) {
  if (a.image.size() != whole.image.size()) return "size differs";
  int64_t differ = 0;
  double se = 0;
  for (size_t i = 0; i < a.image.size(); ++i) {
    const int d = static_cast<uint8_t>(a.image[i]) - static_cast<uint8_t>(whole.image[i]);
    differ += d != 0;
    se += static_cast<double>(d) * d;
  }
  if (differ == 0) return "identical";
  const double psnr = 10 * std::log10(255.0 * 255.0 / (se / static_cast<double>(a.image.size())));
  return absl::StrCat(differ, " values differ, PSNR ", std::round(psnr * 10) / 10, " dB");
}

}  // namespace

int main(int argc, char** argv) {
  ditserve::util::KeepFreedMemoryForReuse();
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_model).empty()) {
    std::fprintf(stderr, "ditserve-bench-vae: --model is required\n");
    return 2;
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (!mode.empty()) return RunCase(mode);
  const int ranks = absl::GetFlag(FLAGS_ranks);
  std::printf("| size | decode | ranks × threads | time s | speedup vs 1 × 1 | peak activation MiB / rank | "
              "vs whole | peak RSS MiB (rank 0) | image vs whole |\n|---|---|---|---|---|---|---|---|---|\n");
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_sizes), ',')) {
    int size = 0;
    if (!absl::SimpleAtoi(s, &size) || size <= 0) {
      std::fprintf(stderr, "ditserve-bench-vae: bad --sizes entry '%s'\n", std::string(s).c_str());
      return 2;
    }
    Outcome whole1, whole_n, tiled, bands;
    if (!Launch("whole", size, 1, 1, whole1) || !Launch("whole", size, ranks, 1, whole_n) ||
        !Launch("tiled", size, 1, 1, tiled) || !Launch("bands", size, 1, ranks, bands)) {
      return 1;
    }
    const auto row = [&](const char* name, const std::string& layout, const Outcome& o) {
      std::printf("| %d² | %s | %s | %.2f | %.2f× | %.1f | %.2f | %.0f | %s |\n", size, name, layout.c_str(), o.seconds,
                  whole1.seconds / o.seconds, static_cast<double>(o.peak) / (1 << 20),
                  static_cast<double>(o.peak) / static_cast<double>(whole1.peak),
                  static_cast<double>(o.maxrss) / (1 << 20), Against(o, whole1).c_str());
      std::fflush(stdout);
    };
    row("whole", "1 × 1", whole1);
    row("whole", absl::StrCat("1 × ", ranks), whole_n);
    row("tiled", "1 × 1", tiled);
    row("bands", absl::StrCat(ranks, " × 1"), bands);
  }
  return 0;
}
