// The committed demo model (models/flux-shapes) draws what it is asked:
// for 8 prompts × 2 seeds at 64×64 and 128×128 the generated picture is
// read back (tools/train/scene_reader.h: border colour, centre colour,
// fill ratio of the shape's bounding box) and compared with the prompt.
// The pass rate is printed with every case; the images are written to
// $TEST_TMPDIR (or /tmp)/flux_shapes_check/ for a look. The same check runs
// with First-Block-Cache at its default threshold (the gang's pipeline on a
// world of one), logging each image's PSNR against the uncached one.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <filesystem>

#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "absl/strings/str_cat.h"
#include "core/image/png_encoder.h"
#include "parallel/process_groups.h"
#include "parallel/world_config.h"
#include "tools/train/scene_reader.h"
#include "worker/families/flux/flux_pipeline.h"
#include "worker/pipelines/parallel_pipeline.h"

namespace ditserve::tools::train {
namespace {

using make_model::SceneShape;

// How the check (and the README's main job, scripts/demo) runs the model:
// true CFG 4 against a blank negative prompt, next to the empty caption the
// training dropped to (a space: true CFG needs a non-empty negative prompt).
constexpr int kSteps = 20;
constexpr double kTrueCfgScale = 4.0;
// The committed model reads all 32 cases right (docs/demo-model.md). The
// closest calls are the squares, whose fill ratios (0.91–0.96) sit 0.02
// above the square/circle boundary at 0.89, so float differences between
// CPUs might flip one or two: the check requires every colour and at least
// kShapesFloor fully right cases.
constexpr int kShapesFloor = 30;
// First-Block-Cache at its default threshold stays this close (PSNR, dB) to
// the uncached image on every case (seen 32.1-48.0 dB, 247 of 640 steps
// cached, on this project's 2-core CI machine).
constexpr double kCachedPsnrFloor = 30.0;

std::string ModelDir() {
  const char* src = std::getenv("DITSERVE_SOURCE_DIR");
  return std::string(src != nullptr ? src : ".") + "/models/flux-shapes";
}

struct Case {
  int colour;
  SceneShape shape;
  int background;
};

// red, green, blue, yellow, orange, purple, white, black, pink, gray
const std::vector<Case>& Cases() {
  static const auto* cases = new std::vector<Case>{
      {0, SceneShape::kCircle, 2},   {3, SceneShape::kSquare, 7},   {1, SceneShape::kTriangle, 6},
      {2, SceneShape::kSquare, 3},   {6, SceneShape::kCircle, 5},   {4, SceneShape::kTriangle, 9},
      {8, SceneShape::kCircle, 1},   {7, SceneShape::kTriangle, 0},
  };
  return *cases;
}

double Psnr(const at::Tensor& a, const at::Tensor& b) {
  const double mse = (a.to(at::kDouble) - b.to(at::kDouble)).pow(2).mean().item<double>();
  return mse == 0 ? INFINITY : 10 * std::log10(255.0 * 255.0 / mse);
}

class FluxShapesModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto pipe = worker::families::FluxPipeline::Load(ModelDir(), at::kFloat);
    ASSERT_TRUE(pipe.ok()) << pipe.status();
    pipe_ = std::move(*pipe).release();
  }
  static void TearDownTestSuite() { delete pipe_; }

  static worker::families::FluxRequest Request(const std::string& prompt, int size, uint64_t seed) {
    worker::families::FluxRequest r;
    r.prompt = prompt;
    r.height = r.width = size;
    r.num_inference_steps = kSteps;
    r.true_cfg_scale = kTrueCfgScale;
    r.negative_prompt.assign(1, ' ');
    r.seed = seed;
    return r;
  }
  static absl::StatusOr<at::Tensor> Draw(const std::string& prompt, int size, uint64_t seed) {
    auto out = pipe_->Generate(Request(prompt, size, seed));
    if (!out.ok()) return out.status();
    return out->image.contiguous();
  }
  static worker::families::FluxPipeline* pipe_;
};
worker::families::FluxPipeline* FluxShapesModel::pipe_ = nullptr;

// The gang's pipeline on a world of one: the engine that runs step caching.
class CachedDrawing {
 public:
  absl::Status Load() {
    auto world = parallel::WorldConfig::Create(parallel::ParallelConfig{}, 0);
    if (!world.ok()) return world.status();
    parallel::ProcessGroupsOptions options;
    options.check_shapes = false;
    auto groups = parallel::ProcessGroups::Create(*world, c10::make_intrusive<c10d::HashStore>(), options);
    if (!groups.ok()) return groups.status();
    groups_ = *std::move(groups);
    auto pipe = worker::pipelines::ParallelPipeline::Load(ModelDir(), at::kFloat, c10::Device(c10::kCPU), *groups_);
    if (!pipe.ok()) return pipe.status();
    pipe_ = *std::move(pipe);
    return absl::OkStatus();
  }
  absl::StatusOr<worker::pipelines::GenerationResult> Draw(const worker::families::FluxRequest& flux, core::StepCacheOptions cache) {
    worker::pipelines::GenerationRequest r = flux;
    r.cache = cache;
    auto out = pipe_->Generate({r});
    if (!out.ok()) return out.status();
    return std::move(out->front());
  }

 private:
  std::unique_ptr<parallel::ProcessGroups> groups_;
  std::unique_ptr<worker::pipelines::ParallelPipeline> pipe_;
};

TEST_F(FluxShapesModel, DrawsWhatItIsAsked) {
  const std::vector<Case>& cases = Cases();
  const std::string out_dir = absl::StrCat(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp",
                                           "/flux_shapes_check");
  std::filesystem::create_directories(out_dir);
  int passed = 0, total = 0, colours_right = 0;
  std::vector<double> ratios[3];
  for (int size : {64, 128}) {
    for (const Case& c : cases) {
      for (uint64_t seed : {0, 1}) {
        const std::string prompt = make_model::SceneCaption(c.colour, c.shape, c.background);
        auto image = Draw(prompt, size, seed);
        ASSERT_TRUE(image.ok()) << image.status();
        const std::vector<uint8_t> rgb(image->data_ptr<uint8_t>(), image->data_ptr<uint8_t>() + image->numel());
        const SceneReading r = ReadScene(rgb, size, size);
        const bool ok = r.colour == c.colour && r.background == c.background && r.shape == c.shape;
        passed += ok;
        colours_right += r.colour == c.colour && r.background == c.background;
        ++total;
        if (r.colour == c.colour && r.background == c.background) {
          ratios[static_cast<int>(c.shape)].push_back(r.fill_ratio);
        }
        std::printf("%-4s %3dx%-3d seed %llu  %-44s read: %s\n", ok ? "ok" : "FAIL", size, size,
                    static_cast<unsigned long long>(seed), prompt.c_str(), DescribeReading(r).c_str());
        auto png = core::image::EncodePng(rgb.data(), size, size);
        if (png.ok()) {
          std::string name = prompt;
          std::replace(name.begin(), name.end(), ' ', '_');
          (void)core::image::WriteFile(absl::StrCat(out_dir, "/", size, "_seed", seed, "_", name, ".png"), *png);
        }
      }
    }
  }
  for (SceneShape s : {SceneShape::kSquare, SceneShape::kCircle, SceneShape::kTriangle}) {
    const auto& v = ratios[static_cast<int>(s)];
    if (v.empty()) continue;
    double mean = 0, var = 0;
    for (double x : v) mean += x / v.size();
    for (double x : v) var += (x - mean) * (x - mean) / v.size();
    std::printf("fill ratio of %ss: mean %.3f, std %.3f over %zu images (expected %.3f)\n",
                std::string(make_model::kSceneShapeNames[static_cast<int>(s)]).c_str(), mean, std::sqrt(var),
                v.size(), ExpectedFillRatio(s));
  }
  std::printf("pass rate: %d/%d (colours right %d/%d); images in %s\n", passed, total, colours_right, total,
              out_dir.c_str());
  EXPECT_EQ(colours_right, total);
  EXPECT_GE(passed, kShapesFloor);
}

// First-Block-Cache at the default threshold: the same 32 cases still read
// right, and each image stays within kCachedPsnrFloor of the uncached one.
TEST_F(FluxShapesModel, DrawsWhatItIsAskedWithFirstBlockCache) {
  CachedDrawing gang;
  ASSERT_TRUE(gang.Load().ok());
  const core::StepCacheOptions cache{core::StepCacheMethod::kFirstBlock,
                                     core::DefaultStepCacheThreshold(core::StepCacheMethod::kFirstBlock)};
  int passed = 0, total = 0, colours_right = 0, cached_steps = 0;
  double min_psnr = INFINITY;
  for (int size : {64, 128}) {
    for (const Case& c : Cases()) {
      for (uint64_t seed : {0, 1}) {
        const std::string prompt = make_model::SceneCaption(c.colour, c.shape, c.background);
        auto uncached = Draw(prompt, size, seed);
        ASSERT_TRUE(uncached.ok()) << uncached.status();
        auto cached = gang.Draw(Request(prompt, size, seed), cache);
        ASSERT_TRUE(cached.ok()) << cached.status();
        const at::Tensor image = cached->image.contiguous();
        const std::vector<uint8_t> rgb(image.data_ptr<uint8_t>(), image.data_ptr<uint8_t>() + image.numel());
        const SceneReading r = ReadScene(rgb, size, size);
        const bool ok = r.colour == c.colour && r.background == c.background && r.shape == c.shape;
        const double psnr = Psnr(image, *uncached);
        passed += ok;
        colours_right += r.colour == c.colour && r.background == c.background;
        cached_steps += cached->cached_steps();
        min_psnr = std::min(min_psnr, psnr);
        ++total;
        std::printf("%-4s %3dx%-3d seed %llu  %-44s cached %2d/%d  PSNR %5.1f dB  read: %s\n", ok ? "ok" : "FAIL",
                    size, size, static_cast<unsigned long long>(seed), prompt.c_str(), cached->cached_steps(),
                    kSteps, psnr, DescribeReading(r).c_str());
        EXPECT_GE(psnr, kCachedPsnrFloor) << prompt << " " << size << " seed " << seed;
      }
    }
  }
  std::printf("first-block-cache %.2f: pass rate %d/%d (colours right %d/%d), %d of %d steps cached, "
              "PSNR against uncached >= %.1f dB\n",
              cache.threshold, passed, total, colours_right, total, cached_steps, total * kSteps, min_psnr);
  EXPECT_EQ(colours_right, total);
  EXPECT_GE(passed, kShapesFloor);
  // Not vacuous: the default threshold skips steps on this model.
  EXPECT_GT(cached_steps, 0);
}

TEST_F(FluxShapesModel, OutOfVocabularyPromptStillDraws) {
  // Words the tokenizers never saw (byte-level BPE and SentencePiece both
  // fall back to pieces) and an empty prompt.
  for (const std::string prompt : {"a chartreuse dodecahedron on a zebra-striped background, très jolie 🦓", ""}) {
    auto image = Draw(prompt, 64, 3);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->sizes(), (std::vector<int64_t>{64, 64, 3}));
  }
}

}  // namespace
}  // namespace ditserve::tools::train
