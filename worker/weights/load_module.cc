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
                               const LoadOptions& options) {
  const std::string& prefix = options.prefix;
  std::map<std::string, at::Tensor> targets;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    targets[prefix + item.key()] = item.value();
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    targets[prefix + item.key()] = item.value();
  }
  std::vector<std::string> missing, unexpected;
  std::map<std::string, std::string> source_of;  // module key -> checkpoint key
  std::set<std::string> consumed(options.ignorable.begin(), options.ignorable.end());
  for (const auto& [name, tensor] : targets) {
    auto tied = options.tied.find(name);
    if (checkpoint.Contains(name)) {
      source_of[name] = name;
    } else if (tied != options.tied.end() && checkpoint.Contains(tied->second)) {
      source_of[name] = tied->second;
    } else {
      missing.push_back(name);
    }
    consumed.insert(name);
    if (tied != options.tied.end()) consumed.insert(tied->second);
  }
  for (const std::string& name : checkpoint.names()) {
    if (!options.partial && absl::StartsWith(name, prefix) && !consumed.count(name)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty()) {
    std::string message = "the checkpoint does not match the model:";
    if (!missing.empty()) absl::StrAppend(&message, " missing keys: ", ListSome(missing), ".");
    if (!unexpected.empty()) absl::StrAppend(&message, " unexpected keys: ", ListSome(unexpected), ".");
    return absl::InvalidArgumentError(message);
  }
  at::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    auto source = checkpoint.Get(source_of[name]);
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
