// ditserve-make-model and ditserve-generate, end to end: the directory the
// tool writes loads in PyPI's diffusers, which draws the same image as we
// do; the same seed gives a byte-identical PNG; bad requests fail clearly.
// --family sd3: every variant's directory loads in diffusers'
// StableDiffusion3Pipeline with every weight used; the same options give
// byte-identical files.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/harness/binaries.h"
#include "tests/harness/reference.h"
#include "worker/families/flux/flux_pipeline.h"
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
  auto pipe = worker::families::FluxPipeline::Load(dir_, at::kFloat);
  ASSERT_TRUE(pipe.ok()) << pipe.status();
  worker::families::FluxRequest r;
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

// Every file under `dir` (relative path -> bytes).
std::map<std::string, std::string> ReadTree(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files[std::filesystem::relative(entry.path(), dir).string()] = ReadTextFile(entry.path());
  }
  return files;
}

TEST(MakeSd3Model, WritesEveryVariantAsARealDiffusersDirectory) {
  const std::string base = absl::StrCat(::testing::TempDir(), "/made_sd3_", getpid());
  std::vector<std::string> dirs;
  for (const char* variant : {"sd3", "sd3.5-medium", "sd3.5-large"}) {
    const std::string d = base + "_" + variant;
    const CommandResult r = Execute({BinDir() + "/ditserve-make-model", "--family=sd3", std::string("--variant=") + variant,
                                     "--preset=tiny", "--out=" + d, "--seed=5"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(absl::StrCat("wrote ", d, " (", variant, " tiny, f32, seed 5)")), std::string::npos)
        << r.output;
    for (const char* f : {"model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json",
                          "tokenizer/merges.txt", "tokenizer_2/vocab.json", "tokenizer_2/special_tokens_map.json",
                          "tokenizer_3/spiece.model", "text_encoder/model.safetensors",
                          "text_encoder_2/model.safetensors", "text_encoder_3/model.safetensors",
                          "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
                          "vae/diffusion_pytorch_model.safetensors"}) {
      EXPECT_TRUE(std::filesystem::exists(d + "/" + f)) << variant << ": " << f;
    }
    dirs.push_back(d);
  }
  const std::string report = base + "_report.json";
  const absl::Status reference = testing::RunPythonReference(
      testing::DirectoryOf(__FILE__) + "/made_sd3_reference.py", report + " " + dirs[0] + " " + dirs[1] + " " + dirs[2],
      base + "_diffusers.log");
  ASSERT_TRUE(reference.ok()) << reference;
  const nlohmann::json got = nlohmann::json::parse(ReadTextFile(report));
  for (size_t i = 0; i < dirs.size(); ++i) {
    SCOPED_TRACE(dirs[i]);
    const nlohmann::json& r = got[dirs[i]];
    EXPECT_TRUE(r["problems"].empty()) << r["problems"].dump();
    EXPECT_EQ(r["classes"]["transformer"], "SD3Transformer2DModel");
    EXPECT_EQ(r["classes"]["text_encoder"], "CLIPTextModelWithProjection");
    EXPECT_EQ(r["classes"]["text_encoder_2"], "CLIPTextModelWithProjection");
    EXPECT_EQ(r["classes"]["text_encoder_3"], "T5EncoderModel");
    EXPECT_EQ(r["classes"]["scheduler"], "FlowMatchEulerDiscreteScheduler");
    EXPECT_EQ(r["pad_tokens"][1], "!");  // OpenCLIP-bigG's pad, id 0
    EXPECT_EQ(r["pad_ids"][1], 0);
    EXPECT_EQ(r["shift"], 3.0);
    EXPECT_EQ(r["vae"], nlohmann::json::parse("[16, 1.5305, 0.0609]"));
    EXPECT_EQ(r["image_shape"], nlohmann::json::parse("[64, 64, 3]"));  // the tiny preset's default size
    EXPECT_TRUE(r["image_finite"].get<bool>());
  }
  EXPECT_TRUE(got[dirs[0]]["qk_norm"].is_null());
  EXPECT_TRUE(got[dirs[0]]["dual_attention_layers"].empty());
  EXPECT_EQ(got[dirs[1]]["qk_norm"], "rms_norm");
  EXPECT_EQ(got[dirs[1]]["dual_attention_layers"], nlohmann::json::parse("[0, 1]"));
  EXPECT_EQ(got[dirs[2]]["qk_norm"], "rms_norm");
  EXPECT_TRUE(got[dirs[2]]["dual_attention_layers"].empty());

  // The same options give byte-identical files (spiece.model records its
  // path, so the rewrite goes to the same place); another seed other weights.
  const std::map<std::string, std::string> first = ReadTree(dirs[1]);
  std::filesystem::remove_all(dirs[1]);
  const std::vector<std::string> again = {BinDir() + "/ditserve-make-model", "--family=sd3", "--variant=sd3.5-medium",
                                          "--preset=tiny", "--out=" + dirs[1], "--seed=5"};
  ASSERT_EQ(Execute(again).exit_code, 0);
  const std::map<std::string, std::string> second = ReadTree(dirs[1]);
  EXPECT_EQ(first.size(), second.size());
  for (const auto& [path, bytes] : first) {
    auto it = second.find(path);
    ASSERT_NE(it, second.end()) << path;
    EXPECT_TRUE(it->second == bytes) << path << " differs";
  }
  std::vector<std::string> other = again;
  other.back() = "--seed=6";
  ASSERT_EQ(Execute(other).exit_code, 0);
  EXPECT_NE(ReadTextFile(dirs[1] + "/transformer/diffusion_pytorch_model.safetensors"),
            first.at("transformer/diffusion_pytorch_model.safetensors"));
  EXPECT_EQ(ReadTextFile(dirs[1] + "/tokenizer_2/vocab.json"), first.at("tokenizer_2/vocab.json"));

  // Sharded and bf16 transformers are written too.
  const std::string sharded = base + "_sharded";
  ASSERT_EQ(Execute({BinDir() + "/ditserve-make-model", "--family=sd3", "--preset=tiny", "--shards=2", "--dtype=bf16",
                     "--out=" + sharded})
                .exit_code,
            0);
  EXPECT_TRUE(std::filesystem::exists(sharded + "/transformer/diffusion_pytorch_model.safetensors.index.json"));
  EXPECT_NE(ReadTextFile(sharded + "/transformer/config.json").find("SD3Transformer2DModel"), std::string::npos);

  // Bad options fail clearly.
  CommandResult r = Execute({BinDir() + "/ditserve-make-model", "--family=sd3", "--variant=sd4", "--out=" + sharded});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--variant must be sd3, sd3.5-medium or sd3.5-large, got 'sd4'"), std::string::npos)
      << r.output;
  r = Execute({BinDir() + "/ditserve-make-model", "--family=sd3", "--preset=flux-dev", "--out=" + sharded});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--preset must be tiny or small for sd3, got 'flux-dev'"), std::string::npos) << r.output;
  r = Execute({BinDir() + "/ditserve-make-model", "--variant=sd3", "--out=" + sharded});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--variant is for --family sd3"), std::string::npos) << r.output;
  r = Execute({BinDir() + "/ditserve-make-model", "--family=sdxl", "--out=" + sharded});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--family must be flux, sd3, pixart-sigma, pixart-alpha or hunyuandit, got 'sdxl'"), std::string::npos) << r.output;

  for (const std::string& d : dirs) std::filesystem::remove_all(d);
  std::filesystem::remove_all(sharded);
}

// --family hunyuandit writes every component HunyuanDiTPipeline loads
// (tests/worker/hunyuandit_generation_test.cc loads and runs it in
// diffusers), deterministically; another seed gives other weights.
TEST(MakeHunyuanDiT, WritesEveryComponentDeterministically) {
  const std::string d = absl::StrCat(::testing::TempDir(), "/made_hunyuandit_", getpid());
  const std::vector<std::string> make = {BinDir() + "/ditserve-make-model", "--family=hunyuandit", "--preset=tiny",
                                         "--out=" + d, "--seed=3"};
  const CommandResult r = Execute(make);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(absl::StrCat("wrote ", d, " (hunyuandit tiny, f32, seed 3)")), std::string::npos) << r.output;
  for (const char* f : {"model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.txt",
                        "tokenizer/tokenizer_config.json", "text_encoder/config.json", "text_encoder/model.safetensors",
                        "tokenizer_2/spiece.model", "text_encoder_2/model.safetensors",
                        "transformer/diffusion_pytorch_model.safetensors", "vae/config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(d + "/" + f)) << f;
  }
  const nlohmann::json scheduler = nlohmann::json::parse(ReadTextFile(d + "/scheduler/scheduler_config.json"));
  EXPECT_EQ(scheduler["_class_name"], "DDPMScheduler");
  EXPECT_EQ(scheduler["prediction_type"], "v_prediction");
  const nlohmann::json transformer = nlohmann::json::parse(ReadTextFile(d + "/transformer/config.json"));
  EXPECT_EQ(transformer["text_len"], 77);
  EXPECT_EQ(transformer["text_len_t5"], 256);
  EXPECT_EQ(transformer["use_style_cond_and_image_meta_size"], false);
  const std::map<std::string, std::string> first = ReadTree(d);
  std::filesystem::remove_all(d);
  ASSERT_EQ(Execute(make).exit_code, 0);
  const std::map<std::string, std::string> second = ReadTree(d);
  EXPECT_EQ(first.size(), second.size());
  for (const auto& [path, bytes] : first) {
    auto it = second.find(path);
    ASSERT_NE(it, second.end()) << path;
    EXPECT_TRUE(it->second == bytes) << path << " differs";
  }
  std::vector<std::string> other = make;
  other.back() = "--seed=4";
  ASSERT_EQ(Execute(other).exit_code, 0);
  EXPECT_NE(ReadTextFile(d + "/transformer/diffusion_pytorch_model.safetensors"),
            first.at("transformer/diffusion_pytorch_model.safetensors"));
  const CommandResult bad = Execute({BinDir() + "/ditserve-make-model", "--family=hunyuandit", "--preset=flux-dev",
                                     "--out=" + d});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("--preset must be tiny or small for hunyuandit, got 'flux-dev'"), std::string::npos)
      << bad.output;
  std::filesystem::remove_all(d);
}

}  // namespace
}  // namespace ditserve
