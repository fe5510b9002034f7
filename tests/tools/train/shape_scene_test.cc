// The demo's training pictures and the reader that checks generated ones:
// rendered scenes read back as what their captions say, with the fill
// ratios the drawing check separates shapes by.

#include <gtest/gtest.h>

#include <random>

#include "tools/train/phase_runner.h"
#include "tools/train/progress.h"
#include "tools/train/scene_reader.h"
#include "tools/train/shape_scene.h"

namespace ditserve::tools::train {
namespace {

using make_model::SceneShape;

TEST(ShapeScene, CaptionNamesColoursAndShape) {
  ShapeScene s;
  s.colour = 0;
  s.shape = SceneShape::kTriangle;
  s.background = 2;
  EXPECT_EQ(s.Caption(), "a red triangle on a blue background");
}

TEST(ShapeScene, RandomScenesUseTwoColoursAndStayCentred) {
  std::mt19937_64 rng(7);
  int shapes[3] = {0, 0, 0};
  for (int i = 0; i < 2000; ++i) {
    const ShapeScene s = RandomShapeScene(rng);
    ASSERT_NE(s.colour, s.background);
    ASSERT_GE(s.size, 0.4);
    ASSERT_LE(s.size, 0.7);
    ASSERT_LE(std::abs(s.cx - 0.5), s.size / 10 + 1e-12);
    ASSERT_LE(std::abs(s.cy - 0.5), s.size / 10 + 1e-12);
    ++shapes[static_cast<int>(s.shape)];
  }
  for (int n : shapes) EXPECT_GT(n, 500);
}

TEST(ShapeScene, RenderedScenesReadBackAsTheirCaptions) {
  std::mt19937_64 rng(11);
  for (int size : {64, 128}) {
    double min_ratio[3] = {9, 9, 9}, max_ratio[3] = {0, 0, 0};
    for (int i = 0; i < 300; ++i) {
      const ShapeScene s = RandomShapeScene(rng);
      const SceneReading r = ReadScene(RenderShapeScene(s, size, size), size, size);
      ASSERT_EQ(r.background, s.background) << s.Caption() << " read as " << DescribeReading(r);
      ASSERT_EQ(r.colour, s.colour) << s.Caption() << " read as " << DescribeReading(r);
      ASSERT_EQ(r.shape, s.shape) << s.Caption() << " read as " << DescribeReading(r);
      const int k = static_cast<int>(s.shape);
      min_ratio[k] = std::min(min_ratio[k], r.fill_ratio);
      max_ratio[k] = std::max(max_ratio[k], r.fill_ratio);
    }
    for (SceneShape shape : {SceneShape::kCircle, SceneShape::kSquare, SceneShape::kTriangle}) {
      const int k = static_cast<int>(shape);
      std::printf("%dx%d %s: fill ratio %.3f..%.3f (expected %.3f)\n", size, size,
                  std::string(make_model::kSceneShapeNames[k]).c_str(), min_ratio[k], max_ratio[k],
                  ExpectedFillRatio(shape));
      EXPECT_NEAR(min_ratio[k], ExpectedFillRatio(shape), 0.08);
      EXPECT_NEAR(max_ratio[k], ExpectedFillRatio(shape), 0.08);
    }
  }
}

TEST(ShapeScene, RenderingIsAntialiased) {
  ShapeScene s;
  s.colour = 6;      // white
  s.background = 7;  // black
  s.shape = SceneShape::kCircle;
  const std::vector<uint8_t> rgb = RenderShapeScene(s, 64, 64);
  int partial = 0;
  for (size_t i = 0; i < rgb.size(); i += 3) partial += rgb[i] > 20 && rgb[i] < 245;
  EXPECT_GT(partial, 20);  // edge pixels mix the two colours
  EXPECT_EQ(rgb[(32 * 64 + 32) * 3], 245);
  EXPECT_EQ(rgb[0], 20);
}

TEST(SceneReader, EmptyPictureHasNoShapeOfAnotherColour) {
  std::vector<uint8_t> rgb(32 * 32 * 3);
  for (size_t i = 0; i < rgb.size(); i += 3) rgb[i] = 220, rgb[i + 1] = 30, rgb[i + 2] = 30;
  const SceneReading r = ReadScene(rgb, 32, 32);
  EXPECT_EQ(r.background, 0);
  EXPECT_EQ(r.colour, 0);  // the reader reports; the check compares with the prompt
  EXPECT_DOUBLE_EQ(r.fill_ratio, 1.0);
}

TEST(PhaseRunner, ScheduleWarmsUpThenDecaysToTenPercent) {
  PhasePlan plan;
  plan.peak_lr = 1.0;
  plan.warmup_steps = 10;
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(plan, 5, 100), 0.5);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(plan, 10, 100), 1.0);
  EXPECT_NEAR(ScheduledLearningRate(plan, 100, 100), 0.1, 1e-12);
  EXPECT_GT(ScheduledLearningRate(plan, 50, 100), ScheduledLearningRate(plan, 60, 100));
  // Short phases warm up over a fifth of their steps.
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(plan, 1, 10), 0.5);
}

TEST(PhaseRunner, RunsEveryStepAndReportsLosses) {
  PhasePlan plan;
  plan.name = "test";
  plan.steps = 20;
  plan.log_every = 5;
  int calls = 0;
  auto r = RunPhase(plan, [&](int step, int total, double) -> absl::StatusOr<double> {
    ++calls;
    EXPECT_EQ(total, 20);
    return 100.0 / step;
  }, stderr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(calls, 20);
  EXPECT_EQ(r->steps, 20);
  EXPECT_GT(r->first_loss, r->last_loss);
  auto bad = RunPhase(plan, [](int, int, double) -> absl::StatusOr<double> { return std::nan(""); }, stderr);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInternal);
}

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(FormatDuration(7.2), "7s");
  EXPECT_EQ(FormatDuration(125), "2m05s");
  EXPECT_EQ(FormatDuration(3723), "1h02m03s");
}

}  // namespace
}  // namespace ditserve::tools::train
