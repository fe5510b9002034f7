#pragma once

// The vocabulary of the demo's pictures: named colours (with the RGB the
// demo draws them in) and shapes, and the caption that describes one
// picture. The caption corpus (tokenizers), the trainer's scene renderer
// and the "draws what it is asked" check all read it from here.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ditserve::tools::make_model {

struct SceneColour {
  std::string_view name;
  std::array<uint8_t, 3> rgb;
};

// Well separated in RGB (the nearest-colour classifier of the drawing
// check relies on it: every pair is at least ~90 apart).
inline constexpr std::array<SceneColour, 10> kSceneColours = {{
    {"red", {220, 30, 30}},
    {"green", {30, 160, 50}},
    {"blue", {30, 60, 220}},
    {"yellow", {240, 220, 40}},
    {"orange", {245, 135, 20}},
    {"purple", {130, 40, 170}},
    {"white", {245, 245, 245}},
    {"black", {20, 20, 20}},
    {"pink", {245, 140, 200}},
    {"gray", {128, 128, 128}},
}};

enum class SceneShape { kCircle = 0, kSquare = 1, kTriangle = 2 };
inline constexpr std::array<std::string_view, 3> kSceneShapeNames = {"circle", "square", "triangle"};

// "a {colour} {shape} on a {background} background" (indices into
// kSceneColours).
std::string SceneCaption(int colour, SceneShape shape, int background);

}  // namespace ditserve::tools::make_model
