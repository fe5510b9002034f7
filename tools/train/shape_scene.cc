#include "tools/train/shape_scene.h"

#include <cmath>

namespace ditserve::tools::train {
namespace {

using make_model::kSceneColours;
using make_model::SceneShape;

// Whether the point (x, y) (fractions of the side) is inside the shape.
bool Inside(const ShapeScene& s, double x, double y) {
  const double half = s.size / 2;
  const double dx = x - s.cx, dy = y - s.cy;
  switch (s.shape) {
    case SceneShape::kCircle:
      return dx * dx + dy * dy <= half * half;
    case SceneShape::kSquare:
      return std::abs(dx) <= half && std::abs(dy) <= half;
    case SceneShape::kTriangle: {
      if (dy < -half || dy > half) return false;
      // Half-width grows linearly from 0 at the apex to `half` at the base.
      return std::abs(dx) <= (dy + half) / 2;
    }
  }
  return false;
}

}  // namespace

std::string ShapeScene::Caption() const { return make_model::SceneCaption(colour, shape, background); }

ShapeScene RandomShapeScene(std::mt19937_64& rng) {
  const int n = static_cast<int>(kSceneColours.size());
  std::uniform_int_distribution<int> colour(0, n - 1), other(0, n - 2), shape(0, 2);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  ShapeScene s;
  s.colour = colour(rng);
  const int b = other(rng);
  s.background = b >= s.colour ? b + 1 : b;
  s.shape = static_cast<SceneShape>(shape(rng));
  s.size = 0.4 + 0.3 * unit(rng);
  s.cx = 0.5 + (unit(rng) * 2 - 1) * s.size / 10;
  s.cy = 0.5 + (unit(rng) * 2 - 1) * s.size / 10;
  return s;
}

std::vector<uint8_t> RenderShapeScene(const ShapeScene& scene, int height, int width) {
  constexpr int kSub = 4;
  std::vector<uint8_t> rgb(static_cast<size_t>(height) * width * 3);
  const auto& fg = kSceneColours[scene.colour].rgb;
  const auto& bg = kSceneColours[scene.background].rgb;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      int hits = 0;
      for (int sy = 0; sy < kSub; ++sy) {
        for (int sx = 0; sx < kSub; ++sx) {
          hits += Inside(scene, (x + (sx + 0.5) / kSub) / width, (y + (sy + 0.5) / kSub) / height);
        }
      }
      const double a = static_cast<double>(hits) / (kSub * kSub);
      for (int c = 0; c < 3; ++c) {
        rgb[(static_cast<size_t>(y) * width + x) * 3 + c] = static_cast<uint8_t>(std::lround(bg[c] + a * (fg[c] - bg[c])));
      }
    }
  }
  return rgb;
}

}  // namespace ditserve::tools::train
