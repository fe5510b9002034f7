#pragma once

// A cluster as the cost model sees it: one device profile (what its kernels
// achieve) and the links between devices, read from a JSON file under
// hardware/. Plain values; torch-free.
//
//   {"name": "H100 SXM (datasheet)", "source": "datasheet: ...",
//    "device": {"gemm_tflops": 700, "gemm_half_rows": 256, "attention_tflops": 450,
//               "memory_bandwidth_gbs": 3000, "memory_gib": 80, "kernel_launch_us": 6,
//               "conv_tflops": 250, "element_bytes": 2},
//    "gpus_per_node": 8,
//    "intra_node": {"kind": "nvlink", "bandwidth_gbs": 350, "latency_us": 15},
//    "inter_node": {"kind": "infiniband", "bandwidth_gbs": 40, "latency_us": 30}}

#include <string>

#include "absl/status/statusor.h"

namespace ditserve::planner {

struct DeviceProfile {
  // Achieved GEMM throughput on large matrices, and the row count at which a
  // GEMM reaches half of it (a GEMM of M rows runs at gemm_tflops·M/(M + half)).
  double gemm_tflops = 0;
  double gemm_half_rows = 0;
  double attention_tflops = 0;      // achieved by the attention kernel (QKᵀ and PV)
  double conv_tflops = 0;           // the VAE decoder's convolutions
  double memory_bandwidth_gbs = 0;  // element-wise kernels (GB/s)
  double memory_gib = 0;            // per device
  double kernel_launch_us = 0;      // per kernel, eager
  int element_bytes = 2;            // activations and weights (bf16 2, fp32 4)
};

struct LinkProfile {
  std::string kind;          // "nvlink", "pcie", "infiniband", "shared-memory", ...
  double bandwidth_gbs = 0;  // one device's send bandwidth in a collective (GB/s)
  double latency_us = 0;     // per message
};

struct HardwareProfile {
  std::string name;
  std::string source;  // "datasheet: …" or "calibrated: <command>, <date>"
  DeviceProfile device;
  int gpus_per_node = 8;
  LinkProfile intra_node;
  LinkProfile inter_node;
  // Seconds a generation spends outside the transformer steps, the text
  // encoders and the VAE (scheduler, host work, launching the pipeline).
  double pipeline_overhead_s = 0;
};

// INVALID_ARGUMENT names the missing or bad field; NOT_FOUND the file.
absl::StatusOr<HardwareProfile> ParseHardwareProfile(const std::string& json_text);
absl::StatusOr<HardwareProfile> ReadHardwareProfile(const std::string& path);
std::string HardwareProfileToJson(const HardwareProfile& profile);

}  // namespace ditserve::planner
