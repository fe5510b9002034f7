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
#include "worker/families/flux/flux_pipeline.h"

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
  auto pipe = worker::families::FluxPipeline::Load(dir, at::kFloat);
  ASSERT_TRUE(pipe.ok()) << pipe.status();
  EXPECT_EQ((*pipe)->default_size(), 128);
  EXPECT_EQ((*pipe)->size_multiple(), 16);
  worker::families::FluxRequest req;
  req.prompt = "a red circle on a blue background";
  req.height = req.width = 64;
  req.num_inference_steps = 4;
  req.max_sequence_length = 32;
  auto image = (*pipe)->Generate(req);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->image.sizes(), (std::vector<int64_t>{64, 64, 3}));

  // Continuing from it: the text side and the VAE are the same files, the
  // VAE phase is skipped, the transformer changes, and the note keeps the
  // first run's history.
  const std::string next = dir + "_continued";
  const CommandResult c = Execute({BinDir() + "/ditserve-train-demo", "--out=" + next, "--init_from=" + dir,
                                   "--seed=2", "--dtype=f32", "--flux_steps=0", "--finetune_steps=6",
                                   "--finetune_batch=2", "--log_every=3", "--threads=1"});
  std::printf("%s\n", c.output.c_str());
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_EQ(c.output.find("[vae]"), std::string::npos) << c.output;
  EXPECT_NE(c.output.find("[transformer-128] step 6/6"), std::string::npos) << c.output;
  for (const char* f : {"vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                        "text_encoder_2/model.safetensors", "tokenizer/vocab.json", "tokenizer_2/spiece.model"}) {
    EXPECT_EQ(testing::ReadTextFile(next + "/" + f), testing::ReadTextFile(dir + "/" + f)) << f;
  }
  EXPECT_NE(testing::ReadTextFile(next + "/transformer/diffusion_pytorch_model.safetensors"),
            testing::ReadTextFile(dir + "/transformer/diffusion_pytorch_model.safetensors"));
  const nlohmann::json continued = nlohmann::json::parse(testing::ReadTextFile(next + "/training.json"), nullptr, false);
  ASSERT_TRUE(continued.is_object());
  EXPECT_EQ(continued["init_from"], dir);
  ASSERT_EQ(continued["phases"].size(), 1u);
  EXPECT_EQ(continued["phases"][0]["phase"], "transformer-128");
  EXPECT_EQ(continued["continued_from"]["seed"], 1);
  auto continued_pipe = worker::families::FluxPipeline::Load(next, at::kFloat);
  ASSERT_TRUE(continued_pipe.ok()) << continued_pipe.status();
  EXPECT_TRUE((*continued_pipe)->Generate(req).ok());
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(next);
}

TEST(TrainDemo, BadFlagsFailClearly) {
  CommandResult r = Execute({BinDir() + "/ditserve-train-demo", "--vae_steps=5"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--out is required"), std::string::npos) << r.output;
  r = Execute({BinDir() + "/ditserve-train-demo", "--out=" + ::testing::TempDir() + "/unused", "--flux_steps=0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--flux_steps must be >= 1"), std::string::npos) << r.output;
  const std::string missing = ::testing::TempDir() + "/no_such_model";
  r = Execute({BinDir() + "/ditserve-train-demo", "--out=" + ::testing::TempDir() + "/unused", "--init_from=" + missing});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--init_from: model directory " + missing + " does not exist"), std::string::npos) << r.output;
  r = Execute({BinDir() + "/ditserve-train-demo", "--out=" + ::testing::TempDir() + "/unused", "--init_from=" + missing,
               "--minutes=3"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--minutes cannot be combined with --init_from"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ditserve
