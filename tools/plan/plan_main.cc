// ditserve-plan: predicts a generation's latency, traffic and memory per
// rank under every hybrid configuration of a cluster, and marks the best.
//   ditserve-plan --preset flux-dev --gpus 4 --hardware hardware/h100-sxm.json
//   ditserve-plan --model DIR --height 512 --width 512 --num_inference_steps 20 --gpus 2
//       --hardware hardware/cpu-dev.json --json

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "planner/plan.h"

ABSL_FLAG(std::string, model, "", "A diffusers model directory (Flux or SD3); or --preset");
ABSL_FLAG(std::string, preset, "",
          "A published model's shape: flux-dev, flux-schnell, sd3-medium, sd3.5-medium, sd3.5-large, sana-1600m, "
          "hunyuandit, pixart-sigma");
ABSL_FLAG(std::string, hardware, "", "Hardware profile (JSON, see hardware/)");
ABSL_FLAG(int, gpus, 1, "Devices (ranks) in the gang");
ABSL_FLAG(int, nodes, 1, "Nodes the devices are spread over evenly");
ABSL_FLAG(int, height, 1024, "Image height in pixels");
ABSL_FLAG(int, width, 1024, "Image width in pixels");
ABSL_FLAG(int, num_inference_steps, 28, "Denoising steps");
ABSL_FLAG(int, images, 1, "Images per request (data parallel splits them)");
ABSL_FLAG(std::string, cfg, "auto", "Classifier-free guidance: auto (the family's default), true or false");
ABSL_FLAG(int, max_sequence_length, 0, "T5 tokens (0: the family's default)");
ABSL_FLAG(int, warmup_steps, 1, "PipeFusion warmup steps");
ABSL_FLAG(int, num_pipeline_patch, 0, "PipeFusion patches (0: the PipeFusion degree)");
ABSL_FLAG(bool, use_parallel_vae, false, "The VAE decode is split over every rank");
ABSL_FLAG(double, memory_cap_gib, 0, "Memory per rank the best must fit (0: the device's memory)");
ABSL_FLAG(int, top, 0, "Rows of runnable configurations to print (0: all, with the ones that cannot run)");
ABSL_FLAG(bool, json, false, "Print JSON instead of the table");

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "ditserve-plan: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "predicts latency, traffic and memory of every hybrid configuration and marks the best.\n"
      "  ditserve-plan --preset flux-dev --gpus 4 --hardware hardware/h100-sxm.json");
  absl::ParseCommandLine(argc, argv);
  namespace pl = ditserve::planner;
  const std::string model_dir = absl::GetFlag(FLAGS_model), preset = absl::GetFlag(FLAGS_preset);
  if (model_dir.empty() == preset.empty()) return Fail("give exactly one of --model DIR and --preset NAME");
  if (absl::GetFlag(FLAGS_hardware).empty()) return Fail("--hardware FILE is required (profiles: hardware/*.json)");
  const int max_sequence_length = absl::GetFlag(FLAGS_max_sequence_length);
  if (max_sequence_length < 0 || max_sequence_length > 4096) {
    return Fail(absl::StrCat("--max_sequence_length must be in [0, 4096], got ", max_sequence_length));
  }
  auto model = preset.empty() ? pl::ModelFromDirectory(model_dir, max_sequence_length) : pl::PresetModel(preset);
  if (!model.ok()) return Fail(std::string(model.status().message()));
  auto hardware = pl::ReadHardwareProfile(absl::GetFlag(FLAGS_hardware));
  if (!hardware.ok()) return Fail(std::string(hardware.status().message()));
  pl::PlanRequest r;
  r.height = absl::GetFlag(FLAGS_height);
  r.width = absl::GetFlag(FLAGS_width);
  r.steps = absl::GetFlag(FLAGS_num_inference_steps);
  r.images = absl::GetFlag(FLAGS_images);
  r.nodes = absl::GetFlag(FLAGS_nodes);
  const std::string cfg = absl::GetFlag(FLAGS_cfg);
  if (cfg != "auto" && cfg != "true" && cfg != "false") return Fail(absl::StrCat("--cfg must be auto, true or false, got '", cfg, "'"));
  r.cfg = cfg == "auto" ? model->default_cfg : cfg == "true";
  if (preset.empty() && max_sequence_length > 0) r.text_tokens = model->text_tokens;
  if (!preset.empty() && max_sequence_length > 0) {
    r.text_tokens = model->family == "sd3" ? 77 + max_sequence_length : max_sequence_length;
  }
  r.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  r.num_pipeline_patch = absl::GetFlag(FLAGS_num_pipeline_patch);
  if (r.warmup_steps < 0 || r.num_pipeline_patch < 0) return Fail("--warmup_steps and --num_pipeline_patch must be >= 0");
  r.parallel_vae = absl::GetFlag(FLAGS_use_parallel_vae);
  auto plan = pl::Plan(*model, *hardware, r, absl::GetFlag(FLAGS_gpus), absl::GetFlag(FLAGS_memory_cap_gib));
  if (!plan.ok()) return Fail(std::string(plan.status().message()));
  if (absl::GetFlag(FLAGS_json)) {
    std::fputs(pl::PlanToJson(*plan, *model, *hardware, r).c_str(), stdout);
    return 0;
  }
  std::printf("model %s, %d x %d, %d steps, %d image(s), cfg %s; %d device(s) on %d node(s) of %s (%s)\n",
              model->name.c_str(), r.height, r.width, r.steps, r.images, r.cfg ? "on" : "off",
              absl::GetFlag(FLAGS_gpus), r.nodes, hardware->name.c_str(), hardware->source.c_str());
  std::fputs(pl::FormatPlanTable(*plan, absl::GetFlag(FLAGS_top)).c_str(), stdout);
  std::printf("best: %s\n", pl::ExplainChoice(*plan).c_str());
  return plan->best >= 0 ? 0 : 1;
}
