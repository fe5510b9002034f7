// ditserve-make-model and ditserve-generate, end to end: the directory the
// tool writes loads in PyPI's diffusers, which draws the same image as we
// do; the same seed gives a byte-identical PNG; bad requests fail clearly.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "tests/harness/binaries.h"
#include "tests/harness/reference.h"
#include "worker/pipelines/flux_pipeline.h"
#include "worker/weights/safetensors.h"

namespace ditserve {
namespace {

using testing::BinDir;
using testing::CommandResult;
using testing::ReadTextFile;

CommandResult Execute(const std::vector<std::string>& argv) {
  return testing::RunCommand(argv, {{"OMP_NUM_THREADS", "1"}}, absl::Minutes(15));
}

class MakeModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = absl::StrCat(::testing::TempDir(), "/made_flux_", getpid());
    const CommandResult r = Execute({BinDir() + "/ditserve-make-model", "--family=flux", "--preset=tiny", "--out=" + dir_,
                           "--shards=2", "--seed=3"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  static std::string dir_;
};
std::string MakeModel::dir_;

TEST_F(MakeModel, WritesARealDiffusersDirectory) {
  for (const char* f : {"model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json",
                        "tokenizer/merges.txt", "tokenizer_2/spiece.model", "text_encoder/config.json",
                        "text_encoder/model.safetensors", "text_encoder_2/model.safetensors",
                        "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
                        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
                        "vae/diffusion_pytorch_model.safetensors"}) {
    EXPECT_TRUE(std::filesystem::exists(dir_ + "/" + f)) << f;
  }
  // diffusers loads it and draws what we draw.
  const std::string ref = dir_ + "/diffusers.safetensors";
  const absl::Status reference = testing::RunPythonReference(
      testing::DirectoryOf(__FILE__) + "/made_model_reference.py", dir_ + " " + ref, dir_ + "/diffusers.log");
  ASSERT_TRUE(reference.ok()) << reference;
  auto pipe = worker::pipelines::FluxPipeline::Load(dir_, at::kFloat);
  ASSERT_TRUE(pipe.ok()) << pipe.status();
  worker::pipelines::FluxRequest r;
  r.prompt = "a red circle on a blue background";
  r.height = 64;
  r.width = 96;
  r.num_inference_steps = 3;
  r.seed = 5;
  r.max_sequence_length = 32;
  auto ours = (*pipe)->Generate(r);
  ASSERT_TRUE(ours.ok()) << ours.status();
  auto expected = worker::weights::SafetensorsCheckpoint::Open(ref);
  ASSERT_TRUE(expected.ok());
  const at::Tensor want = (*expected->Get("image") * 255).round();
  const double err = (ours->image.to(at::kFloat) - want).abs().max().item<double>();
  std::printf("made model: image max error %.0f/255 against diffusers\n", err);
  EXPECT_LE(err, 1.0);
}

TEST_F(MakeModel, GenerateIsDeterministicAndHandlesNonSquareSizes) {
  const std::string a = dir_ + "/a.png", b = dir_ + "/b.png", c = dir_ + "/c.png";
  const std::vector<std::string> base = {BinDir() + "/ditserve-generate", "--model=" + dir_,
                                         "--prompt=a green square on a white background", "--num_inference_steps=2",
                                         "--seed=11"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = base;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return Execute(argv);
  };
  const CommandResult ra = with({"--height=512", "--width=768", "--output=" + a});
  ASSERT_EQ(ra.exit_code, 0) << ra.output;
  EXPECT_NE(ra.output.find("wrote " + a + " (768x512, seed 11)"), std::string::npos) << ra.output;
  ASSERT_EQ(with({"--height=512", "--width=768", "--output=" + b}).exit_code, 0);
  const std::string pa = ReadTextFile(a);
  EXPECT_EQ(pa.substr(1, 3), "PNG");
  EXPECT_EQ(pa, ReadTextFile(b));  // byte-identical
  ASSERT_EQ(with({"--height=512", "--width=768", "--seed=12", "--output=" + c}).exit_code, 0);
  EXPECT_NE(pa, ReadTextFile(c));
  // --profile writes a Chrome trace of the operators and changes nothing else.
  const std::string d = dir_ + "/d.png", trace = dir_ + "/trace.json";
  const CommandResult rd = with({"--height=512", "--width=768", "--output=" + d, "--profile=" + trace});
  ASSERT_EQ(rd.exit_code, 0) << rd.output;
  EXPECT_NE(rd.output.find("wrote the trace " + trace), std::string::npos) << rd.output;
  EXPECT_EQ(ReadTextFile(d), pa);
  const std::string json = ReadTextFile(trace);
  EXPECT_NE(json.find("\"traceEvents\""), std::string::npos);
  EXPECT_NE(json.find("aten::linear"), std::string::npos);
}

TEST_F(MakeModel, BadRequestsFailClearly) {
  const std::string gen = BinDir() + "/ditserve-generate";
  CommandResult r = Execute({gen, "--model=" + dir_, "--prompt=x", "--height=72", "--width=64", "--output=/tmp/x.png"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("ditserve-generate: height must be a multiple of 16 in [16, 8192], got 72"), std::string::npos)
      << r.output;
  r = Execute({gen, "--model=" + dir_, "--prompt=x", "--num_inference_steps=0", "--output=/tmp/x.png"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("num_inference_steps must be in [1, 1000], got 0"), std::string::npos) << r.output;
  const std::string empty = dir_ + "_empty";
  std::filesystem::create_directories(empty);
  r = Execute({gen, "--model=" + empty, "--prompt=x", "--output=/tmp/x.png"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("ditserve-generate: cannot open " + empty + "/model_index.json"), std::string::npos)
      << r.output;
  std::filesystem::remove_all(empty);
  r = Execute({gen, "--model=" + dir_, "--prompt=x", "--num_inference_steps=1", "--height=64", "--width=64",
               "--output=/tmp/x.png", "--profile=/nonexistent-dir/trace.json"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("ditserve-generate: profiling: cannot write /nonexistent-dir/trace.json"), std::string::npos)
      << r.output;
  r = Execute({BinDir() + "/ditserve-make-model", "--preset=huge", "--out=" + empty});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--preset must be tiny, small or flux-dev, got 'huge'"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ditserve
