#pragma once

// Reads a picture of one shape on a background back into words, to check
// that a generated image shows what its prompt asked for:
// - every pixel is classified as the nearest named colour (kSceneColours);
// - the background is the dominant colour of the border (the outer 1/16
//   of each side, at least 2 pixels);
// - the shape colour is the dominant colour of the centre square (1/8 of
//   the side);
// - the shape is the connected region (4-neighbours) of shape-coloured
//   pixels that contains the most centre pixels; its fill ratio is its
//   pixel count over its bounding box's area: about 1 for a square, π/4 ≈
//   0.79 for a circle, 1/2 for a triangle, and the shape read is the one
//   whose ratio is nearest.
// Torch-free.

#include <cstdint>
#include <string>
#include <vector>

#include "tools/make_model/scene_vocabulary.h"

namespace ditserve::tools::train {

struct SceneReading {
  int background = -1;  // index into kSceneColours
  int colour = -1;      // index into kSceneColours
  double fill_ratio = 0;
  make_model::SceneShape shape = make_model::SceneShape::kCircle;
  int shape_pixels = 0;
};

// The expected fill ratio of each shape (1, π/4, 1/2).
double ExpectedFillRatio(make_model::SceneShape shape);

// `rgb` is height × width × 3 bytes, row-major.
SceneReading ReadScene(const std::vector<uint8_t>& rgb, int height, int width);

// "red triangle on blue (fill 0.52)".
std::string DescribeReading(const SceneReading& reading);

}  // namespace ditserve::tools::train
