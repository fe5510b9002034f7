#include "worker/weights/load_module.h"

#include <torch/nn/module.h>

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ditserve::worker::weights {
namespace {

std::string ListSome(const std::vector<std::string>& keys) {
  constexpr size_t kShown = 20;
  std::vector<std::string> shown(keys.begin(), keys.begin() + std::min(keys.size(), kShown));
  std::string out = absl::StrJoin(shown, ", ");
  if (keys.size() > kShown) absl::StrAppend(&out, ", … (", keys.size(), " in all)");
  return out;
}

}  // namespace

absl::Status LoadModuleWeights(torch::nn::Module& module, const SafetensorsCheckpoint& checkpoint,
                               const std::string& prefix) {
  std::map<std::string, at::Tensor> targets;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    targets[prefix + item.key()] = item.value();
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    targets[prefix + item.key()] = item.value();
  }
  std::vector<std::string> missing, unexpected;
  for (const auto& [name, tensor] : targets) {
    if (!checkpoint.Contains(name)) missing.push_back(name);
  }
  for (const std::string& name : checkpoint.names()) {
    if (absl::StartsWith(name, prefix) && !targets.count(name)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty()) {
    std::string message = "the checkpoint does not match the model:";
    if (!missing.empty()) absl::StrAppend(&message, " missing keys: ", ListSome(missing), ".");
    if (!unexpected.empty()) absl::StrAppend(&message, " unexpected keys: ", ListSome(unexpected), ".");
    return absl::InvalidArgumentError(message);
  }
  at::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    auto source = checkpoint.Get(name);
    if (!source.ok()) return source.status();
    if (!source->sizes().equals(target.sizes())) {
      return absl::InvalidArgumentError(absl::StrCat("'", name, "' has shape ", c10::str(source->sizes()),
                                                     " in the checkpoint but ", c10::str(target.sizes()),
                                                     " in the model"));
    }
    target.copy_(*source);  // converts dtype and device
  }
  return absl::OkStatus();
}

}  // namespace ditserve::worker::weights
