#pragma once

// Test helpers: a ditserve-server child process on free ports, its gang's
// processes, a /metrics scrape, and a tiny model made once per test binary.
// Every process is killed when the ServerProcess goes away (ProcessGang;
// the gang's ranks die with the server through PR_SET_PDEATHSIG).

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "util/process_gang.h"

namespace ditserve::testing {

// A tiny random-weight Flux model made with ditserve-make-model (once per
// process; later calls return the same directory).
absl::StatusOr<std::string> TinyModel();

class ServerProcess {
 public:
  // Starts ditserve-server with `args` plus --port 0 --metrics_port 0
  // --control_listen 127.0.0.1:0 --print_ports and waits for the ports line.
  // `credentials` make channel() (and the health checks): TLS for a server
  // started with --tls_cert_file.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::vector<std::string>& args,
      std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials());
  ~ServerProcess();

  std::string address() const;  // 127.0.0.1:PORT
  std::string control_address() const;
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }
  std::shared_ptr<grpc::Channel> channel();

  // Polls grpc.health.v1 Check("") until it answers `status` ("SERVING",
  // "NOT_SERVING") or `timeout` passes.
  absl::Status WaitHealth(const std::string& status, absl::Duration timeout);
  // The current health status name ("SERVING", ...), or the RPC's error.
  absl::StatusOr<std::string> Health(const std::string& service = "");
  // Sends `sig` to the server.
  void Signal(int sig);
  // Waits for the server to exit; its exit description.
  absl::StatusOr<util::ChildExit> WaitExit(absl::Duration timeout);
  // The processes whose parent is the server (the spawned gang's ranks).
  std::vector<pid_t> Children() const;
  std::string Log() const;

 private:
  ServerProcess() = default;
  std::unique_ptr<util::ProcessGang> gang_;
  pid_t pid_ = -1;
  int port_ = 0, metrics_port_ = 0, control_port_ = 0;
  std::string log_path_;
  std::shared_ptr<grpc::Channel> channel_;
};

// GET http://127.0.0.1:port/metrics: the body.
absl::StatusOr<std::string> ScrapeMetrics(int port);

// The Prometheus text format, parsed: TYPE lines and sample values by the
// full series name (e.g. `ditserve_requests_total{code="OK",model=...}`).
struct MetricsText {
  std::map<std::string, std::string> types;  // family → counter|gauge|histogram
  std::map<std::string, double> samples;
  // Sum of the samples of `name` whose labels contain every `label="value"`
  // in `labels`.
  double Sum(const std::string& name, const std::vector<std::string>& labels = {}) const;
};
MetricsText ParseMetrics(const std::string& text);

}  // namespace ditserve::testing
