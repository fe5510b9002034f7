#include "tests/harness/reference.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace ditserve::testing {

std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string DirectoryOf(const std::string& file) {
  std::string dir = file.substr(0, file.rfind('/'));
  // ccache's base_dir (scripts/build) hands the compiler paths relative to
  // the build directory, where Ninja runs it; tests run elsewhere.
  if (!dir.empty() && dir[0] != '/') dir = std::string(DITSERVE_BUILD_DIR) + "/" + dir;
  return dir;
}

absl::Status RunPythonReference(const std::string& script, const std::string& args, const std::string& log) {
  const char* python = std::getenv("DITSERVE_PYTHON");
  if (python == nullptr) return absl::FailedPreconditionError("DITSERVE_PYTHON is not set (CTest sets it)");
  const std::string cmd = absl::StrCat(python, " ", script, " ", args, " > ", log, " 2>&1");
  if (std::system(cmd.c_str()) != 0) {
    const std::string out = ReadTextFile(log);
    return absl::InternalError(absl::StrCat(cmd, " failed:\n", out.substr(out.size() > 3000 ? out.size() - 3000 : 0)));
  }
  return absl::OkStatus();
}

}  // namespace ditserve::testing
