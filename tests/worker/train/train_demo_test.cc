// ditserve-train-demo, end to end on a short run (never the full training):
// every phase runs, its loss goes down, and the directory it writes is a
// Flux model that the pipeline loads and draws with.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/harness/binaries.h"
#include "tests/harness/reference.h"
#include "worker/pipelines/flux_pipeline.h"

namespace ditserve {
namespace {

using testing::BinDir;
using testing::CommandResult;

CommandResult Execute(const std::vector<std::string>& argv) {
  return testing::RunCommand(argv, {{"OMP_NUM_THREADS", "1"}}, absl::Minutes(15));
}

TEST(TrainDemo, ShortRunLearnsAndWritesALoadableModel) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/train_demo_", getpid());
  const CommandResult r = Execute({BinDir() + "/ditserve-train-demo", "--out=" + dir, "--seed=1", "--dtype=f32",
                                   "--vae_steps=60", "--flux_steps=60", "--finetune_steps=10", "--vae_batch=8",
                                   "--flux_batch=8", "--finetune_batch=4", "--log_every=15", "--threads=1"});
  std::printf("%s\n", r.output.c_str());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Progress lines name the phase, the step, the loss, the time and the ETA.
  for (const char* phase : {"[vae] step 15/60", "[transformer-64] step 60/60", "[transformer-128] step 10/10"}) {
    EXPECT_NE(r.output.find(phase), std::string::npos) << phase;
  }
  EXPECT_NE(r.output.find("eta "), std::string::npos);

  const nlohmann::json note = nlohmann::json::parse(testing::ReadTextFile(dir + "/training.json"), nullptr, false);
  ASSERT_TRUE(note.is_object());
  EXPECT_EQ(note["seed"], 1);
  ASSERT_EQ(note["phases"].size(), 3u);
  for (int i = 0; i < 2; ++i) {
    const auto& phase = note["phases"][i];
    EXPECT_LT(phase["last_loss"].get<double>(), phase["first_loss"].get<double>()) << phase.dump();
  }
  for (const char* f : {"model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json",
                        "tokenizer_2/spiece.model", "text_encoder/model.safetensors",
                        "text_encoder_2/model.safetensors", "transformer/config.json",
                        "transformer/diffusion_pytorch_model.safetensors", "vae/config.json",
                        "vae/diffusion_pytorch_model.safetensors"}) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  }
  // The ordinary pipeline loads it and draws at the model's sizes.
  auto pipe = worker::pipelines::FluxPipeline::Load(dir, at::kFloat);
  ASSERT_TRUE(pipe.ok()) << pipe.status();
  EXPECT_EQ((*pipe)->default_size(), 128);
  EXPECT_EQ((*pipe)->size_multiple(), 16);
  worker::pipelines::FluxRequest req;
  req.prompt = "a red circle on a blue background";
  req.height = req.width = 64;
  req.num_inference_steps = 4;
  req.max_sequence_length = 32;
  auto image = (*pipe)->Generate(req);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->image.sizes(), (std::vector<int64_t>{64, 64, 3}));
  std::filesystem::remove_all(dir);
}

TEST(TrainDemo, BadFlagsFailClearly) {
  CommandResult r = Execute({BinDir() + "/ditserve-train-demo", "--vae_steps=5"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--out is required"), std::string::npos) << r.output;
  r = Execute({BinDir() + "/ditserve-train-demo", "--out=" + ::testing::TempDir() + "/unused", "--flux_steps=0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--flux_steps must be >= 1"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ditserve
