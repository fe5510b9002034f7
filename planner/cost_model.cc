#include "planner/cost_model.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/generation_plan.h"

namespace ditserve::planner {
namespace {

using parallel::ParallelConfig;

constexpr int kMergeKernels = 10;      // one Ring merge of partial outputs with their LSEs
constexpr int kStepKernels = 40;       // embeddings, the final layer, the scheduler step
constexpr int kTextEncoderKernels = 600;  // T5-XXL and CLIP layers, eager

int Patches(const ParallelConfig& c, const PlanRequest& r) {
  return c.pipefusion_parallel_degree == 1 ? 1
                                            : (r.num_pipeline_patch > 0 ? r.num_pipeline_patch
                                                                        : c.pipefusion_parallel_degree);
}

int TextTokens(const ModelShape& m, const PlanRequest& r) { return r.text_tokens > 0 ? r.text_tokens : m.text_tokens; }

// Tokens of the self-attention's sequence (joint: image and text).
bool JointText(const ModelShape& m) {
  for (const LayerGroup& g : m.layers) {
    if (g.joint_text) return true;
  }
  return false;
}

double Launch(const DeviceProfile& d, double kernels) { return kernels * d.kernel_launch_us * 1e-6; }

double GemmSeconds(const DeviceProfile& d, double flops, double rows) {
  const double efficiency = rows / (rows + d.gemm_half_rows);
  return flops / (d.gemm_tflops * 1e12 * std::max(efficiency, 1e-9));
}
double AttentionSeconds(const DeviceProfile& d, double flops) { return flops / (d.attention_tflops * 1e12); }
double MemorySeconds(const DeviceProfile& d, double bytes) { return bytes / (d.memory_bandwidth_gbs * 1e9); }

// Work queued on a device: its seconds there, and the kernels the host
// launches for it. The host runs ahead of the device, so a run of work
// takes the longer of the two (eager execution is bound by the host when
// the kernels are small).
struct Work {
  double device = 0;
  double kernels = 0;
  Work& operator+=(const Work& o) {
    device += o.device;
    kernels += o.kernels;
    return *this;
  }
  Work operator*(double n) const { return {device * n, kernels * n}; }
  double Seconds(const DeviceProfile& d) const { return std::max(device, Launch(d, kernels)); }
};
double LinkSeconds(const LinkProfile& l, double bytes, double messages) {
  return bytes / (l.bandwidth_gbs * 1e9) + messages * l.latency_us * 1e-6;
}

// The link a method's group crosses: the inter-node one when its ranks
// (stride = the product of the inner degrees) span more than one node.
const LinkProfile& GroupLink(const HardwareProfile& hw, const PlanRequest& r, int world, long long stride,
                             int degree) {
  const int per_node = r.nodes > 1 ? std::max(1, world / r.nodes) : hw.gpus_per_node;
  return stride * degree > per_node ? hw.inter_node : hw.intra_node;
}

struct Links {
  const LinkProfile* ulysses;
  const LinkProfile* ring;
  const LinkProfile* pipefusion;
  const LinkProfile* cfg;
};

Links LinksOf(const HardwareProfile& hw, const ParallelConfig& c, const PlanRequest& r) {
  const int world = static_cast<int>(c.world_size());
  const long long u = c.ulysses_degree, ur = u * c.ring_degree, urp = ur * c.pipefusion_parallel_degree;
  return {&GroupLink(hw, r, world, 1, c.ulysses_degree), &GroupLink(hw, r, world, u, c.ring_degree),
          &GroupLink(hw, r, world, ur, c.pipefusion_parallel_degree), &GroupLink(hw, r, world, urp, c.cfg_degree())};
}

// What one rank runs of one block on one chunk of the sequence.
struct Chunk {
  double batch = 1;         // rows of the batch (images × CFG branches on this rank)
  double image_tokens = 0;  // this rank's share of the chunk's image tokens
  double text_tokens = 0;   // of the text tokens (joint models); all of them for cross-attention
  double kv_tokens = 0;     // keys every query attends (the whole self-attention sequence)
  double all_text = 0;      // the text sequence (cross-attention's keys)
  double full_tokens = 0;   // the chunk's self-attention tokens over the whole SP group
};

Work BlockWork(const ModelShape& m, const LayerGroup& g, const DeviceProfile& d, const ParallelConfig& c,
               const Links& links, const Chunk& k) {
  const double hs = m.hidden, b = d.element_bytes;
  const int U = c.ulysses_degree, R = c.ring_degree;
  const double query_tokens = k.image_tokens + (g.joint_text ? k.text_tokens : 0);
  const double text_gemm_tokens = g.joint_text ? k.text_tokens : (g.cross_attention ? k.all_text : 0);
  const double rows = k.batch * query_tokens;
  const double gemm_flops =
      2 * k.batch * (k.image_tokens * g.params_per_image_token + text_gemm_tokens * g.params_per_text_token);
  Work w{GemmSeconds(d, gemm_flops, rows), static_cast<double>(g.kernels)};
  // Attention: this rank's queries (Ulysses: all queries, hs/U heads — the
  // same product) against every key.
  double attention = 0;
  if (g.self_attention) {
    const double flops = g.linear_attention ? 4 * k.batch * query_tokens * m.head_dim * hs
                                            : 4 * k.batch * query_tokens * k.kv_tokens * hs;
    attention = AttentionSeconds(d, flops);
  }
  if (g.cross_attention) attention += AttentionSeconds(d, 4 * k.batch * k.image_tokens * k.all_text * hs);
  w.device += attention + MemorySeconds(d, g.elementwise_passes * rows * hs * b);
  if (!g.self_attention) return w;
  const double local = k.full_tokens / (U * R);  // this rank's self-attention tokens
  if (U > 1) {
    // Four all-to-alls and the layout copies around them.
    const double bytes = 4.0 * (U - 1) / U * k.batch * local * hs * b;
    w.device += LinkSeconds(*links.ulysses, bytes, 4) + MemorySeconds(d, 8 * k.batch * local * hs * b);
    w.kernels += 12;
  }
  if (R > 1) {
    // R−1 more attention calls, K/V passed on behind them, and the merges.
    const double block = k.batch * k.full_tokens / R * hs / U;  // one ring block of K (or V)
    const double transfer = LinkSeconds(*links.ring, 2.0 * (R - 1) * block * b, R - 1);
    w.device += std::max(0.0, transfer - attention) + (R - 1) * MemorySeconds(d, 6 * block * 4);
    w.kernels += (R - 1) * (kMergeKernels + 3);
  }
  return w;
}

// Calls f(group, n) for each group with n > 0 of its blocks inside
// [first, end) (blocks in running order).
template <typename F>
void ForBlocksIn(const ModelShape& m, int first, int end, F&& f) {
  int index = 0;
  for (const LayerGroup& g : m.layers) {
    const int lo = std::max(first, index), hi = std::min(end, index + g.count);
    if (hi > lo) f(g, hi - lo);
    index += g.count;
  }
}

// One pass of blocks [first, end) over a chunk.
Work BlocksWork(const ModelShape& m, const DeviceProfile& d, const ParallelConfig& c, const Links& links,
                const Chunk& k, int first, int end) {
  Work work;
  ForBlocksIn(m, first, end, [&](const LayerGroup& g, int n) { work += BlockWork(m, g, d, c, links, k) * n; });
  return work;
}

// The request's sizes as both the traffic and the timing see them.
struct Sizes {
  double image_tokens = 0;  // I
  double text_tokens = 0;   // T
  bool joint = false;       // text in the self-attention
  double attention_tokens = 0;  // p: I + T (joint) or I
  double images = 0;        // per data-parallel replica
  double branches = 1;      // CFG's two passes, or one
  double batch = 0;         // rows on one rank: images × branches unless CFG is split
  double out_bytes = 0;     // the transformer's output for one image: I·c·b
};

Sizes SizesOf(const ModelShape& m, const ParallelConfig& c, const PlanRequest& r, int element_bytes) {
  Sizes z;
  z.image_tokens = static_cast<double>(m.image_tokens(r.height, r.width));
  z.text_tokens = TextTokens(m, r);
  z.joint = JointText(m);
  z.attention_tokens = z.joint ? z.image_tokens + z.text_tokens : z.image_tokens;
  z.images = std::ceil(static_cast<double>(r.images) / c.data_parallel_degree);
  z.branches = r.cfg ? 2 : 1;
  z.batch = z.images * (c.use_cfg_parallel ? 1 : z.branches);
  z.out_bytes = z.image_tokens * m.output_width * element_bytes;
  return z;
}


// Conv FLOPs of a k×k convolution producing `out` channels over h × w.
double ConvFlops(double in, double out, double h, double w, double k) { return 2 * k * k * in * out * h * w; }

}  // namespace

double VaeDecodeFlops(const VaeShape& vae, int height, int width) {
  const std::vector<int>& ch = vae.block_out_channels;
  double h = static_cast<double>(height) / vae.downscale, w = static_cast<double>(width) / vae.downscale;
  const double top = ch.back();
  double flops = ConvFlops(vae.latent_channels, vae.latent_channels, h, w, 1);  // post_quant_conv (when present)
  flops += ConvFlops(vae.latent_channels, top, h, w, 3);
  flops += 2 * 2 * ConvFlops(top, top, h, w, 3);                        // mid block: two resnets
  flops += 4 * h * w * h * w * top + 4 * ConvFlops(top, top, h, w, 1);  // its attention
  double in = top;
  for (size_t i = 0; i < ch.size(); ++i) {
    const double out = ch[ch.size() - 1 - i];
    for (int r = 0; r <= vae.layers_per_block; ++r) {
      flops += ConvFlops(in, out, h, w, 3) + ConvFlops(out, out, h, w, 3);
      if (in != out) flops += ConvFlops(in, out, h, w, 1);
      in = out;
    }
    if (i + 1 < ch.size()) {
      h *= 2;
      w *= 2;
      flops += ConvFlops(out, out, h, w, 3);  // the upsampler's conv
    }
  }
  return flops + ConvFlops(in, 3, h, w, 3);
}

double VaeLargestMapElements(const VaeShape& vae, int height, int width) {
  // The first up block at full resolution receives the previous block's
  // channels: the widest map at the full size is max(ch[0], ch[1]) there.
  const std::vector<int>& ch = vae.block_out_channels;
  double largest = 0, h = static_cast<double>(height) / vae.downscale, w = static_cast<double>(width) / vae.downscale;
  for (size_t i = 0; i < ch.size(); ++i) {
    const double out = ch[ch.size() - 1 - i];
    const double previous = i == 0 ? ch.back() : ch[ch.size() - i];
    largest = std::max(largest, std::max(out, previous) * h * w);
    if (i + 1 < ch.size()) {
      h *= 2;
      w *= 2;
      largest = std::max(largest, out * h * w);
    }
  }
  return largest;
}

std::map<std::string, double> TrafficOfRank(const ModelShape& m, const ParallelConfig& c, const PlanRequest& r,
                                            int element_bytes, int rank) {
  std::map<std::string, double> bytes;
  const Sizes z = SizesOf(m, c, r, element_bytes);
  const double b = element_bytes, hs = m.hidden, I = z.image_tokens, T = z.text_tokens, p = z.attention_tokens;
  const double images = z.images, branches = z.branches, batch = z.batch, out = z.out_bytes;
  const bool joint = z.joint;
  const int U = c.ulysses_degree, R = c.ring_degree, P = c.pipefusion_parallel_degree;
  const int world = static_cast<int>(c.world_size());
  const int replicas = c.data_parallel_degree;
  // Rank 0 sends every prompt's text states (sequence and pooled, and for
  // a cross-attention model the text's padding mask) to the other ranks once.
  if (world > 1) {
    const double per_row = T * m.text_width + m.pooled_width + (joint ? 0 : T);
    bytes["embeddings"] = rank == 0 ? r.images * branches * per_row * b * (world - 1) : 0;
  }
  const int pp_rank = (rank / (U * R)) % P;
  // The engine's split: even, earlier stages taking the remainder.
  const core::BlockRange stage = core::StageBlocks({}, m.num_blocks(), P, pp_rank);
  int held_layers = 0;  // this rank's blocks with a self-attention
  ForBlocksIn(m, stage.first, stage.end, [&](const LayerGroup& g, int n) { held_layers += g.self_attention ? n : 0; });
  const double steps = r.steps;
  const int N = U * R;
  const int cfg_rank = (rank / (N * P)) % c.cfg_degree();
  const bool last_stage = pp_rank == P - 1;
  const double joint_text = joint ? T : 0;
  if (P == 1) {
    if (N > 1) {
      const double local = p / N;
      const double per_layer = 4.0 * (U - 1) / U * local * hs * b + 2.0 * (R - 1) * (p / R) * (hs / U) * b;
      bytes[U > 1 && R > 1 ? "usp" : (U > 1 ? "ulysses" : "ring")] = steps * held_layers * batch * per_layer;
      bytes["sequence"] = images * out;  // the final latents, summed over the SP group
    }
    if (c.use_cfg_parallel) bytes["cfg"] = steps * images * out / N;
  } else {
    // Patch by patch: the image tokens are split over the SP group; the
    // text stream (the joint text, or a cross-attention model's caption
    // projection) travels whole with patch 0. Long skips (HunyuanDiT) that
    // cross this stage's end go with every patch.
    const double skips = last_stage ? 0 : m.SkipsBefore(stage.end);
    // The text stream goes with patch 0: every step for MMDiT (the blocks
    // update it), the first step only for a cross-attention model (every
    // block keeps its text K/V).
    const double context = m.context_width > 0 ? m.context_width : hs;
    const double text_steps = joint ? steps : 1;
    bytes["pipefusion"] = last_stage ? (steps - 1) * images * out / N
                                     : batch * (text_steps * T * context + steps * (1 + skips) * (I / N) * hs) * b;
    if (U > 1) {
      bytes["pipefusion_ulysses"] = steps * held_layers * batch *
                                    (4.0 * (U - 1) / U * (I / N) * hs * b + (U - 1) * joint_text * (hs / U) * b);
    }
    if (R > 1) bytes["pipefusion_ring"] = steps * held_layers * batch * 2.0 * (R - 1) * (I / N) * hs * b;
    if (N > 1 && last_stage) {
      // The last stage assembles the latents over its SP group when the
      // patch layout changes after warmup, and at the end; with a multistep
      // solver its float32 history too at the change.
      const bool relayout = r.warmup_steps > 0 && r.steps > r.warmup_steps;
      int history = 0;
      if (m.scheduler) {
        auto schedule = core::MakeDiscreteSchedule(*m.scheduler, r.steps);
        if (schedule.ok()) history = schedule->history_depth();
      }
      bytes["sequence"] = images * out * (relayout ? 2 : 1) +
                          (relayout ? images * z.image_tokens * m.output_width * 4.0 * history : 0);
    }
    bytes["data"] = last_stage && rank % N == 0 && cfg_rank == 0 ? images * out : 0;
    if (c.use_cfg_parallel && last_stage) bytes["cfg"] = steps * images * out / N;
  }
  if (replicas > 1) {
    const bool replica_leader = rank % (world / replicas) == 0;
    bytes["data"] += rank >= world / replicas && replica_leader ? images * out : 0;
  }
  return bytes;
}

Prediction Predict(const ModelShape& m, const HardwareProfile& hw, const ParallelConfig& c, const PlanRequest& r) {
  Prediction pred;
  pred.config = c;
  const DeviceProfile& d = hw.device;
  const int U = c.ulysses_degree, R = c.ring_degree, P = c.pipefusion_parallel_degree, N = U * R;
  const int M = Patches(c, r);
  const int rows = r.height / m.pixels_per_token(), cols = r.width / m.pixels_per_token();
  if (m.heads % U != 0) {
    pred.invalid = absl::StrCat("ulysses ", U, " does not divide the ", m.heads, " heads");
  } else if (P > m.num_blocks()) {
    pred.invalid = absl::StrCat("pipefusion ", P, " exceeds the ", m.num_blocks(), " blocks");
  } else if (c.use_cfg_parallel && !r.cfg) {
    pred.invalid = "cfg parallel needs classifier-free guidance";
  } else if (c.data_parallel_degree > r.images) {
    pred.invalid = absl::StrCat("data parallel ", c.data_parallel_degree, " exceeds the ", r.images, " image(s)");
  } else if (rows < static_cast<long long>(M) * N || cols < 1) {
    pred.invalid = absl::StrCat(rows, " token rows cannot give ", M, " patch(es) × ", N, " SP ranks a row each");
  }
  if (!pred.invalid.empty()) return pred;
  const Sizes z = SizesOf(m, c, r, d.element_bytes);
  const double b = d.element_bytes, hs = m.hidden, I = z.image_tokens, T = z.text_tokens, p = z.attention_tokens;
  const double images = z.images, branches = z.branches, batch = z.batch, out_bytes = z.out_bytes;
  const bool joint = z.joint;
  const Links links = LinksOf(hw, c, r);

  // A step's fixed work and CFG's gather.
  const Work step_fixed{c.use_cfg_parallel ? LinkSeconds(*links.cfg, batch * out_bytes, 1) : 0, kStepKernels};
  const int blocks = m.num_blocks();
  if (P == 1) {
    Chunk k{batch, I / N, joint ? T / N : T, p, T, p};
    Work step = BlocksWork(m, d, c, links, k, 0, blocks);
    step += step_fixed;
    pred.step_seconds = step.Seconds(d);
    pred.denoise_seconds = r.steps * pred.step_seconds;
  } else {
    // Patch chunks (patch tokens split over the SP group) and the whole
    // image as one chunk (warmup). Stages run on their own devices and
    // hosts: a steady step takes the slowest stage's M patches.
    Chunk patch{batch, I / (M * N), joint ? T / (M * N) : T, p, T, p / M};
    Chunk whole{batch, I / N, joint ? T / N : T, p, T, p};
    double slowest = 0, warm = 0, fill = 0;
    for (int s = 0; s < P; ++s) {
      const auto [first, end] = core::StageBlocks({}, blocks, P, s);
      // The patch's hidden states, and the long skips crossing the boundary.
      const double patch_send = batch * (p / M + m.SkipsBefore(end) * I / M) * hs * b / N;
      const double t_patch = BlocksWork(m, d, c, links, patch, first, end).Seconds(d);
      const double send = s + 1 < P ? LinkSeconds(*links.pipefusion, patch_send, 1) : 0;
      slowest = std::max(slowest, t_patch + std::max(0.0, send - t_patch));
      warm += BlocksWork(m, d, c, links, whole, first, end).Seconds(d) +
              (s + 1 < P ? LinkSeconds(*links.pipefusion, patch_send * M, 1) : 0);
      if (s + 1 < P) fill += t_patch + send;
    }
    const double fixed = step_fixed.Seconds(d);
    pred.step_seconds = M * slowest + fixed;
    const int warmup = std::min(r.warmup_steps, r.steps);
    pred.denoise_seconds =
        warmup * (warm + fixed) + (r.steps - warmup) * pred.step_seconds + (r.steps > warmup ? fill : 0);
  }
  // Text encoding: every prompt of the replica through the encoders.
  const double text_rows = images * branches * T;
  pred.text_seconds = Work{GemmSeconds(d, 2 * m.text_encoder_params * text_rows, text_rows), kTextEncoderKernels}.Seconds(d);
  // VAE decode (on one rank, or split over the gang).
  const double vae_split = r.parallel_vae ? static_cast<double>(c.world_size()) : 1;
  const double largest = VaeLargestMapElements(m.vae, r.height, r.width);
  pred.vae_seconds = images *
                     Work{VaeDecodeFlops(m.vae, r.height, r.width) / (d.conv_tflops * 1e12) + MemorySeconds(d, 40 * largest * b),
                          200}
                         .Seconds(d) /
                     vae_split;
  pred.latency_seconds = pred.text_seconds + pred.denoise_seconds + pred.vae_seconds + hw.pipeline_overhead_s;

  pred.bytes_sent = TrafficOfRank(m, c, r, d.element_bytes, 0);
  for (const auto& [method, bytes] : pred.bytes_sent) {
    if (method == "embeddings" || method == "sequence" || method == "data") continue;  // once per generation
    pred.bytes_per_step[method] = bytes / r.steps;
  }
  // Memory per rank.
  pred.weights_bytes = (m.transformer_params / P + m.text_encoder_params) * b;
  const double local_tokens = p / (N * (P > 1 ? M : 1));
  pred.activation_bytes = 12 * batch * local_tokens * hs * b + batch * p / N * hs * b * 2;
  if (m.long_skips) {
    // The skip stack at its deepest, each entry the hidden states of the
    // tokens a call runs (a PipeFusion stage runs one patch at a time).
    int deepest = 0;
    for (int block = 0; block <= blocks; ++block) deepest = std::max(deepest, m.SkipsBefore(block));
    pred.activation_bytes += deepest * batch * (I / (N * (P > 1 ? M : 1))) * hs * b;
  }
  if (P > 1) pred.kv_buffer_bytes = 2 * batch * p * hs * b * std::ceil(static_cast<double>(blocks) / P) / N;
  pred.vae_bytes = 3 * largest * b / vae_split;
  pred.peak_bytes = pred.weights_bytes + std::max(pred.activation_bytes + pred.kv_buffer_bytes, pred.vae_bytes);
  return pred;
}

}  // namespace ditserve::planner
