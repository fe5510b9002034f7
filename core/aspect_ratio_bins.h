#pragma once

// PixArt's resolution binning, torch-free: PixArt{Alpha,Sigma}Pipeline's
// use_resolution_binning generates at the aspect-ratio bin closest to the
// requested size (a table per transformer sample_size) and resizes the
// decoded image back to the requested size (bilinear, then a centre crop).

#include <vector>

namespace ditserve::core {

struct AspectRatioBin {
  double ratio;  // the table's key, height / width
  int height;
  int width;
};

// The table of a transformer sample_size (32: 256 px bins, 64: 512,
// 128: 1024, 256: 2048); null for any other (diffusers has none).
const std::vector<AspectRatioBin>* AspectRatioBins(int sample_size);

// The bin whose ratio is nearest height / width (the first of equals, as
// diffusers' min over the table's keys). `bins` is not empty.
AspectRatioBin ClosestBin(const std::vector<AspectRatioBin>& bins, int height, int width);

}  // namespace ditserve::core
