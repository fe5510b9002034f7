#include "tests/server/server_process.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/harness/binaries.h"

namespace ditserve::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The integer after `"key": ` in `line`, or -1.
int JsonInt(const std::string& line, const std::string& key) {
  const std::string needle = absl::StrCat("\"", key, "\": ");
  const size_t at = line.find(needle);
  if (at == std::string::npos) return -1;
  int value = -1;
  const std::string rest = line.substr(at + needle.size());
  if (!absl::SimpleAtoi(rest.substr(0, rest.find_first_of(",}")), &value)) return -1;
  return value;
}

}  // namespace

absl::StatusOr<std::string> TinyModel() {
  static absl::Mutex mu;
  static std::string* dir = nullptr;
  absl::MutexLock lock(&mu);
  if (dir != nullptr) return *dir;
  const std::string out = absl::StrCat(::testing::TempDir(), "/ditserve_tiny_", getpid());
  util::ChildSpec spec;
  spec.argv = {BinDir() + "/ditserve-make-model", "--preset=tiny", "--out=" + out};
  spec.output_path = out + ".log";
  auto gang = util::ProcessGang::Start({spec});
  if (!gang.ok()) return gang.status();
  auto r = (*gang)->Wait(absl::Now() + absl::Seconds(300), false, absl::Seconds(1));
  if (r.exits.empty() || !r.exits[0].ok()) {
    return absl::InternalError(absl::StrCat("ditserve-make-model failed: ", ReadAll(spec.output_path)));
  }
  dir = new std::string(out);
  return *dir;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const std::vector<std::string>& args,
                                                                    std::shared_ptr<grpc::ChannelCredentials> credentials) {
  std::unique_ptr<ServerProcess> s(new ServerProcess());
  static int counter = 0;
  s->log_path_ = absl::StrCat(::testing::TempDir(), "/ditserve_server_", getpid(), "_", counter++, ".log");
  util::ChildSpec spec;
  spec.argv = {BinDir() + "/ditserve-server", "--host=127.0.0.1", "--port=0", "--metrics_port=0",
               "--control_listen=127.0.0.1:0", "--print_ports"};
  for (const std::string& a : args) spec.argv.push_back(a);
  spec.output_path = s->log_path_;
  spec.env = {{"OMP_NUM_THREADS", "1"}};
  auto gang = util::ProcessGang::Start({spec});
  if (!gang.ok()) return gang.status();
  s->gang_ = *std::move(gang);
  s->pid_ = s->gang_->pids()[0];
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    const std::string log = ReadAll(s->log_path_);
    for (absl::string_view line : absl::StrSplit(log, '\n')) {
      const std::string l(line);
      if (l.find("\"control_port\"") != std::string::npos) {
        s->port_ = JsonInt(l, "port");
        s->metrics_port_ = JsonInt(l, "metrics_port");
        s->control_port_ = JsonInt(l, "control_port");
      }
    }
    if (s->port_ > 0) break;
    // Exited (e.g. a flag error) before listening: gone, or a zombie.
    const std::string stat = ReadAll(absl::StrCat("/proc/", s->pid_, "/stat"));
    const size_t close = stat.rfind(')');
    if (close == std::string::npos || stat.substr(close + 2, 1) == "Z") {
      return absl::FailedPreconditionError(absl::StrCat("ditserve-server did not start: ", ReadAll(s->log_path_)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (s->port_ <= 0) return absl::DeadlineExceededError("ditserve-server printed no ports");
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(1 << 30);
  s->channel_ = grpc::CreateCustomChannel(s->address(), credentials, channel_args);
  return s;
}

ServerProcess::~ServerProcess() {
  if (gang_) gang_->KillAll();
  unlink(log_path_.c_str());
}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }
std::string ServerProcess::control_address() const { return absl::StrCat("127.0.0.1:", control_port_); }
std::shared_ptr<grpc::Channel> ServerProcess::channel() { return channel_; }

absl::StatusOr<std::string> ServerProcess::Health(const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
}

absl::Status ServerProcess::WaitHealth(const std::string& want, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string last;
  while (absl::Now() < deadline) {
    auto h = Health();
    last = h.ok() ? *h : h.status().ToString();
    if (h.ok() && *h == want) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("health stayed ", last, " instead of ", want, "; server log:\n", Log()));
}

void ServerProcess::Signal(int sig) { kill(pid_, sig); }

absl::StatusOr<util::ChildExit> ServerProcess::WaitExit(absl::Duration timeout) {
  auto r = gang_->Wait(absl::Now() + timeout, false, absl::Seconds(2));
  if (r.timed_out) return absl::DeadlineExceededError("ditserve-server did not exit in time");
  return r.exits[0];
}

std::vector<pid_t> ServerProcess::Children() const {
  std::vector<pid_t> out;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* e = readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    const std::string stat = ReadAll(absl::StrCat("/proc/", pid, "/stat"));
    // pid (comm) state ppid ...: comm may contain spaces; parse after ')'.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::vector<std::string> fields = absl::StrSplit(stat.substr(close + 2), ' ');
    int ppid = 0;
    if (fields.size() > 1 && absl::SimpleAtoi(fields[1], &ppid) && ppid == pid_ && fields[0] != "Z") {
      out.push_back(pid);
    }
  }
  closedir(proc);
  return out;
}

std::string ServerProcess::Log() const { return ReadAll(log_path_); }

absl::StatusOr<std::string> ScrapeMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to /metrics on port ", port));
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::InternalError("write");
  }
  std::string response;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body == std::string::npos ||
      response.find(" 200 ") == std::string::npos) {
    return absl::InternalError(absl::StrCat("bad HTTP response: ", response.substr(0, 200)));
  }
  return response.substr(body + 4);
}

MetricsText ParseMetrics(const std::string& text) {
  MetricsText m;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty()) continue;
    if (absl::StartsWith(line, "# TYPE ")) {
      std::vector<std::string> parts = absl::StrSplit(line.substr(7), ' ');
      if (parts.size() == 2) m.types[parts[0]] = parts[1];
      continue;
    }
    if (line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    double value = 0;
    if (space == absl::string_view::npos || !absl::SimpleAtod(line.substr(space + 1), &value)) continue;
    m.samples[std::string(line.substr(0, space))] = value;
  }
  return m;
}

double MetricsText::Sum(const std::string& name, const std::vector<std::string>& labels) const {
  double sum = 0;
  for (const auto& [series, value] : samples) {
    const std::string base = series.substr(0, series.find('{'));
    if (base != name) continue;
    bool all = true;
    for (const std::string& l : labels) all = all && series.find(l) != std::string::npos;
    if (all) sum += value;
  }
  return sum;
}

}  // namespace ditserve::testing
