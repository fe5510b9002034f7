#include "tools/train/train_demo.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/nn/module.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <tuple>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tools/make_model/flux_directory_writer.h"
#include "tools/train/flux_training.h"
#include "tools/train/vae_training.h"
#include "util/read_file.h"
#include "worker/families/components.h"
#include "worker/families/flux/flux_components.h"
#include "worker/families/flux/flux_text_encoder.h"
#include "worker/models/flux/flux_transformer.h"
#include "worker/models/vae/vae_encoder.h"
#include "worker/weights/safetensors.h"

namespace ditserve::tools::train {
namespace {

// The demo model's sizes (the prototype: a 0.3M-parameter VAE with
// 8× downscale and 4 latent channels; a 2 + 2 block transformer with 4
// heads of 32).
make_model::TextComponentsSpec TextSpec() {
  make_model::TextComponentsSpec s;
  s.clip.hidden_size = 64;
  s.clip.intermediate_size = 128;
  s.clip.num_hidden_layers = 1;
  s.clip.num_attention_heads = 2;
  s.t5.d_model = 64;
  s.t5.d_kv = 16;
  s.t5.d_ff = 128;
  s.t5.num_layers = 1;
  s.t5.num_heads = 4;
  s.bpe_merges = 300;
  s.spm_vocab = 128;
  s.local_t5_attention = true;
  return s;
}

worker::vae::VaeConfig VaeSpec() {
  worker::vae::VaeConfig c;
  c.in_channels = 3;
  c.out_channels = 3;
  c.latent_channels = 4;
  c.block_out_channels = {16, 32, 32, 32};
  c.layers_per_block = 1;
  c.norm_num_groups = 8;
  c.mid_block_add_attention = false;
  c.use_quant_conv = false;
  c.use_post_quant_conv = false;
  c.sample_size = 128;
  return c;
}

worker::flux::FluxTransformerConfig TransformerSpec(const worker::vae::VaeConfig& vae, const make_model::TextComponentsSpec& text) {
  worker::flux::FluxTransformerConfig c;
  c.in_channels = c.out_channels = 4 * vae.latent_channels;
  c.num_layers = 2;
  c.num_single_layers = 2;
  c.attention_head_dim = 32;
  c.num_attention_heads = 4;
  c.joint_attention_dim = text.t5.d_model;
  c.pooled_projection_dim = text.clip.hidden_size;
  c.guidance_embeds = false;
  c.axes_dims_rope = {8, 12, 12};
  return c;
}

// PyTorch's Linear initialisation (U(±1/sqrt(fan_in)) weights), zero
// biases, unit norm weights, and DiT's adaLN-Zero: every modulation and the
// output projection start at zero, so each block starts as the identity and
// the untrained model predicts zero velocity.
void InitialiseTransformer(const make_model::NamedTensors& params, at::Generator& gen) {
  at::NoGradGuard no_grad;
  for (const auto& [name, t] : params) {
    const bool modulation = absl::StrContains(name, "norm1.linear") || absl::StrContains(name, "norm1_context.linear") ||
                            (absl::StartsWith(name, "single_transformer_blocks") && absl::StrContains(name, ".norm.linear")) ||
                            absl::StartsWith(name, "norm_out.") || absl::StartsWith(name, "proj_out.");
    if (modulation || absl::EndsWith(name, ".bias")) {
      t.zero_();
    } else if (t.dim() == 1) {
      t.fill_(1.0);
    } else {
      const double bound = 1.0 / std::sqrt(static_cast<double>(t.size(1)));
      t.copy_(at::rand(t.sizes(), gen, at::TensorOptions().dtype(at::kFloat)).mul(2 * bound).sub(bound));
    }
  }
}

make_model::NamedTensors Concat(make_model::NamedTensors a, const make_model::NamedTensors& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

int64_t CountParameters(const make_model::NamedTensors& params) {
  int64_t n = 0;
  for (const auto& [name, t] : params) n += t.numel();
  return n;
}

nlohmann::ordered_json PhaseJson(const PhaseReport& r) {
  return {{"phase", r.name}, {"steps", r.steps}, {"seconds", std::round(r.seconds * 10) / 10},
          {"first_loss", r.first_loss}, {"last_loss", r.last_loss}};
}

// Where the transformer phases start: the frozen VAE encoder (carrying the
// latent statistics), the transformer to train, and what the start was.
struct StartingPoint {
  std::unique_ptr<worker::vae::VaeEncoder> encoder;
  worker::flux::FluxTransformerConfig flux_config;
  std::unique_ptr<worker::flux::FluxTransformer> transformer;
  nlohmann::ordered_json previous;  // init_from's training.json, or null
};

// Phase 1 from nothing: writes the text side and the trained VAE to the
// output directory; the transformer starts from adaLN-Zero.
absl::StatusOr<StartingPoint> TrainFromScratch(const TrainDemoOptions& o, double budget, at::Generator& gen,
                                               std::mt19937_64& scenes, TrainDemoReport& report, std::FILE* out) {
  const at::ScalarType dtype = o.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  const std::string& dir = o.out_dir;
  // The text side, written first: training embeds captions with exactly
  // the encoders (and weight dtype) that inference will load.
  make_model::TextComponentsSpec text_spec = TextSpec();
  text_spec.t5_model_max_length = o.max_sequence_length;
  if (absl::Status s = make_model::WriteTextComponents(dir, text_spec, gen, dtype); !s.ok()) return s;

  worker::vae::VaeConfig vae_config = VaeSpec();
  auto encoder = worker::vae::VaeEncoder::Create(vae_config, at::kFloat);
  if (!encoder.ok()) return encoder.status();
  auto decoder = worker::vae::VaeDecoder::Create(vae_config, at::kFloat);
  if (!decoder.ok()) return decoder.status();
  StartingPoint start;
  start.flux_config = TransformerSpec(vae_config, text_spec);
  auto transformer = worker::flux::FluxTransformer::Create(start.flux_config, at::kFloat);
  if (!transformer.ok()) return transformer.status();
  start.transformer = std::move(*transformer);
  InitialiseTransformer(make_model::ModuleParameters(start.transformer->module()), gen);
  std::fprintf(out, "model: vae %lld parameters, transformer %lld, threads %d\n",
               static_cast<long long>(CountParameters(Concat((*encoder)->NamedParameters(), (*decoder)->NamedParameters()))),
               static_cast<long long>(CountParameters(make_model::ModuleParameters(start.transformer->module()))),
               at::get_num_threads());

  VaeTrainOptions vo;
  vo.plan = {"vae", o.vae_steps, budget * 0.35, o.vae_lr, 100, o.log_every};
  vo.batch = o.vae_batch;
  auto vae_report = TrainVae(**encoder, **decoder, vo, scenes, gen, out);
  if (!vae_report.ok()) return vae_report.status();
  report.phases.push_back(*vae_report);
  for (auto [size, mse] : {std::pair{64, &report.vae_reconstruction_mse_64}, {128, &report.vae_reconstruction_mse_128}}) {
    auto e = ReconstructionError(**encoder, **decoder, 64, size, scenes);
    if (!e.ok()) return e.status();
    *mse = *e;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir + "/previews", ec);
  if (absl::Status s = WriteReconstructionPreview(**encoder, **decoder, 8, 64, scenes, dir + "/previews/vae_64.png");
      !s.ok()) {
    return s;
  }
  auto stats = MeasureLatents(**encoder, 512, 64, scenes, gen);
  if (!stats.ok()) return stats.status();
  vae_config.shift_factor = stats->mean;
  vae_config.scaling_factor = 1.0 / stats->std;
  std::fprintf(out, "[vae] reconstruction MSE %.5f at 64x64, %.5f at 128x128; latents mean %.4f std %.4f\n",
               report.vae_reconstruction_mse_64, report.vae_reconstruction_mse_128, stats->mean, stats->std);
  // The encoder the transformer phases read carries the latent statistics.
  auto frozen = worker::vae::VaeEncoder::Create(vae_config, at::kFloat);
  if (!frozen.ok()) return frozen.status();
  {
    at::NoGradGuard no_grad;
    auto dst = (*frozen)->NamedParameters();
    auto src = (*encoder)->NamedParameters();
    for (size_t i = 0; i < dst.size(); ++i) dst[i].second.copy_(src[i].second);
  }
  start.encoder = std::move(*frozen);
  if (absl::Status s = make_model::WriteVae(dir, vae_config,
                                            Concat((*encoder)->NamedParameters(), (*decoder)->NamedParameters()), dtype);
      !s.ok()) {
    return s;
  }
  return start;
}

// From a model this tool wrote: its text side, VAE and previews are copied
// to the output directory unchanged; its transformer (whatever dtype it was
// written in) becomes the float32 starting point.
absl::StatusOr<StartingPoint> ContinueFrom(const TrainDemoOptions& o, std::FILE* out) {
  const std::string& from = o.init_from;
  if (absl::Status s = worker::families::CheckFluxDirectory(from); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--init_from: ", s.message()));
  }
  std::error_code ec;
  if (std::filesystem::equivalent(from, o.out_dir, ec)) {
    return absl::InvalidArgumentError("--init_from must not be the --out directory");
  }
  for (const char* component : {"text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae", "previews"}) {
    const std::string src = absl::StrCat(from, "/", component);
    if (!std::filesystem::exists(src)) continue;  // previews are optional
    std::filesystem::copy(src, absl::StrCat(o.out_dir, "/", component),
                          std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing,
                          ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot copy ", src, ": ", ec.message()));
  }
  auto vae_config = worker::families::LoadVaeConfig(from);
  if (!vae_config.ok()) return vae_config.status();
  auto encoder = worker::vae::VaeEncoder::Create(*vae_config, at::kFloat);
  if (!encoder.ok()) return encoder.status();
  auto ckpt = worker::weights::SafetensorsCheckpoint::Open(from + "/vae");
  if (!ckpt.ok()) return ckpt.status();
  if (absl::Status s = (*encoder)->Load(*ckpt); !s.ok()) return s;
  StartingPoint start;
  start.encoder = std::move(*encoder);
  auto flux_config = worker::families::LoadTransformerConfig(from);
  if (!flux_config.ok()) return flux_config.status();
  start.flux_config = *flux_config;
  auto transformer = worker::families::LoadTransformer(from, start.flux_config, at::kFloat, c10::Device(c10::kCPU));
  if (!transformer.ok()) return transformer.status();
  start.transformer = std::move(*transformer);
  if (auto text = util::ReadFileToString(from + "/training.json"); text.ok()) {
    start.previous = nlohmann::ordered_json::parse(*text, nullptr, false);
    if (start.previous.is_discarded()) start.previous = nullptr;
  }
  std::fprintf(out, "model: continuing from %s (transformer %lld parameters), threads %d\n", from.c_str(),
               static_cast<long long>(CountParameters(make_model::ModuleParameters(start.transformer->module()))),
               at::get_num_threads());
  return start;
}

}  // namespace

absl::StatusOr<TrainDemoReport> TrainDemo(const TrainDemoOptions& o, std::FILE* out) {
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (o.dtype != "f32" && o.dtype != "bf16") return absl::InvalidArgumentError("--dtype must be f32 or bf16");
  if (o.minutes < 0) return absl::InvalidArgumentError("--minutes must be >= 0");
  const bool continuing = !o.init_from.empty();
  if (continuing && o.minutes > 0) return absl::InvalidArgumentError("--minutes cannot be combined with --init_from");
  // Continuing skips the VAE phase, and either transformer phase may be 0.
  const int min_flux_steps = continuing ? 0 : 1;
  for (auto [name, v, min] : {std::tuple{"--vae_steps", o.vae_steps, 1}, {"--flux_steps", o.flux_steps, min_flux_steps},
                              {"--finetune_steps", o.finetune_steps, min_flux_steps}, {"--vae_batch", o.vae_batch, 1},
                              {"--flux_batch", o.flux_batch, 1}, {"--finetune_batch", o.finetune_batch, 1},
                              {"--max_sequence_length", o.max_sequence_length, 1}}) {
    if (v < min) return absl::InvalidArgumentError(absl::StrCat(name, " must be >= ", min, ", got ", v));
  }
  if (continuing && o.flux_steps + o.finetune_steps == 0) {
    return absl::InvalidArgumentError("--init_from needs --flux_steps or --finetune_steps >= 1");
  }
  if (o.max_sequence_length > 512) return absl::InvalidArgumentError("--max_sequence_length must be <= 512");
  const auto started = std::chrono::steady_clock::now();
  const at::ScalarType dtype = o.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  const std::string& dir = o.out_dir;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));

  // Every random draw descends from the seed: the default initialisers
  // (LibTorch's global CPU generator), the text encoders' weights, the
  // scenes and the noise.
  at::manual_seed(o.seed);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  std::mt19937_64 scenes(o.seed);

  TrainDemoReport report;
  const double budget = o.minutes * 60;
  auto start = continuing ? ContinueFrom(o, out) : TrainFromScratch(o, budget, gen, scenes, report, out);
  if (!start.ok()) return start.status();
  auto text = worker::families::FluxTextEncoder::Load(dir, at::kFloat, c10::Device(c10::kCPU));
  if (!text.ok()) return text.status();
  if ((*text)->default_max_sequence_length() != o.max_sequence_length) {
    return absl::InvalidArgumentError(absl::StrCat("--max_sequence_length ", o.max_sequence_length,
                                                   " differs from the model's ", (*text)->default_max_sequence_length()));
  }

  // Phases 2 and 3: the transformer at 64×64, then 128×128.
  FluxTrainOptions fo;
  fo.max_sequence_length = o.max_sequence_length;
  FluxTrainer trainer(*start->transformer, *start->encoder, **text, fo, o.flux_lr);
  if (o.flux_steps > 0) {
    auto flux_report = trainer.Train({"transformer-64", o.flux_steps, budget * 0.38, o.flux_lr, 100, o.log_every},
                                     {{64, o.flux_batch}}, scenes, gen, out);
    if (!flux_report.ok()) return flux_report.status();
    report.phases.push_back(*flux_report);
  }
  // The fine-tune alternates 128×128 batches with 64×64 ones (twice as many
  // scenes, half the pixels) when asked, so the small size is not forgotten.
  if (o.finetune_steps > 0) {
    std::vector<FluxTrainer::SizeBatch> finetune_sizes = {{128, o.finetune_batch}};
    if (o.finetune_mix_64) finetune_sizes.push_back({64, 2 * o.finetune_batch});
    auto finetune_report =
        trainer.Train({"transformer-128", o.finetune_steps, budget * 0.27, o.finetune_lr, 50, o.log_every},
                      finetune_sizes, scenes, gen, out);
    if (!finetune_report.ok()) return finetune_report.status();
    report.phases.push_back(*finetune_report);
  }

  if (absl::Status s = make_model::WriteTransformer(dir, start->flux_config, trainer.AveragedWeights(), dtype); !s.ok()) {
    return s;
  }
  worker::flux::FlowMatchSchedulerConfig scheduler;
  scheduler.shift = 1.0;
  scheduler.use_dynamic_shifting = false;
  if (absl::Status s = make_model::WriteScheduler(dir, scheduler); !s.ok()) return s;
  if (absl::Status s = make_model::WriteModelIndex(dir); !s.ok()) return s;
  report.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  nlohmann::ordered_json note = {{"command", o.command_line}, {"seed", o.seed}, {"threads", at::get_num_threads()},
                                 {"max_sequence_length", o.max_sequence_length},
                                 {"finetune_mix_64", o.finetune_mix_64},
                                 {"total_seconds", std::round(report.total_seconds)}};
  if (continuing) note["init_from"] = o.init_from;
  note["phases"] = nlohmann::ordered_json::array();
  for (const auto& p : report.phases) note["phases"].push_back(PhaseJson(p));
  if (!continuing) {
    note["vae_reconstruction_mse"] = {{"64", report.vae_reconstruction_mse_64}, {"128", report.vae_reconstruction_mse_128}};
  }
  // A continued model's history: the note of the model it started from.
  if (!start->previous.is_null()) note["continued_from"] = start->previous;
  std::ofstream(dir + "/training.json") << note.dump(2) << "\n";
  return report;
}

}  // namespace ditserve::tools::train
