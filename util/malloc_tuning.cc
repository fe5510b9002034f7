#include "util/malloc_tuning.h"

#include <malloc.h>

#include <climits>
#include <cstdlib>
#include <cstring>

namespace ditserve::util {

bool KeepFreedMemoryForReuse() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) return false;
  return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
}

}  // namespace ditserve::util
