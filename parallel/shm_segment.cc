#include "parallel/shm_segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"

namespace ditserve::parallel {
namespace {

std::string ErrnoText(int error) { return std::strerror(error); }

// Every name Create gives starts with the creator's prefix.
std::string NamePrefix(pid_t creator) { return absl::StrFormat("ditserve-%d-", creator); }

std::string FreshName() {
  std::random_device random;
  const uint64_t bits = (static_cast<uint64_t>(random()) << 32) ^ random();
  return absl::StrFormat("/%s%016x", NamePrefix(getpid()), bits);
}

struct flock LockRange(int slot, short type) {
  struct flock lock {};
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = slot;
  lock.l_len = 1;
  lock.l_pid = 0;  // required for OFD locks
  return lock;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ShmSegment>> ShmSegment::Create(size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("a shared-memory segment needs a size");
  const std::string name = FreshName();
  const int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("shm_open(", name, "): ", ErrnoText(errno)));
  }
  const auto fail = [&](absl::StatusCode code, const std::string& what, int error) {
    close(fd);
    shm_unlink(name.c_str());
    return absl::Status(code, absl::StrCat(what, " on ", name, " (", bytes, " bytes): ",
                                           ErrnoText(error)));
  };
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    return fail(absl::StatusCode::kResourceExhausted, "ftruncate", errno);
  }
  if (const int error = posix_fallocate(fd, 0, static_cast<off_t>(bytes)); error != 0) {
    return fail(absl::StatusCode::kResourceExhausted, "posix_fallocate", error);
  }
  void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) return fail(absl::StatusCode::kResourceExhausted, "mmap", errno);
  return std::unique_ptr<ShmSegment>(new ShmSegment(name, fd, data, bytes));
}

absl::StatusOr<std::unique_ptr<ShmSegment>> ShmSegment::Open(const std::string& name,
                                                            size_t bytes) {
  const int fd = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int error = errno;
    const std::string message = absl::StrCat("shm_open(", name, "): ", ErrnoText(error));
    return error == ENOENT ? absl::NotFoundError(message) : absl::UnavailableError(message);
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat("shared-memory segment ", name, " has ",
                                                      st.st_size, " bytes, expected ", bytes));
  }
  void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("mmap of ", name, ": ", ErrnoText(error)));
  }
  return std::unique_ptr<ShmSegment>(new ShmSegment(name, fd, data, bytes));
}

ShmSegment::~ShmSegment() {
  munmap(data_, size_);
  close(fd_);  // drops this process's liveness lock
}

void ShmSegment::Unlink() { shm_unlink(name_.c_str()); }

int ShmSegment::RemoveLeftovers(pid_t creator) {
  const std::string prefix = NamePrefix(creator);
  int removed = 0;
  std::error_code ec;  // no exceptions: launchers call this from their supervising threads
  for (std::filesystem::directory_iterator it("/dev/shm", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (absl::StartsWith(name, prefix) && shm_unlink(("/" + name).c_str()) == 0) ++removed;
  }
  return removed;
}

absl::Status ShmSegment::HoldLivenessLock(int slot) {
  struct flock lock = LockRange(slot, F_WRLCK);
  if (fcntl(fd_, F_OFD_SETLK, &lock) != 0) {
    return absl::UnavailableError(
        absl::StrCat("liveness lock ", slot, " on ", name_, ": ", ErrnoText(errno)));
  }
  return absl::OkStatus();
}

bool ShmSegment::IsAlive(int slot) const {
  struct flock probe = LockRange(slot, F_WRLCK);
  if (fcntl(fd_, F_OFD_GETLK, &probe) != 0) return true;
  return probe.l_type != F_UNLCK;
}

}  // namespace ditserve::parallel
