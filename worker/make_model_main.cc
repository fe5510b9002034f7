// ditserve-make-model: writes a diffusers model directory with seeded random
// weights and real tokenizers, for tests, benchmarks and demos.
//   ditserve-make-model --family flux --preset tiny --out /tmp/flux-tiny

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "worker/make_model/make_flux_model.h"

ABSL_FLAG(std::string, family, "flux", "Model family (flux)");
ABSL_FLAG(std::string, preset, "tiny", "tiny (tests, a few MB), small (benchmarks), flux-dev (FLUX.1-dev sizes)");
ABSL_FLAG(std::string, out, "", "Directory to write");
ABSL_FLAG(std::string, dtype, "f32", "Weights: f32 or bf16");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the random weights");
ABSL_FLAG(int, shards, 1, "Transformer checkpoint shards");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Writes a diffusers model directory with random weights.\n"
                               "  ditserve-make-model --family flux --preset tiny --out DIR");
  absl::ParseCommandLine(argc, argv);
  int code = 0;
  if (absl::GetFlag(FLAGS_family) != "flux") {
    std::fprintf(stderr, "ditserve-make-model: --family must be flux, got '%s'\n", absl::GetFlag(FLAGS_family).c_str());
    code = 2;
  } else {
    ditserve::worker::make_model::MakeFluxOptions o;
    o.preset = absl::GetFlag(FLAGS_preset);
    o.out_dir = absl::GetFlag(FLAGS_out);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.seed = absl::GetFlag(FLAGS_seed);
    o.shards = absl::GetFlag(FLAGS_shards);
    absl::Status s = ditserve::worker::make_model::MakeFluxModel(o);
    if (!s.ok()) {
      std::fprintf(stderr, "ditserve-make-model: %s\n", std::string(s.message()).c_str());
      code = s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    } else {
      std::printf("wrote %s (flux %s, %s, seed %llu)\n", o.out_dir.c_str(), o.preset.c_str(), o.dtype.c_str(),
                  static_cast<unsigned long long>(o.seed));
    }
  }
  // As ditserve-generate: skip exit handlers (libsentencepiece's crash).
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}
