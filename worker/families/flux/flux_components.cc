#include "worker/families/flux/flux_components.h"

#include <ATen/ATen.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/read_file.h"
#include "worker/families/components.h"

namespace ditserve::worker::families {

absl::Status CheckFluxDirectory(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) return absl::NotFoundError(absl::StrCat("model directory ", dir, " does not exist"));
  auto index_text = util::ReadFileToString(dir + "/model_index.json");
  if (!index_text.ok()) return index_text.status();
  const nlohmann::json index = nlohmann::json::parse(*index_text, nullptr, false);
  if (index.is_discarded() || !index.is_object() || !index.contains("_class_name")) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/model_index.json is not a diffusers pipeline index"));
  }
  if (index["_class_name"] != "FluxPipeline") {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": ", index["_class_name"].dump(),
                                                   " is not supported (FluxPipeline is)"));
  }
  for (const char* component : {"scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                                "transformer", "vae"}) {
    if (!index.contains(component) || !std::filesystem::is_directory(absl::StrCat(dir, "/", component))) {
      return absl::NotFoundError(absl::StrCat(dir, ": component ", component, " is missing"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<flux::FluxTransformerConfig> LoadTransformerConfig(const std::string& dir) {
  auto text = util::ReadFileToString(dir + "/transformer/config.json");
  if (!text.ok()) return text.status();
  return flux::ParseFluxTransformerConfig(*text);
}

absl::StatusOr<std::unique_ptr<flux::FluxTransformer>> LoadTransformer(const std::string& dir,
                                                                       const flux::FluxTransformerConfig& config,
                                                                       at::ScalarType dtype, c10::Device device,
                                                                       const flux::FluxPart& part) {
  auto transformer = flux::FluxTransformer::Create(config, dtype, part, models::ParameterInit::kUninitialized);
  if (!transformer.ok()) return transformer.status();
  if (absl::Status s = LoadTransformerWeights(dir, **transformer, device); !s.ok()) return s;
  return transformer;
}

at::Tensor ModelTimestep(float sigma, int64_t batch, at::ScalarType dtype, c10::Device device) {
  const at::Tensor t = at::full({1}, sigma, at::kFloat) * 1000;
  return (t.to(dtype) / 1000).to(device).expand({batch}).contiguous();
}

}  // namespace ditserve::worker::families
