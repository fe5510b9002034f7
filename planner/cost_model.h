#pragma once

// The planner's cost model: a generation's latency, traffic and memory per
// rank under one ParallelConfig, predicted from the model's shape and a
// hardware profile. Torch-free; pure functions of plain values.
//
// Time. Every block is three kinds of kernel — GEMMs (FLOPs at the
// device's achieved rate, lower for few rows), attention (FLOPs at the
// attention kernel's rate) and element-wise passes (bytes at the memory
// bandwidth) — and each kind costs at least its kernel launches (eager
// execution: a kernel that has less work than a launch waits on the host).
// Communication per method, per rank:
//   Ulysses  4·(U−1)/U · (p/(U·R))·hs·b per attention layer: four
//            all-to-alls, not overlapped.
//   Ring     2·(R−1) · (p/R)·(hs/U)·b per layer: K/V passed R−1 times,
//            overlapped with the layer's attention (only what exceeds it
//            shows), plus R−1 merges of the partial outputs (fp32).
//   PipeFusion  (T + I/N)·hs·b per step from every stage but the last (each
//            patch's activations, the text with patch 0 on every SP rank;
//            overlapped with the next patch's compute); the last stage
//            returns the image's output (I·c·b/N) every step but the last.
//            With SP inside a stage, per layer: Ulysses 4·(U−1)/U·(I/N)·hs·b
//            plus the text's heads (U−1)·T·hs/U·b, Ring 2·(R−1)·(I/N)·hs·b.
//            Warmup steps run the stages one after another; after them a
//            step costs the slowest stage's M patches, plus one fill.
//   CFG      the branch's output, I·c·b per step, gathered (not overlapped).
//   Data     the final latents, once.
// (p: tokens in the self-attention, hs: hidden, b: element bytes, I: image
// tokens, c: output channels per token, M: patches.) These are xDiT's
// communication table with the exact (N−1)/N factors, and the counts the
// engine's --comm_stats reports (tested against a CPU gang).

#include <map>
#include <string>

#include "parallel/parallel_config.h"
#include "planner/hardware_profile.h"
#include "planner/model_shape.h"

namespace ditserve::planner {

struct PlanRequest {
  int height = 1024;
  int width = 1024;
  int steps = 28;
  int images = 1;
  bool cfg = false;  // classifier-free guidance: two branches per step
  int text_tokens = 0;  // 0: the model's default
  int warmup_steps = 1;        // PipeFusion's
  int num_pipeline_patch = 0;  // 0: the PipeFusion degree
  bool parallel_vae = false;   // the decode split over every rank
  int nodes = 1;               // the GPUs are spread evenly over this many nodes
};

struct Prediction {
  parallel::ParallelConfig config;
  std::string invalid;  // why the configuration cannot run; empty when it can
  double step_seconds = 0;     // one denoising step after warmup
  double denoise_seconds = 0;  // every step (PipeFusion: warmup and fill too)
  double text_seconds = 0;
  double vae_seconds = 0;
  double latency_seconds = 0;  // text + denoise + VAE + the profile's overhead
  // Bytes rank 0 sends per generation, by method, named as --comm_stats
  // names them ("ulysses", "ring", "usp" when both, "pipefusion",
  // "pipefusion_ulysses", "pipefusion_ring", "cfg", "sequence" and "data"
  // for the final latents, "embeddings" for the text states).
  std::map<std::string, double> bytes_sent;
  std::map<std::string, double> bytes_per_step;  // the per-step methods' share
  double weights_bytes = 0;     // per rank: transformer / PipeFusion degree + text encoders
  double activation_bytes = 0;  // the transformer's live activations
  double kv_buffer_bytes = 0;   // PipeFusion's stale K/V
  double vae_bytes = 0;         // the decoder's live maps
  double peak_bytes = 0;        // weights + the larger of (activations + K/V) and the VAE
};

// Bytes rank `rank` of the gang sends per generation, by method, exactly as
// the engine counts them (--comm_stats).
std::map<std::string, double> TrafficOfRank(const ModelShape& model, const parallel::ParallelConfig& config,
                                            const PlanRequest& request, int element_bytes, int rank);

// The decoder's FLOPs for one image of `height` × `width` (its 3×3 and 1×1
// convolutions and the mid-block attention), and its largest feature map in
// elements.
double VaeDecodeFlops(const VaeShape& vae, int height, int width);
double VaeLargestMapElements(const VaeShape& vae, int height, int width);

// The prediction for one configuration (`invalid` says why it cannot run:
// heads not divisible by Ulysses, more stages than blocks, CFG parallel
// without CFG, more replicas than images, too few token rows).
Prediction Predict(const ModelShape& model, const HardwareProfile& hardware, const parallel::ParallelConfig& config,
                   const PlanRequest& request);

}  // namespace ditserve::planner
