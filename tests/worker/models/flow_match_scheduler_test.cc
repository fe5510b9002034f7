#include "worker/models/flux/flow_match_scheduler.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::flux {
namespace {


FlowMatchSchedulerConfig Dev() {
  FlowMatchSchedulerConfig c;
  c.shift = 3.0;
  c.use_dynamic_shifting = true;
  return c;
}

TEST(FlowMatchScheduler, SigmasClosedForm) {
  // Static shift 1: plain linspace(1, 1/n, n) and a final 0.
  const auto plain = FluxSigmas(4, 1024, FlowMatchSchedulerConfig{});
  ASSERT_EQ(plain.size(), 5u);
  EXPECT_FLOAT_EQ(plain[0], 1.0f);
  EXPECT_FLOAT_EQ(plain[1], 0.75f);
  EXPECT_FLOAT_EQ(plain[3], 0.25f);
  EXPECT_FLOAT_EQ(plain[4], 0.0f);
  // Dynamic: mu = 0.5 + (1.15-0.5)·(seq-256)/3840; sigma = e^mu/(e^mu + 1/s - 1).
  const auto dyn = FluxSigmas(4, 1024, Dev());
  const double mu = 0.5 + 0.65 * (1024 - 256) / 3840.0;
  EXPECT_NEAR(FluxMu(1024, Dev()), mu, 1e-12);
  EXPECT_NEAR(dyn[1], std::exp(mu) / (std::exp(mu) + 1 / 0.75 - 1), 1e-6);
  EXPECT_FLOAT_EQ(dyn[0], 1.0f);
  EXPECT_TRUE(FluxSigmas(0, 1024, Dev()).empty());
}

TEST(FlowMatchScheduler, MatchesDiffusers) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/sched_", getpid(), ".safetensors");
  const absl::Status reference = testing::RunPythonReference(
      testing::DirectoryOf(__FILE__) + "/scheduler_reference.py", path, path + ".log");
  ASSERT_TRUE(reference.ok()) << reference;
  auto ref = weights::SafetensorsCheckpoint::Open(path);
  ASSERT_TRUE(ref.ok()) << ref.status();
  FlowMatchSchedulerConfig schnell, static3;
  static3.shift = 3.0;
  int compared = 0;
  for (const auto& [name, config] : {std::pair{"dev", Dev()}, {"schnell", schnell}, {"static3", static3}}) {
    for (int steps : {1, 4, 28}) {
      for (int seq : {64, 1024, 4096, 9000}) {
        const at::Tensor want = *ref->Get(absl::StrCat("sigmas.", name, ".", steps, ".", seq));
        const auto got = FluxSigmas(steps, seq, config);
        ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel());
        for (size_t i = 0; i < got.size(); ++i) {
          EXPECT_NEAR(got[i], want[i].item<float>(), 2e-7) << name << " " << steps << " " << seq << " " << i;
        }
        ++compared;
      }
    }
  }
  EXPECT_EQ(compared, 36);
  // The scheduler's own schedule (StableDiffusion3Pipeline): sigmas, and
  // the model's timesteps sigma·1000 in float32 as the transformer gets them.
  for (const auto& [name, config] : {std::pair{"dev", Dev()}, {"schnell", schnell}, {"static3", static3}}) {
    for (int steps : {1, 2, 4, 28, 50}) {
      for (int seq : {64, 1024, 4096}) {
        const std::string key = absl::StrCat(name, ".", steps, ".", seq);
        const at::Tensor want = *ref->Get("default." + key);
        const at::Tensor want_t = *ref->Get("default_timesteps." + key);
        const auto got = DefaultScheduleSigmas(steps, seq, config);
        ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel()) << key;
        for (size_t i = 0; i < got.size(); ++i) {
          EXPECT_EQ(got[i], want[i].item<float>()) << key << " " << i;
          if (i + 1 < got.size()) {
            EXPECT_EQ(got[i] * 1000.0f, want_t[i].item<float>()) << key << " " << i;
          }
        }
      }
    }
  }
  // Closed form: static shift 3 from sigma_max 1 to sigma_min = 3e-3/(1 + 2e-3)
  // (the shifted 1/1000), each shifted again.
  const auto two = DefaultScheduleSigmas(2, 1024, static3);
  const double lo = 3 * 1e-3 / (1 + 2 * 1e-3);
  EXPECT_FLOAT_EQ(two[0], 1.0f);
  EXPECT_NEAR(two[1], 3 * lo / (1 + 2 * lo), 1e-7);
  EXPECT_EQ(two[2], 0.0f);
  const at::Tensor lat = *ref->Get("latents");
  EXPECT_TRUE(at::equal(PackLatents(lat), *ref->Get("packed")));
  EXPECT_TRUE(at::equal(UnpackLatents(*ref->Get("packed"), 6, 8), *ref->Get("unpacked")));
  EXPECT_TRUE(at::equal(LatentImageIds(6, 8), *ref->Get("ids")));
  const at::Tensor sig = *ref->Get("step.sigmas");
  const at::Tensor stepped = FlowMatchEulerStep(*ref->Get("step.x"), *ref->Get("step.v"),
                                                sig[0].item<float>(), sig[1].item<float>());
  EXPECT_TRUE(at::allclose(stepped, *ref->Get("step.out"), 0, 1e-6));
}

TEST(FlowMatchScheduler, ConfigErrors) {
  EXPECT_EQ(ParseFlowMatchSchedulerConfig(R"({"use_karras_sigmas": true})").status().message(),
            "scheduler config: use_karras_sigmas is not supported");
  EXPECT_EQ(ParseFlowMatchSchedulerConfig(R"({"shift": -1})").status().code(), absl::StatusCode::kInvalidArgument);
  auto dev = ParseFlowMatchSchedulerConfig(
      R"({"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
          "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
          "use_dynamic_shifting": true, "shift_terminal": null})");
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_TRUE(dev->use_dynamic_shifting);
  EXPECT_EQ(dev->shift, 3.0);
}

}  // namespace
}  // namespace ditserve::worker::flux
