// ditserve-make-model: writes a diffusers model directory with seeded random
// weights and real tokenizers, for tests, benchmarks and demos.
//   ditserve-make-model --family flux --preset tiny --out /tmp/flux-tiny
//   ditserve-make-model --family sd3 --variant sd3.5-medium --preset tiny --out /tmp/sd35m-tiny

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tools/make_model/make_flux_model.h"
#include "tools/make_model/make_hunyuandit_model.h"
#include "tools/make_model/make_pixart_model.h"
#include "tools/make_model/make_sd3_model.h"

ABSL_FLAG(std::string, family, "flux", "Model family: flux, sd3 (Stable Diffusion 3 / 3.5), pixart-sigma, pixart-alpha or hunyuandit");
ABSL_FLAG(std::string, variant, "", "sd3 only: sd3 (default), sd3.5-medium or sd3.5-large");
ABSL_FLAG(std::string, preset, "tiny",
          "tiny (tests, a few MB), small (benchmarks), flux-dev (flux only: FLUX.1-dev sizes)");
ABSL_FLAG(std::string, out, "", "Directory to write");
ABSL_FLAG(std::string, dtype, "f32", "Weights: f32 or bf16");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the random weights");
ABSL_FLAG(int, shards, 1, "Transformer checkpoint shards");

namespace {

// The directory `family` names, or INVALID_ARGUMENT; `description` says
// what was written.
absl::Status Make(const std::string& family, std::string* description) {
  namespace mm = ditserve::tools::make_model;
  const std::string variant = absl::GetFlag(FLAGS_variant);
  if (family == "flux") {
    if (!variant.empty()) return absl::InvalidArgumentError("--variant is for --family sd3");
    mm::MakeFluxOptions o;
    o.preset = absl::GetFlag(FLAGS_preset);
    o.out_dir = absl::GetFlag(FLAGS_out);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.seed = absl::GetFlag(FLAGS_seed);
    o.shards = absl::GetFlag(FLAGS_shards);
    *description = absl::StrCat("flux ", o.preset);
    return mm::MakeFluxModel(o);
  }
  if (family == "sd3") {
    mm::MakeSd3Options o;
    if (!variant.empty()) o.variant = variant;
    o.preset = absl::GetFlag(FLAGS_preset);
    o.out_dir = absl::GetFlag(FLAGS_out);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.seed = absl::GetFlag(FLAGS_seed);
    o.shards = absl::GetFlag(FLAGS_shards);
    *description = absl::StrCat(o.variant, " ", o.preset);
    return mm::MakeSd3Model(o);
  }
  if (family == "pixart-sigma" || family == "pixart-alpha") {
    if (!variant.empty()) return absl::InvalidArgumentError("--variant is for --family sd3");
    if (absl::GetFlag(FLAGS_shards) != 1) return absl::InvalidArgumentError("--shards is not supported for pixart");
    mm::MakePixArtOptions o;
    o.family = family;
    o.preset = absl::GetFlag(FLAGS_preset);
    o.out_dir = absl::GetFlag(FLAGS_out);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.seed = absl::GetFlag(FLAGS_seed);
    *description = absl::StrCat(family, " ", o.preset);
    return mm::MakePixArtModel(o);
  }
  if (family == "hunyuandit") {
    if (!variant.empty()) return absl::InvalidArgumentError("--variant is for --family sd3");
    if (absl::GetFlag(FLAGS_shards) != 1) return absl::InvalidArgumentError("--shards is not supported for hunyuandit");
    mm::MakeHunyuanDiTOptions o;
    o.preset = absl::GetFlag(FLAGS_preset);
    o.out_dir = absl::GetFlag(FLAGS_out);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.seed = absl::GetFlag(FLAGS_seed);
    *description = absl::StrCat(family, " ", o.preset);
    return mm::MakeHunyuanDiTModel(o);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--family must be flux, sd3, pixart-sigma, pixart-alpha or hunyuandit, got '", family, "'"));
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Writes a diffusers model directory with random weights.\n"
                               "  ditserve-make-model --family flux --preset tiny --out DIR\n"
                               "  ditserve-make-model --family sd3 --variant sd3.5-large --preset small --out DIR\n"
                               "  ditserve-make-model --family pixart-sigma --preset tiny --out DIR\n"
                               "  ditserve-make-model --family hunyuandit --preset tiny --out DIR");
  absl::ParseCommandLine(argc, argv);
  int code = 0;
  std::string description;
  const absl::Status s = Make(absl::GetFlag(FLAGS_family), &description);
  if (!s.ok()) {
    std::fprintf(stderr, "ditserve-make-model: %s\n", std::string(s.message()).c_str());
    code = s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  } else {
    std::printf("wrote %s (%s, %s, seed %llu)\n", absl::GetFlag(FLAGS_out).c_str(), description.c_str(),
                absl::GetFlag(FLAGS_dtype).c_str(), static_cast<unsigned long long>(absl::GetFlag(FLAGS_seed)));
  }
  // As ditserve-generate: skip exit handlers (libsentencepiece's crash).
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}
