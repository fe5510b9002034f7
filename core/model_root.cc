#include "core/model_root.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ditserve::core {
namespace {

namespace fs = std::filesystem;

bool Inside(const fs::path& resolved, const fs::path& root) {
  const std::string r = root.string(), p = resolved.string();
  return p == r || absl::StartsWith(p, r == "/" ? r : r + "/");
}

}  // namespace

absl::Status ConfineModel(const std::string& model_dir, const std::string& model_root) {
  if (model_root.empty()) return absl::OkStatus();
  std::error_code ec;
  const fs::path root = fs::canonical(model_root, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("--model_root ", model_root, ": ", ec.message()));
  const fs::path model = fs::canonical(model_dir, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("--model ", model_dir, ": ", ec.message()));
  if (!Inside(model, root)) {
    return absl::PermissionDeniedError(absl::StrCat("--model ", model_dir, " resolves to ", model.string(),
                                                    ", outside --model_root ", root.string()));
  }
  int entries = 0;
  for (fs::recursive_directory_iterator it(model, fs::directory_options::none, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (++entries > 100000) {
      return absl::PermissionDeniedError(
          absl::StrCat("--model ", model_dir, " holds more than 100,000 entries: not a model directory"));
    }
    const fs::path resolved = fs::weakly_canonical(it->path(), ec);
    if (ec) break;
    if (!Inside(resolved, root)) {
      return absl::PermissionDeniedError(absl::StrCat(it->path().string(), " resolves to ", resolved.string(),
                                                      ", outside --model_root ", root.string()));
    }
  }
  if (ec) return absl::PermissionDeniedError(absl::StrCat("--model ", model_dir, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace ditserve::core
