#include "util/read_file.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace ditserve::util {

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace ditserve::util
