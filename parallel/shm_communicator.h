#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"

namespace ditserve::parallel {

// The shared-memory communicators of one process (ProcessGroups' data-plane
// groups), with one lock and one helper thread. A rank blocked on one of
// them keeps moving the others' pending messages and sleeps until any of
// them has news, so a peer waiting for this rank to drain another group is
// served at once instead of at the helper's next turn.
class ShmProgressDomain;
std::shared_ptr<ShmProgressDomain> NewShmProgressDomain();

struct ShmCommunicatorOptions {
  // Names the group in errors and in the store ("ulysses[0,1]"). Every
  // member must pass the same name; distinct groups need distinct names.
  std::string name = "world";
  // Bound on every operation, group creation included.
  absl::Duration timeout = absl::Seconds(300);
  // Bytes of one message slot; each ordered pair of ranks has two. A
  // message that fits in a slot is copied once on each side, straight
  // between the caller's (possibly strided) tensors and the shared memory;
  // larger ones stream through the slots in pieces. 0 picks
  // min(4 MiB, max(256 KiB, 32 MiB / (2·size·(size-1)))).
  size_t slot_bytes = 0;
  // As GlooCommunicatorOptions::check_shapes.
  bool check_shapes = true;
  // Communicators driven by the same thread share one (null: a domain of
  // its own). Each communicator holds a reference.
  std::shared_ptr<ShmProgressDomain> progress;
};

// A Communicator for a group whose ranks all run on this machine: messages
// move through one POSIX shared-memory segment per group (two slots per
// ordered pair of ranks), with a futex doorbell per rank; no sockets. The
// calling thread moves the data: a Send copies into a free slot at once,
// and Wait() and the collectives move whatever is pending on every channel
// of every communicator of its progress domain. While the calling thread is
// elsewhere (computing, or blocked on something else), the domain's helper
// thread moves posted transfers every millisecond, so a peer is never held
// up for good by a rank that has posted its receive.
//
// Collectives: every member exchanges directly with every other (the group
// sizes one machine holds are small); reductions add the members'
// contributions in rank order on every rank, so every rank gets the same
// bits. A dead peer (its process exited) is an UNAVAILABLE within a fraction
// of a second; a hung one a DEADLINE_EXCEEDED after the timeout.
//
// Creation is collective over `store`: rank 0 makes the segment and every
// member maps it and checks its random cookie. Returns nullptr (not an
// error) on every rank when any member cannot map it (another machine,
// another IPC namespace, /dev/shm full), with the reason in
// `fallback_reason` if given; the caller then uses Gloo for the group.
// Errors are for bad arguments, the store or the timeout.
absl::StatusOr<std::unique_ptr<Communicator>> CreateShmCommunicator(
    const c10::intrusive_ptr<c10d::Store>& store, int group_rank, int group_size,
    const ShmCommunicatorOptions& options, std::string* fallback_reason = nullptr);

// The slot size that options.slot_bytes = 0 picks for `group_size` ranks.
size_t DefaultShmSlotBytes(int group_size);

}  // namespace ditserve::parallel
