#include "worker/models/common/config_fields.h"

#include <cstdint>
#include <exception>

#include "absl/strings/str_cat.h"

namespace ditserve::worker::models {

using nlohmann::json;

absl::Status ConfigError(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("transformer config: ", what));
}

absl::StatusOr<json> ParseConfigObject(const std::string& json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const std::exception& e) {
    return ConfigError(absl::StrCat("not JSON: ", e.what()));
  }
  if (!j.is_object()) return ConfigError("must be a JSON object");
  return j;
}

absl::Status ReadConfigInt(const json& j, const char* key, int& out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_number_integer()) return ConfigError(absl::StrCat(key, " must be an integer"));
  const int64_t v = j[key].get<int64_t>();
  if (v < 1 || v > (1 << 20)) return ConfigError(absl::StrCat(key, " must be an integer in [1, 1048576], got ", v));
  out = static_cast<int>(v);
  return absl::OkStatus();
}

absl::Status ReadConfigBool(const json& j, const char* key, bool& out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_boolean()) return ConfigError(absl::StrCat(key, " must be true or false"));
  out = j[key].get<bool>();
  return absl::OkStatus();
}

absl::Status ReadConfigNumber(const json& j, const char* key, double& out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_number()) return ConfigError(absl::StrCat(key, " must be a number"));
  out = j[key].get<double>();
  return absl::OkStatus();
}

absl::Status ExpectConfigValue(const json& j, const char* key, const json& expected) {
  if (!j.contains(key) || j[key].is_null() || j[key] == expected) return absl::OkStatus();
  return ConfigError(absl::StrCat(key, " = ", j[key].dump(), " is not supported (only ", expected.dump(), ")"));
}

}  // namespace ditserve::worker::models
