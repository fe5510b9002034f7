#pragma once

// Reading a transformer/config.json the way the families' parsers do:
// every error is INVALID_ARGUMENT "transformer config: <what>", naming the
// field; an absent or null field keeps the caller's default. Torch-free.

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ditserve::worker::models {

absl::Status ConfigError(const std::string& what);
// The text as a JSON object ("not JSON: …", "must be a JSON object").
absl::StatusOr<nlohmann::json> ParseConfigObject(const std::string& json_text);
// An integer in [1, 2^20].
absl::Status ReadConfigInt(const nlohmann::json& j, const char* key, int& out);
absl::Status ReadConfigBool(const nlohmann::json& j, const char* key, bool& out);
absl::Status ReadConfigNumber(const nlohmann::json& j, const char* key, double& out);
// A field that must be absent, null or `expected` ("KEY = V is not
// supported (only E)").
absl::Status ExpectConfigValue(const nlohmann::json& j, const char* key, const nlohmann::json& expected);

}  // namespace ditserve::worker::models
