#include "worker/selfcheck.h"

#include <ATen/ATen.h>

#include <chrono>
#include <functional>
#include <algorithm>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace ditserve::worker {
namespace {

using parallel::Communicator;
using parallel::ReduceOp;

// Runs `body`, timing it; a non-OK status or a wrong value fails the row.
SelfCheckRow Check(const Communicator& comm, std::string op, long long bytes,
                   const std::function<absl::Status()>& body) {
  SelfCheckRow row;
  row.group = comm.name();
  row.op = std::move(op);
  row.bytes = bytes;
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = body();
  row.millis =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  row.ok = s.ok();
  if (!s.ok()) row.error = std::string(s.message());
  return row;
}

absl::Status Expect(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  if (!got.sizes().equals(want.sizes())) {
    return absl::InternalError(absl::StrCat(what, ": wrong shape"));
  }
  if (!at::equal(got.cpu(), want.cpu())) {
    return absl::InternalError(absl::StrCat(what, ": wrong values"));
  }
  return absl::OkStatus();
}

void CheckGroup(Communicator& comm, c10::Device device, int n, std::vector<SelfCheckRow>& rows) {
  const int p = comm.size();
  const int r = comm.rank();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  const long long bytes = static_cast<long long>(n) * 4;

  rows.push_back(Check(comm, "all_reduce(sum)", bytes, [&]() -> absl::Status {
    at::Tensor t = at::full({n}, r + 1.0, f32);
    if (absl::Status s = comm.AllReduce(t, ReduceOp::kSum); !s.ok()) return s;
    return Expect(t, at::full({n}, p * (p + 1) / 2.0, f32), "all_reduce(sum)");
  }));
  rows.push_back(Check(comm, "all_reduce(max)", bytes, [&]() -> absl::Status {
    at::Tensor t = at::arange(n, f32) + r;
    if (absl::Status s = comm.AllReduce(t, ReduceOp::kMax); !s.ok()) return s;
    return Expect(t, at::arange(n, f32) + (p - 1), "all_reduce(max)");
  }));
  rows.push_back(Check(comm, "all_gather", bytes, [&]() -> absl::Status {
    at::Tensor t = at::full({n}, static_cast<double>(r), f32);
    auto got = comm.AllGather(t, 0);
    if (!got.ok()) return got.status();
    at::Tensor want = at::arange(p, f32).repeat_interleave(n);
    return Expect(*got, want, "all_gather");
  }));
  const int k = std::max(1, n / p);
  rows.push_back(Check(comm, "all_to_all", static_cast<long long>(k) * p * 4,
                       [&]() -> absl::Status {
    // Block j of rank r holds r*p + j; after the exchange block j holds j*p + r.
    at::Tensor t = (at::arange(p, f32) + r * p).repeat_interleave(k);
    auto got = comm.AllToAll(t, 0, 0);
    if (!got.ok()) return got.status();
    at::Tensor want = (at::arange(p, f32) * p + r).repeat_interleave(k);
    return Expect(*got, want, "all_to_all");
  }));
  rows.push_back(Check(comm, "broadcast", bytes, [&]() -> absl::Status {
    const int root = p - 1;
    at::Tensor t = at::full({n}, r == root ? 7.0 : -1.0, f32);
    if (absl::Status s = comm.Broadcast(t, root); !s.ok()) return s;
    return Expect(t, at::full({n}, 7.0, f32), "broadcast");
  }));
  if (p > 1) {
    rows.push_back(Check(comm, "send/recv(ring)", bytes, [&]() -> absl::Status {
      at::Tensor out = at::full({n}, static_cast<double>(r), f32);
      at::Tensor in = at::empty({n}, f32);
      auto recv = comm.Recv(in, (r + p - 1) % p, /*tag=*/1);
      if (!recv.ok()) return recv.status();
      auto send = comm.Send(out, (r + 1) % p, /*tag=*/1);
      if (!send.ok()) return send.status();
      if (absl::Status s = (*send)->Wait(); !s.ok()) return s;
      if (absl::Status s = (*recv)->Wait(); !s.ok()) return s;
      return Expect(in, at::full({n}, static_cast<double>((r + p - 1) % p), f32), "recv");
    }));
  }
  rows.push_back(Check(comm, "barrier", 4, [&] { return comm.Barrier(); }));
}

std::string Serialize(const std::vector<SelfCheckRow>& rows) {
  std::string out;
  for (const auto& row : rows) {
    absl::StrAppend(&out, row.group, "\t", row.op, "\t", row.bytes, "\t", row.millis, "\t",
                    row.ok ? 1 : 0, "\t", row.error, "\n");
  }
  return out;
}

std::vector<SelfCheckRow> Deserialize(const std::string& text) {
  std::vector<SelfCheckRow> rows;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    if (f.size() != 6) continue;
    SelfCheckRow row;
    row.group = f[0];
    row.op = f[1];
    (void)absl::SimpleAtoi(f[2], &row.bytes);
    (void)absl::SimpleAtod(f[3], &row.millis);
    row.ok = f[4] == "1";
    row.error = f[5];
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

std::vector<SelfCheckRow> RunSelfCheck(parallel::ProcessGroups& groups, c10::Device device,
                                       int elements) {
  std::vector<SelfCheckRow> rows;
  for (parallel::Dim dim : parallel::kAllDims) {
    CheckGroup(groups.group(dim), device, elements, rows);
  }
  CheckGroup(groups.control(), c10::Device(c10::kCPU), std::min(elements, 1024), rows);
  return rows;
}

absl::StatusOr<std::vector<SelfCheckRow>> GatherSelfCheck(parallel::ProcessGroups& groups,
                                                          const std::vector<SelfCheckRow>& mine) {
  const auto& world = groups.world();
  const auto& store = groups.store();
  try {
    store->set(absl::StrCat("selfcheck/", world.rank()), Serialize(mine));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("selfcheck: store set failed: ", e.what()));
  }
  if (absl::Status s = groups.control().Barrier(); !s.ok()) return s;
  if (world.rank() != 0) return std::vector<SelfCheckRow>{};
  std::map<std::pair<std::string, std::string>, SelfCheckRow> merged;
  std::vector<std::pair<std::string, std::string>> order;
  for (int r = 0; r < world.world_size(); ++r) {
    std::vector<uint8_t> bytes;
    try {
      bytes = store->get(absl::StrCat("selfcheck/", r));
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("selfcheck: store get failed: ", e.what()));
    }
    for (SelfCheckRow& row : Deserialize(std::string(bytes.begin(), bytes.end()))) {
      auto key = std::make_pair(row.group, row.op);
      auto it = merged.find(key);
      if (it == merged.end()) {
        order.push_back(key);
        merged.emplace(key, std::move(row));
      } else {
        it->second.millis = std::max(it->second.millis, row.millis);
        it->second.bytes = std::max(it->second.bytes, row.bytes);
        if (!row.ok && it->second.ok) {
          it->second.ok = false;
          it->second.error = absl::StrCat("rank ", r, ": ", row.error);
        }
      }
    }
  }
  std::vector<SelfCheckRow> out;
  for (const auto& key : order) out.push_back(merged.at(key));
  // Dimension order (innermost first, then the control group), then group.
  const auto dim_rank = [](const std::string& group) {
    const std::string dim = group.substr(0, group.find('['));
    for (size_t i = 0; i < parallel::kAllDims.size(); ++i) {
      if (dim == parallel::DimName(parallel::kAllDims[i])) return static_cast<int>(i);
    }
    return static_cast<int>(parallel::kAllDims.size());
  };
  std::stable_sort(out.begin(), out.end(), [&](const SelfCheckRow& a, const SelfCheckRow& b) {
    const int da = dim_rank(a.group), db = dim_rank(b.group);
    if (da != db) return da < db;
    return a.group < b.group;
  });
  return out;
}

std::string FormatSelfCheckTable(const std::vector<SelfCheckRow>& rows) {
  std::string out = absl::StrFormat("%-12s %-22s %-16s %12s %10s  %s\n", "group", "members",
                                    "operation", "bytes", "time_ms", "ok");
  for (const auto& row : rows) {
    const size_t bracket = row.group.find('[');
    const std::string dim = row.group.substr(0, bracket);
    const std::string members =
        bracket == std::string::npos ? "all" : row.group.substr(bracket);
    absl::StrAppendFormat(&out, "%-12s %-22s %-16s %12d %10.3f  %s%s\n", dim, members, row.op,
                          row.bytes, row.millis, row.ok ? "ok" : "FAIL",
                          row.ok ? "" : absl::StrCat(" (", row.error, ")"));
  }
  return out;
}

}  // namespace ditserve::worker
