// The discrete-time schedules (core/denoising_schedule.h) and their
// application (DenoisingSolver) against diffusers' schedulers: timesteps,
// init_noise_sigma, the scaled model inputs and every step's sample of a
// whole sampling loop (DDPM's with the reference's generator noise), applied over two token ranges as a sharded or
// pipelined run does; the flow-matching form against FlowMatchEulerStep
// bit for bit; and the configs that are refused.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <map>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/denoising_schedule.h"
#include "tests/harness/reference.h"
#include "worker/models/flux/flow_match_scheduler.h"
#include "worker/pipelines/denoising_solver.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::pipelines {
namespace {

TEST(DenoisingSolver, MatchesDiffusersSchedulers) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/dsched_", getpid());
  const absl::Status reference = testing::RunPythonReference(
      testing::DirectoryOf(__FILE__) + "/discrete_scheduler_reference.py", path, path + ".log");
  ASSERT_TRUE(reference.ok()) << reference;
  auto ref = weights::SafetensorsCheckpoint::Open(path + ".safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  const nlohmann::json cases = nlohmann::json::parse(testing::ReadTextFile(path + ".json"));
  int compared = 0;
  int index = 0;  // the reference's case order (its noise seeds)
  std::map<std::string, int> order;
  for (const auto& [name, c] : cases.items()) order[name] = c["index"].get<int>();
  for (const auto& [name, c] : cases.items()) {
    index = order[name];
    SCOPED_TRACE(name);
    auto config = core::ParseDiscreteSchedulerConfig(c["config"].get<std::string>());
    ASSERT_TRUE(config.ok()) << config.status();
    const int steps = c["steps"].get<int>();
    auto schedule = core::MakeDiscreteSchedule(*config, steps);
    ASSERT_TRUE(schedule.ok()) << schedule.status();
    const at::Tensor timesteps = *ref->Get(name + ".timesteps");
    ASSERT_EQ(schedule->steps(), steps);
    ASSERT_EQ(timesteps.numel(), steps);
    for (int i = 0; i < steps; ++i) EXPECT_EQ(schedule->model_times[i], timesteps[i].item<double>()) << i;
    EXPECT_NEAR(schedule->init_noise_sigma, (*ref->Get(name + ".init_noise_sigma"))[0].item<double>(),
                1e-6 * schedule->init_noise_sigma);
    at::Tensor x = *ref->Get(name + ".x0");
    DenoisingSolver solver(*schedule);
    solver.Allocate(x);
    // DDPM's noise: the reference's generator, drawn as randn_tensor does
    // (the model output's shape), once per step that draws.
    at::Generator noise = at::make_generator<at::CPUGeneratorImpl>(1000 + index);
    int draws = 0;
    solver.set_noise_source([&](int) {
      ++draws;
      return at::randn(x.sizes(), noise, at::TensorOptions().dtype(at::kFloat));
    });
    for (int i = 0; i < steps; ++i) {
      const at::Tensor out = *ref->Get(absl::StrCat(name, ".out", i));
      const at::Tensor want_in = *ref->Get(absl::StrCat(name, ".in", i));
      const double in_scale = std::max(1.0, want_in.abs().max().item<double>());
      EXPECT_LE((solver.ModelInput(i, x) - want_in).abs().max().item<double>(), 2e-5 * in_scale)
          << "input of step " << i;
      // Tokens [0, 2) and [2, 6) as two ranges.
      at::Tensor next = at::empty_like(x);
      for (auto [begin, length] : {std::pair<int64_t, int64_t>{0, 2}, {2, 4}}) {
        next.narrow(1, begin, length)
            .copy_(solver.Step(i, x.narrow(1, begin, length), out.narrow(1, begin, length), begin));
      }
      x = next;
      const at::Tensor want = *ref->Get(absl::StrCat(name, ".x", i + 1));
      const double scale = std::max(1.0, want.abs().max().item<double>());
      EXPECT_LE((x - want).abs().max().item<double>(), 2e-5 * scale) << "sample after step " << i;
    }
    int noisy = 0;
    for (const core::StepUpdate& u : schedule->updates) noisy += u.noise != 0;
    EXPECT_EQ(draws, noisy);
    EXPECT_EQ(schedule->stochastic(), name.rfind("ddpm", 0) == 0);
    ++compared;
  }
  EXPECT_EQ(compared, 22);
}

// FlowMatchSchedule applied by the solver is FlowMatchEulerStep exactly.
TEST(DenoisingSolver, FlowMatchingIsTheEulerStepBitForBit) {
  const std::vector<float> sigmas = {1.0f, 0.8123f, 0.55f, 0.2f, 0.0f};
  DenoisingSolver solver(core::FlowMatchSchedule(sigmas));
  EXPECT_EQ(solver.schedule().history_depth(), 0);
  at::Tensor x = at::randn({2, 5, 8});
  solver.Allocate(x);
  for (int i = 0; i + 1 < static_cast<int>(sigmas.size()); ++i) {
    EXPECT_EQ(solver.schedule().model_times[i], sigmas[i]);
    const at::Tensor v = at::randn({2, 5, 8});
    const at::Tensor want = flux::FlowMatchEulerStep(x, v, sigmas[i], sigmas[i + 1]);
    const at::Tensor got = solver.Step(i, x, v, 0);
    EXPECT_TRUE(at::equal(got, want)) << i;
    EXPECT_TRUE(at::equal(solver.ModelInput(i, x), x));
    x = got;
  }
}

TEST(DenoisingSchedule, RefusesWhatItDoesNotCompute) {
  const auto error = [](const std::string& json) {
    auto c = core::ParseDiscreteSchedulerConfig(json);
    return c.ok() ? std::string("ok") : std::string(c.status().message());
  };
  EXPECT_NE(error(R"({"_class_name": "LCMScheduler"})").find("LCMScheduler\" is not supported"), std::string::npos);
  EXPECT_NE(error(R"({"_class_name": "DPMSolverMultistepScheduler", "thresholding": true})").find("thresholding"),
            std::string::npos);
  EXPECT_NE(error(R"({"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true})")
                .find("use_karras_sigmas"),
            std::string::npos);
  EXPECT_NE(error(R"({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3})").find("solver_order"),
            std::string::npos);
  EXPECT_NE(error(R"({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"})")
                .find("algorithm_type"),
            std::string::npos);
  EXPECT_NE(error(R"({"_class_name": "EulerDiscreteScheduler", "timestep_type": "continuous"})").find("timestep_type"),
            std::string::npos);
  EXPECT_NE(error(R"({"_class_name": "DDIMScheduler", "beta_schedule": "sigmoid"})").find("beta_schedule"),
            std::string::npos);
  EXPECT_NE(error(R"({"_class_name": "DDPMScheduler", "variance_type": "learned_range"})").find("variance_type"),
            std::string::npos);
  EXPECT_NE(error("{not json").find("not JSON"), std::string::npos);
  EXPECT_EQ(error(R"({"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity})"), "ok");
  auto c = core::ParseDiscreteSchedulerConfig(R"({"_class_name": "DDIMScheduler"})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->timestep_spacing, "leading");  // DDIM's default
  EXPECT_FALSE(core::MakeDiscreteSchedule(*c, 0).ok());
  EXPECT_FALSE(core::MakeDiscreteSchedule(*c, 1001).ok());
  EXPECT_TRUE(core::MakeDiscreteSchedule(*c, 1000).ok());
}

// alphas_cumprod of the linear schedule against the closed form in double.
TEST(DenoisingSchedule, AlphasCumprodIsTheProductOfOneMinusBeta) {
  core::DiscreteSchedulerConfig c;
  const std::vector<float> ac = core::AlphasCumprod(c);
  ASSERT_EQ(ac.size(), 1000u);
  double product = 1.0;
  for (int i = 0; i < 1000; ++i) {
    product *= 1.0 - (0.0001 + (0.02 - 0.0001) * i / 999.0);
    EXPECT_NEAR(ac[i], product, 1e-6 * product + 1e-9) << i;
  }
}

}  // namespace
}  // namespace ditserve::worker::pipelines
