#include "tools/train/scene_batch.h"

#include <ATen/ATen.h>

namespace ditserve::tools::train {

SceneBatch DrawSceneBatch(std::mt19937_64& rng, int batch, int size) {
  SceneBatch out;
  at::Tensor bytes = at::empty({batch, size, size, 3}, at::kByte);
  for (int b = 0; b < batch; ++b) {
    const ShapeScene scene = RandomShapeScene(rng);
    const std::vector<uint8_t> rgb = RenderShapeScene(scene, size, size);
    std::copy(rgb.begin(), rgb.end(), bytes[b].data_ptr<uint8_t>());
    out.captions.push_back(scene.Caption());
  }
  out.images = bytes.permute({0, 3, 1, 2}).to(at::kFloat).div(127.5).sub(1.0).contiguous();
  return out;
}

}  // namespace ditserve::tools::train
