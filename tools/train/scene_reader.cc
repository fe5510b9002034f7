#include "tools/train/scene_reader.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_format.h"

namespace ditserve::tools::train {
namespace {

using make_model::kSceneColours;
using make_model::SceneShape;

int NearestColour(const uint8_t* p) {
  int best = 0;
  double best_d = std::numeric_limits<double>::max();
  for (size_t i = 0; i < kSceneColours.size(); ++i) {
    double d = 0;
    for (int c = 0; c < 3; ++c) {
      const double diff = static_cast<double>(p[c]) - kSceneColours[i].rgb[c];
      d += diff * diff;
    }
    if (d < best_d) {
      best_d = d;
      best = static_cast<int>(i);
    }
  }
  return best;
}

template <typename Pred>
int Dominant(const std::vector<int>& labels, int height, int width, Pred inside) {
  std::vector<int> count(kSceneColours.size(), 0);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      if (inside(y, x)) ++count[labels[static_cast<size_t>(y) * width + x]];
  return static_cast<int>(std::max_element(count.begin(), count.end()) - count.begin());
}

}  // namespace

double ExpectedFillRatio(SceneShape shape) {
  switch (shape) {
    case SceneShape::kSquare:
      return 1.0;
    case SceneShape::kCircle:
      return M_PI / 4;
    case SceneShape::kTriangle:
      return 0.5;
  }
  return 0;
}

SceneReading ReadScene(const std::vector<uint8_t>& rgb, int height, int width) {
  SceneReading r;
  std::vector<int> labels(static_cast<size_t>(height) * width);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = NearestColour(&rgb[i * 3]);
  const int border = std::max(2, std::min(height, width) / 16);
  r.background = Dominant(labels, height, width, [&](int y, int x) {
    return y < border || x < border || y >= height - border || x >= width - border;
  });
  const int cy0 = height / 2 - std::max(1, height / 16), cy1 = height / 2 + std::max(1, height / 16);
  const int cx0 = width / 2 - std::max(1, width / 16), cx1 = width / 2 + std::max(1, width / 16);
  const auto in_centre = [&](int y, int x) { return y >= cy0 && y < cy1 && x >= cx0 && x < cx1; };
  r.colour = Dominant(labels, height, width, in_centre);
  // Connected regions of the shape colour; keep the one covering most of the centre.
  std::vector<int> component(labels.size(), -1);
  int best = -1, best_centre = -1;
  std::vector<int> sizes, y0s, y1s, x0s, x1s;
  for (int start = 0; start < static_cast<int>(labels.size()); ++start) {
    if (labels[start] != r.colour || component[start] >= 0) continue;
    const int id = static_cast<int>(sizes.size());
    int size = 0, centre = 0, y0 = height, y1 = -1, x0 = width, x1 = -1;
    std::vector<int> stack = {start};
    component[start] = id;
    while (!stack.empty()) {
      const int i = stack.back();
      stack.pop_back();
      const int y = i / width, x = i % width;
      ++size;
      centre += in_centre(y, x);
      y0 = std::min(y0, y), y1 = std::max(y1, y), x0 = std::min(x0, x), x1 = std::max(x1, x);
      const int ny[4] = {y - 1, y + 1, y, y}, nx[4] = {x, x, x - 1, x + 1};
      for (int k = 0; k < 4; ++k) {
        if (ny[k] < 0 || ny[k] >= height || nx[k] < 0 || nx[k] >= width) continue;
        const int j = ny[k] * width + nx[k];
        if (labels[j] == r.colour && component[j] < 0) {
          component[j] = id;
          stack.push_back(j);
        }
      }
    }
    sizes.push_back(size), y0s.push_back(y0), y1s.push_back(y1), x0s.push_back(x0), x1s.push_back(x1);
    if (centre > best_centre) best_centre = centre, best = id;
  }
  if (best < 0) return r;
  r.shape_pixels = sizes[best];
  const double box = static_cast<double>(y1s[best] - y0s[best] + 1) * (x1s[best] - x0s[best] + 1);
  r.fill_ratio = sizes[best] / box;
  double nearest = std::numeric_limits<double>::max();
  for (SceneShape s : {SceneShape::kSquare, SceneShape::kCircle, SceneShape::kTriangle}) {
    const double d = std::abs(r.fill_ratio - ExpectedFillRatio(s));
    if (d < nearest) nearest = d, r.shape = s;
  }
  return r;
}

std::string DescribeReading(const SceneReading& r) {
  if (r.colour < 0 || r.background < 0) return "nothing";
  return absl::StrFormat("%s %s on %s (fill %.2f)", std::string(kSceneColours[r.colour].name),
                         std::string(make_model::kSceneShapeNames[static_cast<int>(r.shape)]),
                         std::string(kSceneColours[r.background].name), r.fill_ratio);
}

}  // namespace ditserve::tools::train
