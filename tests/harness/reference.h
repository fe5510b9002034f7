#pragma once

// Helpers for tests that compare against a Python reference (PyPI's
// diffusers, transformers, safetensors) run from the setup venv.

#include <string>

#include "absl/status/status.h"

namespace ditserve::testing {

// The whole file, or "" if it cannot be read.
std::string ReadTextFile(const std::string& path);

// The directory of a source file: DirectoryOf(__FILE__), absolute even when
// the compiler was given a path relative to the build directory.
std::string DirectoryOf(const std::string& file);

// Runs `$DITSERVE_PYTHON <script> <args>` (CTest sets DITSERVE_PYTHON to the
// setup venv's python3) with its output captured in <log>; an error carries
// the command and the end of the output.
absl::Status RunPythonReference(const std::string& script, const std::string& args, const std::string& log);

}  // namespace ditserve::testing
