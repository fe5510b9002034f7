#pragma once

// Model confinement (--model_root): a model directory, and every file and
// symlink under it, must resolve inside the root, so that a request or a
// flag cannot make the engine read outside the models it is meant to serve
// (a `..` path, or a symlink in a model directory pointing at /etc).
// Torch-free.

#include <string>

#include "absl/status/status.h"

namespace ditserve::core {

// OK when `model_root` is empty (no confinement). Otherwise NOT_FOUND when
// the root or the model does not exist; PERMISSION_DENIED naming the path
// when the model, or anything under it (followed through symlinks),
// resolves outside the root, or when the directory holds more than 100,000
// entries.
absl::Status ConfineModel(const std::string& model_dir, const std::string& model_root);

}  // namespace ditserve::core
