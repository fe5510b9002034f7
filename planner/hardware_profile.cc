#include "planner/hardware_profile.h"

#include <fstream>
#include <initializer_list>
#include <tuple>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace ditserve::planner {
namespace {

using nlohmann::json;

// The number at `key` of `object`, which must be > 0 unless `zero_ok`.
absl::Status Positive(const json& object, const std::string& where, const std::string& key, bool zero_ok,
                      double* out) {
  if (!object.contains(key) || !object[key].is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("hardware profile: ", where, ".", key, " must be a number"));
  }
  *out = object[key].get<double>();
  if (!(zero_ok ? *out >= 0 : *out > 0) || *out > 1e12) {
    return absl::InvalidArgumentError(absl::StrCat("hardware profile: ", where, ".", key, " must be ",
                                                   zero_ok ? ">= 0" : "> 0", " (and finite), got ", *out));
  }
  return absl::OkStatus();
}

absl::StatusOr<LinkProfile> ParseLink(const json& root, const std::string& key) {
  if (!root.contains(key) || !root[key].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("hardware profile: ", key, " must be an object"));
  }
  const json& l = root[key];
  LinkProfile link;
  link.kind = l.value("kind", "");
  if (absl::Status s = Positive(l, key, "bandwidth_gbs", false, &link.bandwidth_gbs); !s.ok()) return s;
  if (absl::Status s = Positive(l, key, "latency_us", true, &link.latency_us); !s.ok()) return s;
  return link;
}

}  // namespace

absl::StatusOr<HardwareProfile> ParseHardwareProfile(const std::string& json_text) {
  const json root = json::parse(json_text, nullptr, false);
  if (root.is_discarded() || !root.is_object()) return absl::InvalidArgumentError("hardware profile is not a JSON object");
  HardwareProfile p;
  if (!root.contains("name") || !root["name"].is_string()) {
    return absl::InvalidArgumentError("hardware profile: name must be a string");
  }
  p.name = root["name"].get<std::string>();
  p.source = root.value("source", "");
  if (!root.contains("device") || !root["device"].is_object()) {
    return absl::InvalidArgumentError("hardware profile: device must be an object");
  }
  const json& d = root["device"];
  DeviceProfile& dev = p.device;
  for (const auto& [key, out, zero_ok] : std::initializer_list<std::tuple<const char*, double*, bool>>{
           {"gemm_tflops", &dev.gemm_tflops, false},
           {"gemm_half_rows", &dev.gemm_half_rows, true},
           {"attention_tflops", &dev.attention_tflops, false},
           {"conv_tflops", &dev.conv_tflops, false},
           {"memory_bandwidth_gbs", &dev.memory_bandwidth_gbs, false},
           {"memory_gib", &dev.memory_gib, false},
           {"kernel_launch_us", &dev.kernel_launch_us, true}}) {
    if (absl::Status s = Positive(d, "device", key, zero_ok, out); !s.ok()) return s;
  }
  double element_bytes = 2;
  if (d.contains("element_bytes")) {
    if (absl::Status s = Positive(d, "device", "element_bytes", false, &element_bytes); !s.ok()) return s;
  }
  if (element_bytes != 1 && element_bytes != 2 && element_bytes != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("hardware profile: device.element_bytes must be 1, 2 or 4, got ", element_bytes));
  }
  dev.element_bytes = static_cast<int>(element_bytes);
  double gpus = 8;
  if (absl::Status s = Positive(root, "profile", "gpus_per_node", false, &gpus); !s.ok()) return s;
  if (gpus != static_cast<int>(gpus) || gpus > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("hardware profile: gpus_per_node must be an integer in [1, 1024], got ", gpus));
  }
  p.gpus_per_node = static_cast<int>(gpus);
  auto intra = ParseLink(root, "intra_node");
  if (!intra.ok()) return intra.status();
  p.intra_node = *intra;
  if (root.contains("inter_node")) {
    auto inter = ParseLink(root, "inter_node");
    if (!inter.ok()) return inter.status();
    p.inter_node = *inter;
  } else {
    p.inter_node = p.intra_node;
  }
  if (root.contains("pipeline_overhead_s")) {
    if (absl::Status s = Positive(root, "profile", "pipeline_overhead_s", true, &p.pipeline_overhead_s); !s.ok()) return s;
  }
  return p;
}

absl::StatusOr<HardwareProfile> ReadHardwareProfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the hardware profile ", path));
  std::stringstream text;
  text << in.rdbuf();
  auto p = ParseHardwareProfile(text.str());
  if (!p.ok()) return absl::Status(p.status().code(), absl::StrCat(path, ": ", p.status().message()));
  return p;
}

std::string HardwareProfileToJson(const HardwareProfile& p) {
  const auto link = [](const LinkProfile& l) {
    return json{{"kind", l.kind}, {"bandwidth_gbs", l.bandwidth_gbs}, {"latency_us", l.latency_us}};
  };
  const DeviceProfile& d = p.device;
  json root = {{"name", p.name},
               {"source", p.source},
               {"device",
                {{"gemm_tflops", d.gemm_tflops},
                 {"gemm_half_rows", d.gemm_half_rows},
                 {"attention_tflops", d.attention_tflops},
                 {"conv_tflops", d.conv_tflops},
                 {"memory_bandwidth_gbs", d.memory_bandwidth_gbs},
                 {"memory_gib", d.memory_gib},
                 {"kernel_launch_us", d.kernel_launch_us},
                 {"element_bytes", d.element_bytes}}},
               {"gpus_per_node", p.gpus_per_node},
               {"intra_node", link(p.intra_node)},
               {"inter_node", link(p.inter_node)},
               {"pipeline_overhead_s", p.pipeline_overhead_s}};
  return root.dump(2) + "\n";
}

}  // namespace ditserve::planner
