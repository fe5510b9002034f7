#pragma once

// A batch of random shape scenes as the VAE and the transformer train on
// them.

#include <random>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "tools/train/shape_scene.h"

namespace ditserve::tools::train {

struct SceneBatch {
  at::Tensor images;  // [B, 3, size, size] float32 in [-1, 1]
  std::vector<std::string> captions;
};

// `batch` scenes from RandomShapeScene(rng), rendered at size × size.
SceneBatch DrawSceneBatch(std::mt19937_64& rng, int batch, int size);

}  // namespace ditserve::tools::train
