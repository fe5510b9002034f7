#include "tests/harness/binaries.h"

#include <unistd.h>

#include <cstdlib>

namespace ditserve::testing {

std::string BinDir() {
  if (const char* dir = std::getenv("DITSERVE_BIN_DIR")) return dir;
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string self = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("./x");
  return self.substr(0, self.rfind('/')) + "/../bin";
}

}  // namespace ditserve::testing
