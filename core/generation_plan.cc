#include "core/generation_plan.h"

#include <algorithm>
#include <numeric>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/aspect_ratio_bins.h"
#include "util/read_file.h"

namespace ditserve::core {
namespace {

absl::StatusOr<nlohmann::json> ParseJsonObject(const std::string& text, const std::string& path) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  return j;
}

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  auto text = util::ReadFileToString(path);
  if (!text.ok()) return text.status();
  return ParseJsonObject(*text, path);
}

absl::StatusOr<int> PositiveInt(const nlohmann::json& j, const char* key, const std::string& path) {
  if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() < 1 || j[key].get<int64_t>() > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", key, " must be an integer in [1, 1048576]"));
  }
  return j[key].get<int>();
}

}  // namespace

absl::StatusOr<std::string> ReadModelFamily(const std::string& model_dir) {
  const std::string path = model_dir + "/model_index.json";
  auto index = ReadJson(path);
  if (!index.ok()) return index.status();
  if (!index->contains("_class_name") || !(*index)["_class_name"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a diffusers pipeline index (no _class_name)"));
  }
  const std::string name = (*index)["_class_name"].get<std::string>();
  if (name == "FluxPipeline") return std::string("flux");
  if (name == "StableDiffusion3Pipeline") return std::string("sd3");
  if (name == "PixArtAlphaPipeline" || name == "PixArtSigmaPipeline") return std::string("pixart");
  if (name == "HunyuanDiTPipeline") return std::string("hunyuandit");
  return absl::InvalidArgumentError(absl::StrCat(model_dir, ": pipeline class ", name,
                                                 " is not supported (supported: FluxPipeline, StableDiffusion3Pipeline, "
                                                 "PixArtAlphaPipeline, PixArtSigmaPipeline, HunyuanDiTPipeline)"));
}

absl::StatusOr<ModelGeometry> ReadModelGeometry(const std::string& model_dir) {
  ModelGeometry g;
  auto family = ReadModelFamily(model_dir);
  if (!family.ok()) return family.status();
  g.family = *family;
  const std::string tpath = model_dir + "/transformer/config.json";
  auto ttext = util::ReadFileToString(tpath);
  if (!ttext.ok()) return ttext.status();
  auto t = ParseJsonObject(*ttext, tpath);
  if (!t.ok()) return t.status();
  g.transformer_config_json = *std::move(ttext);
  auto heads = PositiveInt(*t, "num_attention_heads", tpath);
  if (!heads.ok()) return heads.status();
  auto layers = PositiveInt(*t, "num_layers", tpath);
  if (!layers.ok()) return layers.status();
  g.num_attention_heads = *heads;
  g.num_blocks = *layers;
  if (g.family == "flux") {
    auto singles = PositiveInt(*t, "num_single_layers", tpath);
    if (!singles.ok()) return singles.status();
    g.num_blocks += *singles;
    g.guidance_embeds = t->contains("guidance_embeds") && (*t)["guidance_embeds"].is_boolean() &&
                        (*t)["guidance_embeds"].get<bool>();
  } else if (g.family == "pixart") {
    // PixArt{Alpha,Sigma}Pipeline: classic CFG at 4.5; sin-cos positions
    // interpolate to any grid.
    g.default_guidance_scale = 4.5;
    g.cfg_scale = CfgScaleField::kGuidanceScale;
    if (auto tok = ReadJson(model_dir + "/tokenizer/tokenizer_config.json");
        tok.ok() && tok->contains("model_max_length") && (*tok)["model_max_length"].is_number_integer() &&
        (*tok)["model_max_length"].get<int64_t>() > 0) {
      g.max_sequence_length = static_cast<int>(std::min<int64_t>((*tok)["model_max_length"].get<int64_t>(), 512));
    }
  } else if (g.family == "hunyuandit") {
    // HunyuanDiTPipeline: classic CFG at 5.0; RoPE places any grid; mT5's
    // text_len_t5 tokens (a request may truncate below it).
    g.default_guidance_scale = 5.0;
    g.cfg_scale = CfgScaleField::kGuidanceScale;
    g.max_sequence_length = 256;
    if (t->contains("text_len_t5") && (*t)["text_len_t5"].is_number_integer()) {
      auto len = PositiveInt(*t, "text_len_t5", tpath);
      if (!len.ok()) return len.status();
      g.max_sequence_length = *len;
    }
  } else {  // sd3
    g.default_guidance_scale = 7.0;
    g.cfg_scale = CfgScaleField::kGuidanceScale;
    auto max_size = PositiveInt(*t, "pos_embed_max_size", tpath);
    if (!max_size.ok()) return max_size.status();
    g.max_token_rows = *max_size;
  }
  const std::string vpath = model_dir + "/vae/config.json";
  auto v = ReadJson(vpath);
  if (!v.ok()) return v.status();
  if (!v->contains("block_out_channels") || !(*v)["block_out_channels"].is_array() ||
      (*v)["block_out_channels"].empty() || (*v)["block_out_channels"].size() > 8) {
    return absl::InvalidArgumentError(absl::StrCat(vpath, ": block_out_channels must be a list of 1 to 8 sizes"));
  }
  g.size_multiple = 2 << ((*v)["block_out_channels"].size() - 1);
  if (g.family == "pixart" || g.family == "hunyuandit") {
    // The pipeline's default: the transformer's sample_size in pixels.
    auto size = PositiveInt(*t, "sample_size", tpath);
    if (!size.ok()) return size.status();
    g.default_size = *size * (g.size_multiple / 2);
    if (g.family == "pixart" && AspectRatioBins(*size) != nullptr) g.aspect_ratio_bins = *size;
  } else if (v->contains("sample_size")) {
    auto size = PositiveInt(*v, "sample_size", vpath);
    if (!size.ok()) return size.status();
    g.default_size = *size;
  }
  return g;
}

ImageSize GenerationSize(const ModelGeometry& model, int height, int width) {
  const std::vector<AspectRatioBin>* bins = AspectRatioBins(model.aspect_ratio_bins);
  if (bins == nullptr || height <= 0 || width <= 0) return {height, width};
  const AspectRatioBin b = ClosestBin(*bins, height, width);
  return {b.height, b.width};
}

ResolvedGuidance ResolveGuidance(const ModelGeometry& model, double guidance_scale, double true_cfg_scale) {
  const double guidance = guidance_scale < 0 ? model.default_guidance_scale : guidance_scale;
  ResolvedGuidance r;
  if (model.cfg_scale == CfgScaleField::kGuidanceScale) {
    r.cfg_scale = guidance;
  } else {
    r.cfg_scale = true_cfg_scale;
    r.embedded = model.guidance_embeds;
    if (r.embedded) r.embedded_scale = guidance;
  }
  r.cfg = r.cfg_scale > 1.0;
  if (!r.cfg) r.cfg_scale = 1.0;
  return r;
}

absl::Status ValidateGuidance(const ModelGeometry& model, double /*guidance_scale: < 0 is unset, any value else*/,
                              double true_cfg_scale) {
  if (true_cfg_scale < 1.0) {
    return absl::InvalidArgumentError(absl::StrCat("true_cfg_scale must be >= 1, got ", true_cfg_scale));
  }
  if (model.cfg_scale == CfgScaleField::kGuidanceScale && true_cfg_scale != 1.0) {
    return absl::InvalidArgumentError(absl::StrCat("true_cfg_scale must be 1 for ", model.family,
                                                   " (its classifier-free guidance scale is guidance_scale), got ",
                                                   true_cfg_scale));
  }
  return absl::OkStatus();
}

absl::Status ValidateParallelModel(const parallel::ParallelConfig& config, const PipeFusionOptions& pf,
                                   const ModelGeometry& model) {
  if (model.num_attention_heads % config.ulysses_degree != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--ulysses_degree ", config.ulysses_degree,
                                                   " must divide the model's ", model.num_attention_heads,
                                                   " attention heads"));
  }
  const int stages = config.pipefusion_parallel_degree;
  if (stages > model.num_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("--pipefusion_parallel_degree ", stages,
                                                   " is more stages than the model's ", model.num_blocks,
                                                   " transformer blocks"));
  }
  if (pf.num_pipeline_patch < 0 || pf.num_pipeline_patch > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("--num_pipeline_patch must be in [0, 1024] (0: the PipeFusion degree), got ",
                                                   pf.num_pipeline_patch));
  }
  if (pf.warmup_steps < 0 || pf.warmup_steps > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("--warmup_steps must be in [0, 1000], got ", pf.warmup_steps));
  }
  const auto& layers = pf.attn_layer_num_for_pp;
  if (!layers.empty()) {
    const int sum = std::accumulate(layers.begin(), layers.end(), 0);
    bool positive = true;
    for (int n : layers) positive = positive && n >= 1;
    if (static_cast<int>(layers.size()) != stages || sum != model.num_blocks || !positive) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--attn_layer_num_for_pp must list ", stages, " positive block counts (one per PipeFusion stage) summing to the model's ",
          model.num_blocks, " blocks, got [", absl::StrJoin(layers, ","), "]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateParallelRequest(const parallel::ParallelConfig& config, const PipeFusionOptions& pf,
                                     const ModelGeometry& model, int height, int width, bool cfg) {
  const int multiple = model.size_multiple;
  for (auto [name, value] : {std::pair{"height", height}, {"width", width}}) {
    if (value < multiple || value > 8192 || value % multiple != 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be a multiple of ", multiple, " in [", multiple,
                                                     ", 8192], got ", value));
    }
  }
  const ImageSize generated = GenerationSize(model, height, width);
  height = generated.height;
  width = generated.width;
  const int rows = height / multiple;
  const int patches = pf.patches(config);
  const int sp = config.sequence_parallel_degree();
  const int64_t bands = PaddedRows(rows, sp) / sp;
  if (bands < patches) {
    return absl::InvalidArgumentError(absl::StrCat("height ", height, " gives ", rows, " latent token rows: ",
                                                   bands, " bands of ", sp,
                                                   " (ulysses x ring) rows, fewer than num_pipeline_patch ", patches));
  }
  if (model.max_token_rows > 0) {
    for (auto [name, value] : {std::pair{"height", height}, {"width", width}}) {
      if (value / multiple > model.max_token_rows) {
        return absl::InvalidArgumentError(absl::StrCat(name, " ", value, " gives ", value / multiple,
                                                       " latent token rows; this model places at most ",
                                                       model.max_token_rows, " (", model.max_token_rows * multiple,
                                                       " px: transformer pos_embed_max_size)"));
      }
    }
  }
  if (config.use_cfg_parallel && !cfg) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--use_cfg_parallel needs classifier-free guidance: ",
        model.cfg_scale == CfgScaleField::kGuidanceScale ? "guidance_scale" : "true_cfg_scale", " > 1"));
  }
  return absl::OkStatus();
}

int64_t PaddedRows(int64_t rows, int sp_size) { return (rows + sp_size - 1) / sp_size * sp_size; }

BlockRange StageBlocks(const PipeFusionOptions& pf, int num_blocks, int stages, int stage) {
  std::vector<int> counts = pf.attn_layer_num_for_pp;
  if (counts.empty()) {
    for (int s = 0; s < stages; ++s) counts.push_back(num_blocks / stages + (s < num_blocks % stages ? 1 : 0));
  }
  BlockRange r;
  for (int s = 0; s < stage; ++s) r.first += counts[s];
  r.end = r.first + counts[stage];
  return r;
}

PatchPlan PatchPlan::Balanced(int64_t rows, int64_t cols, int patches, int sp_size, int64_t text_tokens) {
  PatchPlan plan;
  plan.cols_ = cols;
  plan.sp_size_ = sp_size;
  // In bands of sp_size rows: each rank computes `cols` tokens per band.
  const int64_t bands = rows / sp_size;
  std::vector<int64_t> counts(patches, bands / patches);  // equal, remainder below
  if (patches > 1) {
    // Patch 0 takes b0 bands; the others share the rest as evenly as
    // possible. Pick the b0 whose busiest patch is lightest.
    int64_t best_b0 = 1, best_cost = -1;
    for (int64_t b0 = 1; b0 <= bands - (patches - 1); ++b0) {
      const int64_t rest = bands - b0;
      const int64_t widest = (rest + patches - 2) / (patches - 1);
      const int64_t cost = std::max(text_tokens + b0 * cols, widest * cols);
      if (best_cost < 0 || cost < best_cost) {
        best_cost = cost;
        best_b0 = b0;
      }
    }
    counts[0] = best_b0;
    const int64_t rest = bands - best_b0;
    for (int m = 1; m < patches; ++m) counts[m] = rest / (patches - 1) + (m - 1 < rest % (patches - 1) ? 1 : 0);
  } else {
    counts[0] = bands;
  }
  plan.first_row_.push_back(0);
  for (int64_t c : counts) plan.first_row_.push_back(plan.first_row_.back() + c * sp_size);
  return plan;
}

TokenRange PatchPlan::Patch(int patch) const {
  return {first_row_[patch] * cols_, first_row_[patch + 1] * cols_};
}

TokenRange PatchPlan::Local(int patch, int sp_rank) const {
  const int64_t band_rows = rows(patch) / sp_size_;
  const int64_t begin = (first_row_[patch] + sp_rank * band_rows) * cols_;
  return {begin, begin + band_rows * cols_};
}

std::vector<int> ReplicaRequests(int num_requests, int replicas, int replica) {
  std::vector<int> out;
  for (int i = replica; i < num_requests; i += replicas) out.push_back(i);
  return out;
}

}  // namespace ditserve::core
