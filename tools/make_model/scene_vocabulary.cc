#include "tools/make_model/scene_vocabulary.h"

#include "absl/strings/str_cat.h"

namespace ditserve::tools::make_model {

std::string SceneCaption(int colour, SceneShape shape, int background) {
  return absl::StrCat("a ", std::string(kSceneColours[colour].name), " ",
                      std::string(kSceneShapeNames[static_cast<int>(shape)]), " on a ",
                      std::string(kSceneColours[background].name), " background");
}

}  // namespace ditserve::tools::make_model
