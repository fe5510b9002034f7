#include "tests/harness/command.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "util/process_gang.h"

namespace ditserve::testing {

std::string BinDir() {
  if (const char* dir = std::getenv("DITSERVE_BIN_DIR")) return dir;
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string self(buf, static_cast<size_t>(std::max<ssize_t>(n, 0)));
  return self.substr(0, self.rfind('/')) + "/../bin";
}

CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::vector<std::pair<std::string, std::string>>& env, absl::Duration timeout) {
  const char* tmp = std::getenv("TMPDIR");
  const std::string log = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/ditserve_command_", getpid(), "_",
                                       absl::ToUnixNanos(absl::Now()), ".log");
  auto gang = util::ProcessGang::Start({util::ChildSpec{argv, env, log}});
  if (!gang.ok()) return {-1, std::string(gang.status().message())};
  auto r = (*gang)->Wait(absl::Now() + timeout, false, absl::Seconds(2));
  CommandResult out{r.exits[0].exited ? r.exits[0].exit_code : 128 + r.exits[0].term_signal, ReadTextFile(log)};
  unlink(log.c_str());
  return out;
}

}  // namespace ditserve::testing
