#include "tests/parallel/test_gang.h"

#include "parallel/rendezvous.h"

namespace ditserve::parallel {

absl::Status Check(bool ok, const std::string& what) {
  return ok ? absl::OkStatus() : absl::InternalError(what);
}

absl::StatusOr<c10::intrusive_ptr<c10d::Store>> JoinTestStore(const testing::RankContext& ctx) {
  RendezvousOptions rdzv;
  rdzv.master_addr = ctx.master_addr;
  rdzv.master_port = ctx.master_port;
  rdzv.rank = ctx.rank;
  rdzv.world_size = ctx.world_size;
  rdzv.timeout = absl::Seconds(120);
  return JoinRendezvous(rdzv);
}

absl::StatusOr<std::unique_ptr<ProcessGroups>> JoinTestGang(const testing::RankContext& ctx,
                                                            const ParallelConfig& config,
                                                            const ProcessGroupsOptions& options) {
  auto world = WorldConfig::Create(config, ctx.rank);
  if (!world.ok()) return world.status();
  auto store = JoinTestStore(ctx);
  if (!store.ok()) return store.status();
  return ProcessGroups::Create(*world, *store, options);
}

}  // namespace ditserve::parallel
