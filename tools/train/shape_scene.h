#pragma once

// The demo's training pictures: one filled shape (circle, square or
// triangle) in one colour on a background of another colour, with its
// caption. Torch-free.
//
// Geometry, in fractions of the image side: the shape's bounding box is a
// square of side `size` centred at (cx, cy); a circle fills its inscribed
// disc, a triangle has its apex at the top middle and its base along the
// bottom (half the box). RandomShapeScene keeps the shape over the image
// centre and off the border (size in [0.4, 0.7], centre within size/10 of
// the image centre), so the centre shows the shape colour and the border
// the background colour — what the drawing check reads.

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tools/make_model/scene_vocabulary.h"

namespace ditserve::tools::train {

struct ShapeScene {
  int colour = 0;      // index into make_model::kSceneColours
  make_model::SceneShape shape = make_model::SceneShape::kCircle;
  int background = 1;  // index into make_model::kSceneColours, != colour
  double cx = 0.5, cy = 0.5, size = 0.5;

  std::string Caption() const;
};

// A uniformly random scene (colours, shape, size, position) from `rng`.
ShapeScene RandomShapeScene(std::mt19937_64& rng);

// The scene as RGB bytes [height][width][3], each pixel the coverage-
// weighted mix of the two colours (4×4 samples per pixel, antialiased).
std::vector<uint8_t> RenderShapeScene(const ShapeScene& scene, int height, int width);

}  // namespace ditserve::tools::train
