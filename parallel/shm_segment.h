#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace ditserve::parallel {

// A POSIX shared-memory segment (/dev/shm) mapped read-write into this
// process: the memory one group's ranks on one machine share. Torch-free.
//
// Lifetime: the mapping and its descriptor live as long as this object.
// The name is only needed until every member has opened the segment; call
// Unlink() then, so the memory goes back to the system when the last member
// exits, however it exits.
//
// Liveness: HoldLivenessLock(i) takes an open-file-description lock on byte
// i of the segment; the kernel drops it when the holder's process exits
// (even by SIGKILL), so a peer can ask IsAlive(i) without sharing a PID
// namespace.
class ShmSegment {
 public:
  // Creates a segment of `bytes` under a fresh random name
  // ("/ditserve-<pid>-<random>").
  // Every page is reserved up front (posix_fallocate), so a full /dev/shm
  // is a RESOURCE_EXHAUSTED here instead of a SIGBUS on first touch. The
  // memory reads as zeros.
  static absl::StatusOr<std::unique_ptr<ShmSegment>> Create(size_t bytes);
  // Opens and maps an existing segment; NOT_FOUND when `name` does not
  // exist on this machine, FAILED_PRECONDITION when its size is not `bytes`.
  static absl::StatusOr<std::unique_ptr<ShmSegment>> Open(const std::string& name, size_t bytes);

  // Unlinks every name that Create made in process `creator`, which must
  // have exited (and been reaped): a creator that dies before its members
  // have attached leaves its segment's name behind, and only its launcher
  // knows. Returns how many names it removed. Looks in /dev/shm, where
  // Linux keeps POSIX shared-memory names.
  static int RemoveLeftovers(pid_t creator);

  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;
  ~ShmSegment();

  void* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }

  // Removes the name (idempotent; a name already gone is fine). The mapping
  // stays valid.
  void Unlink();

  // Holds the liveness lock of `slot` (>= 0) until this object dies.
  absl::Status HoldLivenessLock(int slot);
  // False once no process holds `slot`'s liveness lock (its holder exited
  // or never took it). True when the kernel cannot tell.
  bool IsAlive(int slot) const;

 private:
  ShmSegment(std::string name, int fd, void* data, size_t size)
      : name_(std::move(name)), fd_(fd), data_(data), size_(size) {}
  std::string name_;
  int fd_;
  void* data_;
  size_t size_;
};

}  // namespace ditserve::parallel
