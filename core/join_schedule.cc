#include "core/join_schedule.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ditserve::core {

absl::StatusOr<std::vector<ScheduledJoin>> ParseJoinSchedule(const std::string& text, int prompts, int default_steps) {
  std::vector<ScheduledJoin> out;
  if (text.empty()) return out;
  const std::vector<std::string> entries = absl::StrSplit(text, ',');
  if (static_cast<int>(entries.size()) != prompts) {
    return absl::InvalidArgumentError(absl::StrCat("--join_schedule has ", entries.size(),
                                                   " entries; it needs one per prompt (", prompts, ")"));
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::vector<std::string> fields = absl::StrSplit(entries[i], ':');
    const auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(
          absl::StrCat("--join_schedule entry ", i, " '", entries[i], "': ", why, " (JOIN[:STEPS[:CANCEL[:CFG]]])"));
    };
    if (fields.size() > 4) return bad("too many fields");
    int values[3] = {0, 0, -1};
    for (size_t f = 0; f < std::min<size_t>(fields.size(), 3); ++f) {
      if (f == 2 && fields[f].empty()) continue;  // no cancel
      if (!absl::SimpleAtoi(fields[f], &values[f]) || values[f] < 0) return bad("JOIN, STEPS and CANCEL are integers >= 0");
    }
    ScheduledJoin j;
    j.join_at = values[0];
    j.steps = values[1] == 0 ? default_steps : values[1];
    j.cancel_at = values[2];
    if (j.steps < 1 || j.steps > 1000) return bad(absl::StrCat("STEPS must be in [1, 1000], got ", j.steps));
    if (j.cancel_at >= 0 && j.cancel_at <= j.join_at) return bad("CANCEL must come after JOIN");
    if (fields.size() == 4 && (!absl::SimpleAtod(fields[3], &j.cfg_scale) || !(j.cfg_scale >= 1))) {
      return bad("CFG must be a number >= 1");
    }
    out.push_back(j);
  }
  return out;
}

}  // namespace ditserve::core
