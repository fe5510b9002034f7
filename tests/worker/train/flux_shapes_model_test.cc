// The committed demo model (models/flux-shapes) draws what it is asked:
// for 8 prompts × 2 seeds at 64×64 and 128×128 the generated picture is
// read back (worker/train/scene_reader.h: border colour, centre colour,
// fill ratio of the shape's bounding box) and compared with the prompt.
// The pass rate is printed with every case; the images are written to
// $TEST_TMPDIR (or /tmp)/flux_shapes_check/ for a look.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/image/png_encoder.h"
#include "worker/pipelines/flux_pipeline.h"
#include "worker/train/scene_reader.h"

namespace ditserve::worker::train {
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

std::string ModelDir() {
  const char* src = std::getenv("DITSERVE_SOURCE_DIR");
  return std::string(src != nullptr ? src : ".") + "/models/flux-shapes";
}

struct Case {
  int colour;
  SceneShape shape;
  int background;
};

class FluxShapesModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto pipe = pipelines::FluxPipeline::Load(ModelDir(), at::kFloat);
    ASSERT_TRUE(pipe.ok()) << pipe.status();
    pipe_ = std::move(*pipe).release();
  }
  static void TearDownTestSuite() { delete pipe_; }

  static absl::StatusOr<at::Tensor> Draw(const std::string& prompt, int size, uint64_t seed) {
    pipelines::FluxRequest r;
    r.prompt = prompt;
    r.height = r.width = size;
    r.num_inference_steps = kSteps;
    r.true_cfg_scale = kTrueCfgScale;
    r.negative_prompt.assign(1, ' ');
    r.seed = seed;
    auto out = pipe_->Generate(r);
    if (!out.ok()) return out.status();
    return out->image.contiguous();
  }
  static pipelines::FluxPipeline* pipe_;
};
pipelines::FluxPipeline* FluxShapesModel::pipe_ = nullptr;

TEST_F(FluxShapesModel, DrawsWhatItIsAsked) {
  // red, green, blue, yellow, orange, purple, white, black, pink, gray
  const std::vector<Case> cases = {
      {0, SceneShape::kCircle, 2},   {3, SceneShape::kSquare, 7},   {1, SceneShape::kTriangle, 6},
      {2, SceneShape::kSquare, 3},   {6, SceneShape::kCircle, 5},   {4, SceneShape::kTriangle, 9},
      {8, SceneShape::kCircle, 1},   {7, SceneShape::kTriangle, 0},
  };
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
}  // namespace ditserve::worker::train
