#include "worker/families/model_family.h"

#include "worker/families/flux/flux_family.h"
#include "worker/families/hunyuandit/hunyuandit_family.h"
#include "worker/families/pixart/pixart_family.h"
#include "worker/families/sd3/sd3_family.h"

namespace ditserve::worker::families {

absl::StatusOr<std::unique_ptr<ModelFamily>> OpenModelFamily(const std::string& dir) {
  auto geometry = core::ReadModelGeometry(dir);
  if (!geometry.ok()) return geometry.status();
  if (geometry->family == "sd3") return OpenSd3Family(dir, *geometry);
  if (geometry->family == "pixart") return OpenPixArtFamily(dir, *geometry);
  if (geometry->family == "hunyuandit") return OpenHunyuanDiTFamily(dir, *geometry);
  return OpenFluxFamily(dir, *geometry);
}

}  // namespace ditserve::worker::families
