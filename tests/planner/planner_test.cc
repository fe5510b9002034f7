// The planner's closed forms (FLOPs, bytes, memory), its hardware profiles
// and its ranking.

#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "planner/plan.h"

namespace ditserve::planner {
namespace {

using parallel::ParallelConfig;

HardwareProfile TestHardware() {
  HardwareProfile h;
  h.name = "test";
  h.device = {100, 0, 50, 20, 1000, 80, 0, 2};
  h.gpus_per_node = 8;
  h.intra_node = {"nvlink", 100, 0};
  h.inter_node = {"net", 10, 0};
  return h;
}

ParallelConfig Config(int dp, bool cfg, int pp, int u, int r) {
  ParallelConfig c;
  c.data_parallel_degree = dp;
  c.use_cfg_parallel = cfg;
  c.pipefusion_parallel_degree = pp;
  c.ulysses_degree = u;
  c.ring_degree = r;
  return c;
}

TEST(ModelShape, FluxDevIsFluxOneDevsConfig) {
  auto m = PresetModel("flux-dev");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->hidden, 3072);
  EXPECT_EQ(m->heads, 24);
  EXPECT_EQ(m->num_blocks(), 57);
  EXPECT_EQ(m->pixels_per_token(), 16);
  EXPECT_EQ(m->image_tokens(1024, 1024), 4096);
  EXPECT_EQ(m->image_tokens(1024, 768), 64 * 48);
  EXPECT_EQ(m->text_tokens, 512);
  // 12·h² weights per token in every block, both streams: ~0.16 B per block
  // and 57 blocks give Flux's 11.9 B parameters to within the embeddings.
  double per_token = 0;
  for (const LayerGroup& g : m->layers) per_token += g.count * g.params_per_image_token;
  EXPECT_NEAR(per_token / m->transformer_params, 57 * 12.0 * 3072 * 3072 / 11.9e9, 1e-12);
  EXPECT_NEAR(per_token, 57 * 12.0 * 3072 * 3072, 1);
}

TEST(ModelShape, EveryPresetLoadsAndUnknownNamesAreListed) {
  for (const std::string& name : PresetNames()) {
    auto m = PresetModel(name);
    ASSERT_TRUE(m.ok()) << name;
    EXPECT_GT(m->num_blocks(), 0) << name;
    EXPECT_EQ(m->hidden, m->heads * m->head_dim) << name;
  }
  auto bad = PresetModel("flux-pro");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("flux-dev"), std::string::npos);
  EXPECT_NE(bad.status().message().find("flux-pro"), std::string::npos);
}

TEST(ModelShape, SanaHasLinearAttentionAndThirtyTwoPixelTokens) {
  auto m = PresetModel("sana-1600m");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->pixels_per_token(), 32);
  EXPECT_EQ(m->image_tokens(4096, 4096), 128 * 128);
  ASSERT_EQ(m->layers.size(), 1u);
  EXPECT_TRUE(m->layers[0].linear_attention);
  EXPECT_TRUE(m->layers[0].cross_attention);
  EXPECT_FALSE(m->layers[0].joint_text);
}

// Traffic per rank: xDiT's table with the exact (N−1)/N factors.
TEST(Traffic, UlyssesRingAndUspMatchTheClosedForms) {
  auto m = PresetModel("flux-dev");
  ASSERT_TRUE(m.ok());
  PlanRequest r;  // 1024², 28 steps
  const double p = 4096 + 512, hs = 3072, b = 2, L = 57, S = 28;
  for (int n : {2, 4, 8}) {
    auto u = TrafficOfRank(*m, Config(1, false, 1, n, 1), r, 2, 0);
    EXPECT_DOUBLE_EQ(u["ulysses"], S * L * 4.0 * (n - 1) / (n * n) * p * hs * b) << n;
    auto ring = TrafficOfRank(*m, Config(1, false, 1, 1, n), r, 2, 0);
    EXPECT_DOUBLE_EQ(ring["ring"], S * L * 2.0 * (n - 1) / n * p * hs * b) << n;
  }
  // USP u2 × r2: Ulysses over a quarter of the sequence, then Ring over
  // half the heads.
  auto usp = TrafficOfRank(*m, Config(1, false, 1, 2, 2), r, 2, 3);
  EXPECT_DOUBLE_EQ(usp["usp"], S * L * (4.0 * 0.5 * p / 4 * hs * b + 2.0 * 1 * p / 2 * hs / 2 * b));
  EXPECT_EQ(usp.count("ulysses"), 0u);
}

TEST(Traffic, PipeFusionCfgAndDataParallel) {
  auto m = PresetModel("flux-dev");
  ASSERT_TRUE(m.ok());
  PlanRequest r;
  r.cfg = true;
  r.images = 2;
  const double p = 4096 + 512, hs = 3072, b = 2, S = 28, out = 4096 * 64 * b;
  // pp2 with CFG serial: stage 0 sends both branches' activations every
  // step, stage 1 returns the guided output (one per image) every step but
  // the last.
  auto stage0 = TrafficOfRank(*m, Config(1, false, 2, 1, 1), r, 2, 0);
  auto stage1 = TrafficOfRank(*m, Config(1, false, 2, 1, 1), r, 2, 1);
  EXPECT_DOUBLE_EQ(stage0["pipefusion"], S * 4 * p * hs * b);  // 2 images × 2 branches
  EXPECT_DOUBLE_EQ(stage1["pipefusion"], (S - 1) * 2 * out);
  EXPECT_DOUBLE_EQ(stage1["data"], 2 * out);
  // cfg2: the branch's output every step.
  auto cfg = TrafficOfRank(*m, Config(1, true, 1, 1, 1), r, 2, 1);
  EXPECT_DOUBLE_EQ(cfg["cfg"], S * 2 * out);
  // dp2: one image's final latents from the second replica, nothing per step.
  auto dp = TrafficOfRank(*m, Config(2, false, 1, 1, 1), r, 2, 1);
  EXPECT_DOUBLE_EQ(dp["data"], out);
  EXPECT_EQ(dp.count("ulysses") + dp.count("ring") + dp.count("pipefusion") + dp.count("cfg"), 0u);
  // The text states go from rank 0 to every other rank, once.
  auto emb = TrafficOfRank(*m, Config(2, false, 1, 1, 1), r, 2, 0);
  EXPECT_DOUBLE_EQ(emb["embeddings"], 2 * 2 * (512.0 * 4096 + 768) * b);
}

// The decoder of FLUX's VAE at 1024², by hand: conv_in, the mid block, four
// up blocks of three resnets (the widths change at the first resnet of the
// 256- and 128-channel blocks: a 1×1 shortcut), three upsampler convs, conv_out.
TEST(Vae, DecodeFlopsOfFluxsVaeByHand) {
  VaeShape vae;  // 16 → (128, 256, 512, 512), 2 layers per block, ×8
  const auto conv = [](double k, double in, double out, double hw) { return 2 * k * k * in * out * hw; };
  const double s = 128 * 128;  // latent pixels
  double f = conv(1, 16, 16, s) + conv(3, 16, 512, s);
  f += 4 * conv(3, 512, 512, s) + 4 * s * s * 512 + 4 * conv(1, 512, 512, s);
  f += 6 * conv(3, 512, 512, s) + conv(3, 512, 512, 4 * s);                                     // up 0 (512) at 128²
  f += 6 * conv(3, 512, 512, 4 * s) + conv(3, 512, 512, 16 * s);                                // up 1 (512) at 256²
  f += conv(3, 512, 256, 16 * s) + conv(1, 512, 256, 16 * s) + 5 * conv(3, 256, 256, 16 * s);  // up 2 (256) at 512²
  f += conv(3, 256, 256, 64 * s);
  f += conv(3, 256, 128, 64 * s) + conv(1, 256, 128, 64 * s) + 5 * conv(3, 128, 128, 64 * s);  // up 3 (128) at 1024²
  f += conv(3, 128, 3, 64 * s);
  EXPECT_DOUBLE_EQ(VaeDecodeFlops(vae, 1024, 1024), f);
  // The largest map: the 256-channel input of the last block at 1024².
  EXPECT_DOUBLE_EQ(VaeLargestMapElements(vae, 1024, 1024), 256.0 * 1024 * 1024);
}

TEST(Predict, SerialTimeIsTheSumOfItsKernelsClosedForm) {
  // One joint block of 12h² per token, h = 64, 100 image + 28 text tokens;
  // GEMMs at 100 TFLOP/s (no row penalty), attention at 50, memory at
  // 1000 GB/s, no launch cost, no VAE work, no text encoders.
  ModelShape m;
  m.name = "closed-form";
  m.hidden = 64;
  m.heads = 4;
  m.head_dim = 16;
  m.patch_size = 1;
  m.vae = {4, {8}, 0, 1};
  m.output_width = 4;
  m.text_tokens = 28;
  LayerGroup g;
  g.name = "joint";
  g.count = 3;
  g.params_per_image_token = 12 * 64 * 64;
  g.params_per_text_token = 12 * 64 * 64;
  g.joint_text = true;
  g.elementwise_passes = 10;
  m.layers = {g};
  PlanRequest r;
  r.height = 10;
  r.width = 10;
  r.steps = 5;
  const HardwareProfile hw = TestHardware();
  const Prediction p = Predict(m, hw, Config(1, false, 1, 1, 1), r);
  ASSERT_TRUE(p.invalid.empty()) << p.invalid;
  const double tokens = 128, gemm = 2 * tokens * 12 * 64 * 64 / 100e12, attention = 4 * tokens * tokens * 64 / 50e12,
               memory = 10 * tokens * 64 * 2 / 1000e9;
  EXPECT_NEAR(p.step_seconds, 3 * (gemm + attention + memory), 1e-15);
  EXPECT_NEAR(p.denoise_seconds, 5 * p.step_seconds, 1e-15);
  // Ulysses 2 over a 100 GB/s link: half the compute and 4·(1/4)·p·hs·b per layer.
  const Prediction u = Predict(m, hw, Config(1, false, 1, 2, 1), r);
  const double comm = 4.0 * 0.25 * tokens * 64 * 2 / 100e9, copies = 8 * 64.0 * 64 * 2 / 1000e9;
  EXPECT_NEAR(u.step_seconds, 3 * (gemm + attention + memory) / 2 + 3 * (comm + copies), 1e-15);
  // PipeFusion 2 (2 patches, warmup 1): the stages hold 2 and 1 blocks, so
  // a steady step is the slower stage's two patches.
  const Prediction pp = Predict(m, hw, Config(1, false, 2, 1, 1), r);
  const double patch_gemm = gemm / 2, patch_attention = attention / 2, patch_memory = memory / 2;
  EXPECT_NEAR(pp.step_seconds, 2 * 2 * (patch_gemm + patch_attention + patch_memory), 1e-15);
  // Host-bound: 1000 µs per kernel makes the step the kernels' launches.
  HardwareProfile slow_host = hw;
  slow_host.device.kernel_launch_us = 1000;
  const Prediction host = Predict(m, slow_host, Config(1, false, 1, 1, 1), r);
  EXPECT_NEAR(host.step_seconds, (3 * g.kernels + 40) * 1e-3, 1e-12);
}

TEST(Predict, MemoryPerRank) {
  auto m = PresetModel("flux-dev");
  ASSERT_TRUE(m.ok());
  const HardwareProfile hw = TestHardware();
  PlanRequest r;
  const Prediction serial = Predict(*m, hw, Config(1, false, 1, 1, 1), r);
  const Prediction pp4 = Predict(*m, hw, Config(1, false, 4, 1, 1), r);
  EXPECT_DOUBLE_EQ(serial.weights_bytes, (11.9e9 + m->text_encoder_params) * 2);
  EXPECT_DOUBLE_EQ(pp4.weights_bytes, (11.9e9 / 4 + m->text_encoder_params) * 2);
  // PipeFusion's stale K/V: both, for every token, in each of its 15 blocks.
  EXPECT_DOUBLE_EQ(pp4.kv_buffer_bytes, 2 * 4608.0 * 3072 * 2 * 15);
  EXPECT_EQ(serial.kv_buffer_bytes, 0);
  EXPECT_GT(serial.activation_bytes, pp4.activation_bytes);
  EXPECT_DOUBLE_EQ(serial.peak_bytes, serial.weights_bytes + std::max(serial.activation_bytes, serial.vae_bytes));
}

TEST(Predict, SaysWhyAConfigurationCannotRun) {
  auto m = PresetModel("flux-dev");
  ASSERT_TRUE(m.ok());
  const HardwareProfile hw = TestHardware();
  PlanRequest r;
  EXPECT_NE(Predict(*m, hw, Config(1, false, 1, 16, 1), r).invalid.find("does not divide the 24 heads"),
            std::string::npos);
  EXPECT_NE(Predict(*m, hw, Config(1, true, 1, 1, 1), r).invalid.find("classifier-free"), std::string::npos);
  EXPECT_NE(Predict(*m, hw, Config(2, false, 1, 1, 1), r).invalid.find("exceeds the 1 image"), std::string::npos);
  EXPECT_NE(Predict(*m, hw, Config(1, false, 64, 1, 1), r).invalid.find("57 blocks"), std::string::npos);
  r.height = 64;  // 4 token rows
  EXPECT_NE(Predict(*m, hw, Config(1, false, 1, 1, 8), r).invalid.find("4 token rows"), std::string::npos);
}

TEST(Plan, RanksEveryConfigurationAndHonoursTheMemoryCap) {
  auto m = PresetModel("sd3-medium");
  ASSERT_TRUE(m.ok());
  HardwareProfile hw = TestHardware();
  PlanRequest r;
  r.cfg = true;
  auto plan = Plan(*m, hw, r, 8, 0);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->predictions.size(), parallel::EnumerateParallelConfigs(8).size());
  ASSERT_GE(plan->best, 0);
  for (size_t i = 1; i < plan->predictions.size(); ++i) {
    const Prediction &a = plan->predictions[i - 1], &b = plan->predictions[i];
    if (a.invalid.empty() && b.invalid.empty()) {
      EXPECT_LE(a.latency_seconds, b.latency_seconds);
    }
    if (!a.invalid.empty()) {
      EXPECT_FALSE(b.invalid.empty()) << "runnable ones come first";
    }
  }
  EXPECT_TRUE(plan->predictions[plan->best].config.use_cfg_parallel) << "CFG parallel halves the work for free";
  // A cap under the serial weights leaves only PipeFusion (weights / pp).
  const double serial_weights = (m->transformer_params + m->text_encoder_params) * 2 / (1ull << 30);
  auto capped = Plan(*m, hw, r, 8, serial_weights - 0.5);
  ASSERT_TRUE(capped.ok());
  ASSERT_GE(capped->best, 0);
  EXPECT_GT(capped->predictions[capped->best].config.pipefusion_parallel_degree, 1);
  auto none = Plan(*m, hw, r, 8, 0.001);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->best, -1);
  EXPECT_EQ(ExplainChoice(*none), "no configuration fits under the memory cap");
  EXPECT_EQ(Plan(*m, hw, r, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  r.nodes = 3;
  EXPECT_NE(Plan(*m, hw, r, 8, 0).status().message().find("--nodes"), std::string::npos);
}

TEST(Plan, GroupsThatSpanNodesUseTheSlowerLink) {
  auto m = PresetModel("flux-dev");
  ASSERT_TRUE(m.ok());
  HardwareProfile hw = TestHardware();
  PlanRequest r;
  const Prediction one_node = Predict(*m, hw, Config(1, false, 1, 4, 1), r);
  r.nodes = 2;  // 2 GPUs per node: the Ulysses group of 4 crosses nodes
  const Prediction two_nodes = Predict(*m, hw, Config(1, false, 1, 4, 1), r);
  EXPECT_GT(two_nodes.step_seconds, one_node.step_seconds);
  // dp2 × u2 on two nodes: each replica's Ulysses pair stays in its node.
  PlanRequest two_images = r;
  two_images.images = 2;
  PlanRequest two_images_one_node = two_images;
  two_images_one_node.nodes = 1;
  EXPECT_DOUBLE_EQ(Predict(*m, hw, Config(2, false, 1, 2, 1), two_images).step_seconds,
                   Predict(*m, hw, Config(2, false, 1, 2, 1), two_images_one_node).step_seconds);
}

TEST(HardwareProfile, ParsesAndNamesBadFields) {
  const HardwareProfile hw = TestHardware();
  auto back = ParseHardwareProfile(HardwareProfileToJson(hw));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->device.gemm_tflops, 100);
  EXPECT_EQ(back->intra_node.kind, "nvlink");
  EXPECT_EQ(back->inter_node.bandwidth_gbs, 10);
  EXPECT_EQ(ParseHardwareProfile("[]").status().code(), absl::StatusCode::kInvalidArgument);
  std::string text = HardwareProfileToJson(hw);
  const std::string negative = std::string(text).replace(text.find("\"gemm_tflops\": 100.0"), 20, "\"gemm_tflops\": -1");
  auto bad = ParseHardwareProfile(negative);
  EXPECT_NE(bad.status().message().find("device.gemm_tflops must be > 0"), std::string::npos) << bad.status();
  auto missing = ReadHardwareProfile("/nonexistent/profile.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(HardwareProfile, EveryShippedProfileParses) {
  const char* source = std::getenv("DITSERVE_SOURCE_DIR");
  const std::filesystem::path root = source ? source : ".";
  int n = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root / "hardware")) {
    if (entry.path().extension() != ".json") continue;
    auto p = ReadHardwareProfile(entry.path().string());
    EXPECT_TRUE(p.ok()) << entry.path() << ": " << p.status();
    if (p.ok()) {
      EXPECT_FALSE(p->source.empty()) << entry.path() << " must say where its numbers come from";
    }
    ++n;
  }
  EXPECT_GE(n, 6);
}

}  // namespace
}  // namespace ditserve::planner
