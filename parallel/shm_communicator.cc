#include "parallel/shm_communicator.h"

#include <ATen/ATen.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <climits>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <functional>
#include <new>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "parallel/communicator_checks.h"
#include "parallel/shm_segment.h"

namespace ditserve::parallel {
namespace {

// ---------------------------------------------------------------------------
// The segment's layout. Every field that two processes touch concurrently is
// an address-free lock-free atomic; the rest is written before the store
// publishes the segment and read-only afterwards.

constexpr uint64_t kMagic = 0x3176726573746964ULL;  // "ditserv1"
constexpr int kSlots = 2;                              // per ordered pair of ranks
constexpr size_t kPage = 4096;
constexpr int64_t kCollectiveTag = -1;  // user tags are >= 0

static_assert(std::atomic<uint32_t>::is_always_lock_free && sizeof(std::atomic<uint32_t>) == 4);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

struct SegmentHeader {
  uint64_t magic;
  uint64_t cookie[2];
  int64_t group_size;
  uint64_t slot_bytes;
};

// One per rank: its doorbell (a futex word bumped by whoever makes progress
// possible for it), whether it sleeps on it, and whether it aborted.
struct alignas(64) RankState {
  std::atomic<uint32_t> doorbell{0};
  std::atomic<uint32_t> sleeping{0};
  std::atomic<uint32_t> aborted{0};
};

// Describes the piece of a message a slot holds.
struct SlotHeader {
  int64_t tag;
  int64_t dtype;
  int64_t message_bytes;
  int64_t offset;
  int64_t piece_bytes;
};

struct alignas(64) Counter {
  std::atomic<uint64_t> value{0};
};

// One ordered pair (src -> dst): pieces written and read so far; piece n
// lives in slot n % kSlots. Only src writes `written`, only dst `read`.
struct ChannelHeader {
  Counter written;
  Counter read;
  SlotHeader slots[kSlots];
};

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

struct Layout {
  int size = 1;
  size_t slot_bytes = 0;
  size_t slot_stride = 0;
  size_t ranks_offset = 0;
  size_t channels_offset = 0;
  size_t data_offset = 0;
  size_t total = 0;

  static Layout For(int size, size_t slot_bytes) {
    Layout l;
    l.size = size;
    l.slot_bytes = slot_bytes;
    l.slot_stride = RoundUp(slot_bytes, kPage);
    l.ranks_offset = kPage;
    l.channels_offset = l.ranks_offset + RoundUp(size * sizeof(RankState), kPage);
    l.data_offset = l.channels_offset + RoundUp(l.channels() * sizeof(ChannelHeader), kPage);
    l.total = l.data_offset + l.channels() * kSlots * l.slot_stride;
    return l;
  }
  size_t channels() const { return static_cast<size_t>(size) * (size - 1); }
  // Dense index of the ordered pair (src, dst), src != dst.
  size_t channel(int src, int dst) const {
    return static_cast<size_t>(src) * (size - 1) + (dst < src ? dst : dst - 1);
  }
};

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, absl::Duration timeout) {
  struct timespec ts = absl::ToTimespec(timeout);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

// Sleeps until any of `words` no longer holds its `expected` value, or the
// timeout. Uses futex_waitv (Linux 5.16+); on older kernels it sleeps on
// the first word for at most a millisecond, so the others are polled.
void FutexWaitAny(const std::vector<std::atomic<uint32_t>*>& words,
                  const std::vector<uint32_t>& expected, absl::Duration timeout) {
  if (words.size() == 1) return FutexWait(words[0], expected[0], timeout);
#ifdef SYS_futex_waitv
  std::vector<futex_waitv> waiters(words.size());
  for (size_t i = 0; i < words.size(); ++i) {
    waiters[i] = futex_waitv{expected[i], reinterpret_cast<uint64_t>(words[i]), FUTEX_32, 0};  // 32-bit, shared
  }
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  struct timespec until = absl::ToTimespec(absl::DurationFromTimespec(now) + timeout);
  if (syscall(SYS_futex_waitv, waiters.data(), waiters.size(), 0, &until, CLOCK_MONOTONIC) == 0 ||
      errno != ENOSYS) {
    return;
  }
#endif
  FutexWait(words[0], expected[0], std::min(timeout, absl::Milliseconds(1)));
}

void FutexWake(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

int64_t Bytes(const at::Tensor& t) { return static_cast<int64_t>(t.numel()) * t.element_size(); }

// ---------------------------------------------------------------------------
// Messages. A send or a receive in flight, owned by the engine's queues and
// by the PendingTransfer that waits for it.
struct Message {
  int peer = 0;
  int64_t tag = 0;
  // Send: the caller's tensor (any strides). Receive: where the data goes;
  // undefined for a message that arrived before its Recv was posted.
  at::Tensor tensor;
  // Send: a contiguous copy when the message spans several pieces.
  // Receive: staging bytes when the pieces cannot land in `tensor` itself.
  at::Tensor buffer;
  int64_t dtype = 0;
  int64_t bytes = 0;
  int64_t moved = 0;     // bytes sent or received so far
  bool arrived = false;  // receive: every byte is here (in `tensor` or `buffer`)
  bool complete = false;
};
using MessagePtr = std::shared_ptr<Message>;

// A send of `tensor` to `peer`, or a receive into it from `peer`.
MessagePtr NewMessage(int peer, int64_t tag, const at::Tensor& tensor) {
  auto m = std::make_shared<Message>();
  m->peer = peer;
  m->tag = tag;
  m->tensor = tensor;
  m->dtype = static_cast<int64_t>(tensor.scalar_type());
  m->bytes = Bytes(tensor);
  return m;
}

class ShmEngine;

}  // namespace

// The engines of one progress domain (see the header), and the helper
// thread that moves their data while the calling thread is elsewhere.
class ShmProgressDomain {
 public:
  ~ShmProgressDomain() {
    {
      std::lock_guard<std::mutex> lock(mu);
      closing_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Held by every call into an engine of the domain, and by the helper
  // thread while it moves data.
  std::mutex mu;
  std::vector<ShmEngine*> engines;  // guarded by mu

  // With mu held: registers an engine; the first one starts the helper.
  void Add(ShmEngine* engine) {
    engines.push_back(engine);
    if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
  }

  // With mu held: an engine has new pending work for the helper.
  void WorkPosted() {
    work_posted_ = true;
    cv_.notify_one();
  }

 private:
  // While any engine has transfers pending, moves what it can every
  // millisecond (the calling thread, when it waits, moves data itself);
  // otherwise sleeps until work is posted.
  void Loop();

  std::condition_variable cv_;
  bool closing_ = false;      // guarded by mu
  bool work_posted_ = false;  // guarded by mu
  std::thread thread_;        // started by the first Add()
};

std::shared_ptr<ShmProgressDomain> NewShmProgressDomain() {
  return std::make_shared<ShmProgressDomain>();
}

namespace {

// The shared state of one group, used by the communicator and by its
// pending transfers (which may outlive neither, but hold it to be safe).
// Every entry point takes the domain's lock, which the calling thread and
// the domain's helper thread share; WaitUntil holds it while it sleeps (the
// waiting thread moves the whole domain's data meanwhile).
class ShmEngine {
 public:
  ShmEngine(std::unique_ptr<ShmSegment> segment, const Layout& layout, int rank,
            const ShmCommunicatorOptions& options)
      : segment_(std::move(segment)), layout_(layout), rank_(rank), options_(options),
        domain_(options.progress ? options.progress : NewShmProgressDomain()),
        outgoing_(layout.size), posted_(layout.size), unexpected_(layout.size),
        incoming_(layout.size), written_(layout.size, 0), read_(layout.size, 0) {
    std::lock_guard<std::mutex> lock(domain_->mu);
    domain_->Add(this);
  }

  ~ShmEngine() {
    std::lock_guard<std::mutex> lock(domain_->mu);
    MarkAborted();
    auto& engines = domain_->engines;
    engines.erase(std::remove(engines.begin(), engines.end(), this), engines.end());
  }

  // The public calls below lock the domain; the caller holds no lock.

  int rank() const { return rank_; }
  int size() const { return layout_.size; }
  const std::string& name() const { return options_.name; }
  bool check_shapes() const { return options_.check_shapes; }

  // FAILED_PRECONDITION after Abort() or an earlier failure.
  absl::Status Usable(const char* op) const {
    std::lock_guard<std::mutex> lock(domain_->mu);
    return UsableLocked(op);
  }

  MessagePtr PostSend(int peer, int64_t tag, const at::Tensor& tensor) {
    std::lock_guard<std::mutex> lock(domain_->mu);
    MessagePtr m = PostSendLocked(peer, tag, tensor);
    domain_->WorkPosted();
    return m;
  }

  absl::StatusOr<MessagePtr> PostRecv(int peer, int64_t tag, const at::Tensor& tensor) {
    std::lock_guard<std::mutex> lock(domain_->mu);
    auto m = PostRecvLocked(peer, tag, tensor);
    domain_->WorkPosted();
    return m;
  }

  absl::Status WaitUntil(const std::function<bool()>& done, const std::string& what) {
    std::lock_guard<std::mutex> lock(domain_->mu);
    return WaitUntilLocked(done, what);
  }

  void Abort() {
    std::lock_guard<std::mutex> lock(domain_->mu);
    aborted_ = true;
    MarkAborted();
  }

  // The helper thread's turn (domain mu held): moves what it can for posted
  // transfers; true while any transfer is pending.
  bool PumpInBackground() {
    if (aborted_ || !failure_.ok()) return false;
    Progress(/*buffer_unmatched=*/false);
    for (int p = 0; p < size(); ++p) {
      if (!outgoing_[p].empty() || !posted_[p].empty() || incoming_[p]) return true;
    }
    return false;
  }

 private:
  absl::Status UsableLocked(const char* op) const {
    if (aborted_) {
      return absl::FailedPreconditionError(
          absl::StrCat(op, " on group ", name(), ": the communicator was aborted"));
    }
    if (!failure_.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          op, " on group ", name(), ": an earlier operation failed (", failure_.message(),
          "); the group must be rebuilt"));
    }
    return absl::OkStatus();
  }

  MessagePtr PostSendLocked(int peer, int64_t tag, const at::Tensor& tensor) {
    MessagePtr m = NewMessage(peer, tag, tensor);
    if (m->bytes > static_cast<int64_t>(layout_.slot_bytes)) m->buffer = tensor.contiguous();
    outgoing_[peer].push_back(m);
    SendPieces(peer);  // small messages leave at once
    return m;
  }

  absl::StatusOr<MessagePtr> PostRecvLocked(int peer, int64_t tag, const at::Tensor& tensor) {
    // A message that came before its receive: claim the first with this tag.
    auto& early = unexpected_[peer];
    for (auto it = early.begin(); it != early.end(); ++it) {
      if ((*it)->tag != tag) continue;
      MessagePtr m = *it;
      early.erase(it);
      if (absl::Status s = Matches(*m, tensor); !s.ok()) return Fail(s);
      m->tensor = tensor;
      if (m->arrived) Finish(*m);
      return m;
    }
    MessagePtr m = NewMessage(peer, tag, tensor);
    posted_[peer].push_back(m);
    ReceivePieces(peer, /*buffer_unmatched=*/false);
    if (!failure_.ok()) return failure_;
    return m;
  }

  // Moves data until `done()` holds, on this engine and (so that no peer
  // waits on this rank forever) on every other engine of its domain.
  // Errors: DEADLINE_EXCEEDED after the timeout, UNAVAILABLE when a peer it
  // waits for exited or aborted, and any failure found on the way; each
  // makes this engine unusable.
  absl::Status WaitUntilLocked(const std::function<bool()>& done, const std::string& what) {
    if (done()) return absl::OkStatus();
    if (absl::Status s = UsableLocked(what.c_str()); !s.ok()) return s;
    const absl::Time deadline = absl::Now() + options_.timeout;
    absl::Time next_liveness_check = absl::Now() + kLivenessPeriod;
    const std::vector<ShmEngine*>& engines = domain_->engines;
    std::vector<std::atomic<uint32_t>*> bells;
    for (ShmEngine* e : engines) bells.push_back(&e->rank_state(e->rank_).doorbell);
    std::vector<uint32_t> rung(bells.size());
    const auto any_rung = [&] {
      for (size_t i = 0; i < bells.size(); ++i) {
        if (bells[i]->load(std::memory_order_relaxed) != rung[i]) return true;
      }
      return false;
    };
    while (true) {
      for (size_t i = 0; i < bells.size(); ++i) rung[i] = bells[i]->load();
      bool progressed = false;
      for (ShmEngine* e : engines) progressed |= e->Progress(/*buffer_unmatched=*/false);
      if (done()) return absl::OkStatus();
      // Stuck: take in messages nobody has asked for yet, so that a peer
      // blocked behind them can go on (buffered, like Gloo's eager sends).
      if (!progressed) {
        for (ShmEngine* e : engines) progressed |= e->Progress(/*buffer_unmatched=*/true);
      }
      if (!failure_.ok()) return failure_;
      if (done()) return absl::OkStatus();
      if (progressed) continue;
      if (absl::Status s = CheckPeers(what, absl::Now() >= next_liveness_check); !s.ok()) {
        return Fail(s);
      }
      const absl::Time now = absl::Now();
      if (now >= next_liveness_check) next_liveness_check = now + kLivenessPeriod;
      if (now >= deadline) {
        return Fail(absl::DeadlineExceededError(absl::StrCat(
            what, ": no data from the peers within ", absl::FormatDuration(options_.timeout),
            " (a peer hung or never made this call)")));
      }
      for (int i = 0; i < kSpins && !any_rung(); ++i) CpuRelax();
      if (any_rung()) continue;
      for (ShmEngine* e : engines) e->rank_state(e->rank_).sleeping.store(1);
      if (!any_rung()) FutexWaitAny(bells, rung, std::min(kLivenessPeriod, deadline - now));
      for (ShmEngine* e : engines) e->rank_state(e->rank_).sleeping.store(0);
    }
  }

  static constexpr absl::Duration kLivenessPeriod = absl::Milliseconds(200);
  static constexpr int kSpins = 2000;

  absl::Status Fail(absl::Status s) {
    if (failure_.ok()) failure_ = s;
    return s;
  }

  void MarkAborted() {
    if (marked_aborted_) return;
    marked_aborted_ = true;
    rank_state(rank_).aborted.store(1);
    for (int p = 0; p < size(); ++p) {
      if (p != rank_) Ring(p);
    }
  }

  RankState& rank_state(int r) const {
    return reinterpret_cast<RankState*>(static_cast<char*>(segment_->data()) + layout_.ranks_offset)[r];
  }
  ChannelHeader& channel(int src, int dst) const {
    return reinterpret_cast<ChannelHeader*>(static_cast<char*>(segment_->data()) +
                                            layout_.channels_offset)[layout_.channel(src, dst)];
  }
  char* slot_data(int src, int dst, uint64_t piece) const {
    return static_cast<char*>(segment_->data()) + layout_.data_offset +
           (layout_.channel(src, dst) * kSlots + piece % kSlots) * layout_.slot_stride;
  }

  void Ring(int peer) {
    RankState& s = rank_state(peer);
    s.doorbell.fetch_add(1);
    if (s.sleeping.load()) FutexWake(&s.doorbell);
  }

  bool Progress(bool buffer_unmatched) {
    bool progressed = false;
    for (int p = 0; p < size(); ++p) {
      if (p == rank_) continue;
      progressed |= SendPieces(p);
      progressed |= ReceivePieces(p, buffer_unmatched);
    }
    return progressed;
  }

  // Writes pieces of the oldest messages to `peer` into free slots.
  bool SendPieces(int peer) {
    bool progressed = false;
    ChannelHeader& ch = channel(rank_, peer);
    auto& queue = outgoing_[peer];
    while (!queue.empty()) {
      const uint64_t n = written_[peer];
      if (n - ch.read.value.load(std::memory_order_acquire) >= kSlots) break;
      Message& m = *queue.front();
      const int64_t piece = std::min<int64_t>(layout_.slot_bytes, m.bytes - m.moved);
      ch.slots[n % kSlots] = SlotHeader{m.tag, m.dtype, m.bytes, m.moved, piece};
      char* data = slot_data(rank_, peer, n);
      // An empty message has no storage (a null data pointer): nothing to copy.
      if (m.buffer.defined() && piece > 0) {
        std::memcpy(data, static_cast<const char*>(m.buffer.const_data_ptr()) + m.moved, piece);
      } else if (!m.buffer.defined() && piece > 0) {
        // The whole message in one piece: pack straight from the caller's strides.
        at::from_blob(data, m.tensor.sizes(), m.tensor.options()).copy_(m.tensor);
      }
      ch.written.value.store(n + 1, std::memory_order_release);
      written_[peer] = n + 1;
      Ring(peer);
      progressed = true;
      m.moved += piece;
      if (m.moved == m.bytes) {
        m.complete = true;
        m.tensor.reset();
        m.buffer.reset();
        queue.pop_front();
      }
    }
    return progressed;
  }

  // Reads the pieces `peer` has written, for posted receives (and, when
  // `buffer_unmatched`, into staging for receives not posted yet).
  bool ReceivePieces(int peer, bool buffer_unmatched) {
    bool progressed = false;
    ChannelHeader& ch = channel(peer, rank_);
    while (failure_.ok()) {
      const uint64_t n = read_[peer];
      if (n == ch.written.value.load(std::memory_order_acquire)) break;
      const SlotHeader h = ch.slots[n % kSlots];
      if (!incoming_[peer]) {
        if (h.offset != 0) {
          (void)Fail(absl::InternalError(absl::StrCat("group ", name(), ": the stream from rank ", peer,
                                                " is out of step")));
          break;
        }
        if (!StartMessage(peer, h, buffer_unmatched)) break;
      }
      Message& m = *incoming_[peer];
      const char* data = slot_data(peer, rank_, n);
      if (h.piece_bytes == m.bytes && m.tensor.defined() && !m.buffer.defined()) {
        if (m.bytes > 0) {
          m.tensor.copy_(at::from_blob(const_cast<char*>(data), m.tensor.sizes(), m.tensor.options()));
        }
      } else if (h.piece_bytes > 0) {  // an empty message has no storage to copy into
        char* into = m.buffer.defined() ? static_cast<char*>(m.buffer.data_ptr())
                                        : static_cast<char*>(m.tensor.data_ptr());
        std::memcpy(into + h.offset, data, h.piece_bytes);
      }
      m.moved += h.piece_bytes;
      ch.read.value.store(n + 1, std::memory_order_release);
      read_[peer] = n + 1;
      Ring(peer);
      progressed = true;
      if (m.moved == m.bytes) {
        m.arrived = true;
        if (m.tensor.defined()) Finish(m);
        incoming_[peer].reset();
      }
    }
    return progressed;
  }

  // Picks where the message whose first piece is `h` goes: the first posted
  // receive with its tag, else (if allowed) a staging buffer.
  bool StartMessage(int peer, const SlotHeader& h, bool buffer_unmatched) {
    auto& posted = posted_[peer];
    MessagePtr m;
    for (auto it = posted.begin(); it != posted.end(); ++it) {
      if ((*it)->tag == h.tag) {
        m = *it;
        posted.erase(it);
        break;
      }
    }
    if (m) {
      m->dtype = h.dtype;
      if (absl::Status s = Matches(*m, m->tensor, h); !s.ok()) {
        (void)Fail(s);
        return false;
      }
      // Several pieces into a strided target go through staging.
      if (h.message_bytes > h.piece_bytes && !m->tensor.is_contiguous()) {
        m->buffer = at::empty({h.message_bytes}, at::kByte);
      }
    } else {
      if (!buffer_unmatched) return false;
      m = std::make_shared<Message>();
      m->peer = peer;
      m->tag = h.tag;
      m->dtype = h.dtype;
      m->bytes = h.message_bytes;
      m->buffer = at::empty({h.message_bytes}, at::kByte);
      unexpected_[peer].push_back(m);
    }
    incoming_[peer] = m;
    return true;
  }

  // INVALID_ARGUMENT when a message does not fit the receive's tensor.
  absl::Status Matches(const Message& m, const at::Tensor& tensor) const {
    SlotHeader h{m.tag, m.dtype, m.bytes, 0, 0};
    return Matches(m, tensor, h);
  }
  absl::Status Matches(const Message& m, const at::Tensor& tensor, const SlotHeader& h) const {
    if (h.message_bytes == Bytes(tensor) && h.dtype == static_cast<int64_t>(tensor.scalar_type())) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "recv from rank ", m.peer, " of ", name(), ": the message holds ", h.message_bytes,
        " bytes of ", c10::toString(static_cast<at::ScalarType>(h.dtype)), ", the receiving tensor ",
        Bytes(tensor), " bytes of ", c10::toString(tensor.scalar_type())));
  }

  // Copies a staged message into its receive's tensor.
  static void Finish(Message& m) {
    if (m.buffer.defined()) {
      if (m.bytes > 0) {
        m.tensor.copy_(at::from_blob(m.buffer.data_ptr(), m.tensor.sizes(), m.tensor.options()));
      }
      m.buffer.reset();
    }
    m.tensor.reset();
    m.complete = true;
  }

  // The peers this rank waits for: UNAVAILABLE when one of them aborted or
  // (if `probe_liveness`) its process is gone.
  absl::Status CheckPeers(const std::string& what, bool probe_liveness) const {
    for (int p = 0; p < size(); ++p) {
      if (p == rank_) continue;
      bool awaited = !outgoing_[p].empty() || !posted_[p].empty() || incoming_[p] != nullptr;
      for (const MessagePtr& m : unexpected_[p]) awaited |= m->tensor.defined() && !m->arrived;
      if (!awaited) continue;
      if (rank_state(p).aborted.load()) {
        return absl::UnavailableError(absl::StrCat(what, ": rank ", p, " left the group"));
      }
      if (probe_liveness && !segment_->IsAlive(p)) {
        return absl::UnavailableError(absl::StrCat(what, ": rank ", p, " exited"));
      }
    }
    return absl::OkStatus();
  }

  std::unique_ptr<ShmSegment> segment_;
  const Layout layout_;
  const int rank_;
  const ShmCommunicatorOptions options_;
  const std::shared_ptr<ShmProgressDomain> domain_;
  std::vector<std::deque<MessagePtr>> outgoing_;    // per peer, oldest first
  std::vector<std::deque<MessagePtr>> posted_;      // receives waiting for their first piece
  std::vector<std::deque<MessagePtr>> unexpected_;  // messages that came before their receive
  std::vector<MessagePtr> incoming_;                // per peer: the message being read
  std::vector<uint64_t> written_;                   // pieces written to each peer
  std::vector<uint64_t> read_;                      // pieces read from each peer
  absl::Status failure_;
  bool aborted_ = false;
  bool marked_aborted_ = false;
};

}  // namespace

void ShmProgressDomain::Loop() {
  std::unique_lock<std::mutex> lock(mu);
  while (!closing_) {
    bool pending = false;
    for (ShmEngine* e : engines) pending |= e->PumpInBackground();
    if (pending) {
      cv_.wait_for(lock, std::chrono::milliseconds(1), [&] { return closing_; });
    } else {
      cv_.wait(lock, [&] { return closing_ || work_posted_; });
    }
    work_posted_ = false;
  }
}

namespace {

class ShmTransfer : public PendingTransfer {
 public:
  ShmTransfer(std::shared_ptr<ShmEngine> engine, MessagePtr message, std::string what)
      : engine_(std::move(engine)), message_(std::move(message)), what_(std::move(what)) {}
  ~ShmTransfer() override {
    if (!waited_) (void)Wait();
  }
  absl::Status Wait() override {
    if (waited_) return absl::FailedPreconditionError(what_ + ": Wait() called twice");
    waited_ = true;
    Message* m = message_.get();
    return engine_->WaitUntil([m] { return m->complete; }, what_);
  }

 private:
  std::shared_ptr<ShmEngine> engine_;
  MessagePtr message_;
  std::string what_;
  bool waited_ = false;
};

class ShmCommunicator : public Communicator {
 public:
  explicit ShmCommunicator(std::shared_ptr<ShmEngine> engine) : engine_(std::move(engine)) {}
  ~ShmCommunicator() override = default;

  int rank() const override { return engine_->rank(); }
  int size() const override { return engine_->size(); }
  const std::string& name() const override { return engine_->name(); }
  const char* backend() const override { return "shm"; }

  absl::Status AllReduce(at::Tensor& tensor, ReduceOp op) override {
    if (absl::Status s = Usable("all_reduce", tensor); !s.ok()) return s;
    if (absl::Status s = CheckReducible(tensor); !s.ok()) return s;
    if (absl::Status s = CheckShapes("all_reduce", tensor); !s.ok()) return s;
    std::vector<at::Tensor> parts(size());
    std::vector<Transfer> sends, recvs;
    for (int p = 0; p < size(); ++p) {
      if (p == rank()) {
        parts[p] = tensor;
        continue;
      }
      parts[p] = at::empty(tensor.sizes(), tensor.options());
      sends.push_back({p, tensor});
      recvs.push_back({p, parts[p]});
    }
    if (absl::Status s = Exchange("all_reduce", sends, recvs); !s.ok()) return s;
    // Rank order on every rank: identical bits everywhere. Half types add in f32.
    const bool upcast = tensor.scalar_type() == at::kHalf || tensor.scalar_type() == at::kBFloat16;
    at::Tensor acc = upcast ? parts[0].to(at::kFloat) : parts[0].clone();
    for (int p = 1; p < size(); ++p) {
      if (op == ReduceOp::kSum) {
        acc.add_(parts[p]);
      } else {
        acc = at::maximum(acc, parts[p].to(acc.scalar_type()));
      }
    }
    tensor.copy_(acc);
    return absl::OkStatus();
  }

  absl::StatusOr<at::Tensor> AllGather(const at::Tensor& input, int64_t dim) override {
    if (absl::Status s = Usable("all_gather", input); !s.ok()) return s;
    if (absl::Status s = CheckDim("all_gather", name(), input, dim); !s.ok()) return s;
    if (absl::Status s = CheckShapes("all_gather", input); !s.ok()) return s;
    const int64_t d = at::maybe_wrap_dim(dim, input.dim());
    std::vector<int64_t> sizes = input.sizes().vec();
    const int64_t n = sizes[d];
    sizes[d] *= size();
    at::Tensor out = at::empty(sizes, input.options());
    if (absl::Status s = ExchangeInto("all_gather", out, d, n, [&](int) { return input; }); !s.ok()) {
      return s;
    }
    return out;
  }

  absl::StatusOr<at::Tensor> AllToAll(const at::Tensor& input, int64_t scatter_dim,
                                      int64_t gather_dim) override {
    if (absl::Status s = Usable("all_to_all", input); !s.ok()) return s;
    if (absl::Status s = CheckDim("all_to_all", name(), input, scatter_dim); !s.ok()) return s;
    if (absl::Status s = CheckDim("all_to_all", name(), input, gather_dim); !s.ok()) return s;
    if (absl::Status s = CheckShapes("all_to_all", input); !s.ok()) return s;
    const int64_t sd = at::maybe_wrap_dim(scatter_dim, input.dim());
    const int64_t gd = at::maybe_wrap_dim(gather_dim, input.dim());
    if (input.size(sd) % size() != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "all_to_all on group ", name(), ": dimension ", sd, " has size ", input.size(sd),
          ", which does not divide by the group size ", size()));
    }
    const int64_t chunk = input.size(sd) / size();
    std::vector<int64_t> sizes = input.sizes().vec();
    sizes[sd] = chunk;
    const int64_t n = sizes[gd];
    sizes[gd] *= size();
    at::Tensor out = at::empty(sizes, input.options());
    if (absl::Status s = ExchangeInto("all_to_all", out, gd, n,
                                      [&](int p) { return input.narrow(sd, p * chunk, chunk); });
        !s.ok()) {
      return s;
    }
    return out;
  }

  absl::Status Broadcast(at::Tensor& tensor, int root) override {
    if (absl::Status s = Usable("broadcast", tensor); !s.ok()) return s;
    if (absl::Status s = CheckPeer("broadcast", name(), root, size()); !s.ok()) return s;
    if (absl::Status s = CheckShapes("broadcast", tensor); !s.ok()) return s;
    std::vector<Transfer> sends, recvs;
    if (rank() == root) {
      for (int p = 0; p < size(); ++p) {
        if (p != root) sends.push_back({p, tensor});
      }
    } else {
      recvs.push_back({root, tensor});
    }
    return Exchange("broadcast", sends, recvs);
  }

  absl::StatusOr<std::unique_ptr<PendingTransfer>> Send(const at::Tensor& tensor, int dst,
                                                        int tag) override {
    if (absl::Status s = PointToPoint("send", tensor, dst, tag); !s.ok()) return s;
    MessagePtr m = engine_->PostSend(dst, tag, tensor);
    return std::unique_ptr<PendingTransfer>(
        new ShmTransfer(engine_, std::move(m), absl::StrCat("send to rank ", dst, " of ", name())));
  }

  absl::StatusOr<std::unique_ptr<PendingTransfer>> Recv(at::Tensor& tensor, int src,
                                                        int tag) override {
    if (absl::Status s = PointToPoint("recv", tensor, src, tag); !s.ok()) return s;
    auto m = engine_->PostRecv(src, tag, tensor);
    if (!m.ok()) return m.status();
    return std::unique_ptr<PendingTransfer>(new ShmTransfer(
        engine_, *std::move(m), absl::StrCat("recv from rank ", src, " of ", name())));
  }

  absl::Status Barrier() override {
    if (absl::Status s = Usable("barrier", at::Tensor()); !s.ok()) return s;
    std::vector<Transfer> sends, recvs;
    for (int p = 0; p < size(); ++p) {
      if (p == rank()) continue;
      sends.push_back({p, at::empty({0}, at::kByte)});
      recvs.push_back({p, at::empty({0}, at::kByte)});
    }
    return Exchange("barrier", sends, recvs);
  }

  void Abort() override { engine_->Abort(); }

 private:
  struct Transfer {
    int peer;
    at::Tensor tensor;
  };

  absl::Status Usable(const char* op, const at::Tensor& tensor) const {
    if (absl::Status s = engine_->Usable(op); !s.ok()) return s;
    return CheckCpu(op, name(), "shared-memory", tensor);
  }

  absl::Status PointToPoint(const char* op, const at::Tensor& tensor, int peer, int tag) const {
    if (absl::Status s = Usable(op, tensor); !s.ok()) return s;
    if (absl::Status s = CheckPeer(op, name(), peer, size()); !s.ok()) return s;
    if (peer == rank()) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, " on group ", name(), ": rank ", peer, " is this rank"));
    }
    if (tag < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, " on group ", name(), ": tag ", tag, " is negative"));
    }
    return absl::OkStatus();
  }

  // Sends `part_for(p)` to every rank p and receives rank p's part into
  // out.narrow(dim, p·n, n); this rank's own part is copied locally.
  absl::Status ExchangeInto(const char* op, at::Tensor& out, int64_t dim, int64_t n,
                            const std::function<at::Tensor(int)>& part_for) {
    std::vector<Transfer> sends, recvs;
    for (int p = 0; p < size(); ++p) {
      at::Tensor from_p = out.narrow(dim, p * n, n);
      if (p == rank()) {
        from_p.copy_(part_for(p));
      } else {
        sends.push_back({p, part_for(p)});
        recvs.push_back({p, from_p});
      }
    }
    return Exchange(op, sends, recvs);
  }

  // Posts every receive, then every send, and waits for all of them.
  absl::Status Exchange(const char* op, const std::vector<Transfer>& sends,
                        const std::vector<Transfer>& recvs) {
    std::vector<MessagePtr> all;
    for (const Transfer& t : recvs) {
      auto m = engine_->PostRecv(t.peer, kCollectiveTag, t.tensor);
      if (!m.ok()) return m.status();
      all.push_back(*std::move(m));
    }
    for (const Transfer& t : sends) all.push_back(engine_->PostSend(t.peer, kCollectiveTag, t.tensor));
    return engine_->WaitUntil(
        [&all] {
          return std::all_of(all.begin(), all.end(), [](const MessagePtr& m) { return m->complete; });
        },
        absl::StrCat(op, " on group ", name()));
  }

  absl::Status CheckShapes(const char* op, const at::Tensor& t) {
    if (!engine_->check_shapes() || size() == 1) return absl::OkStatus();
    at::Tensor meta = ShapeMeta(t);
    at::Tensor all = at::empty({size(), kShapeMetaSlots}, at::kLong);
    std::vector<Transfer> sends, recvs;
    for (int p = 0; p < size(); ++p) {
      if (p == rank()) {
        all[p].copy_(meta);
      } else {
        sends.push_back({p, meta});
        recvs.push_back({p, all[p]});
      }
    }
    if (absl::Status s = Exchange(absl::StrCat(op, " (shape check)").c_str(), sends, recvs); !s.ok()) {
      return s;
    }
    return CompareShapeMeta(all, meta, op, name(), rank());
  }

  std::shared_ptr<ShmEngine> engine_;
};

// "name cookie0 cookie1" as published in the store.
std::string SegmentKey(const std::string& name, const uint64_t cookie[2]) {
  return absl::StrCat(name, " ", cookie[0], " ", cookie[1]);
}

std::vector<uint8_t> ToBytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
std::string Text(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

// Maps the segment rank 0 published and checks that it is the one meant.
absl::StatusOr<std::unique_ptr<ShmSegment>> Attach(const std::string& published, const Layout& layout) {
  std::vector<std::string> f = absl::StrSplit(published, ' ');
  uint64_t cookie[2];
  if (f.size() != 3 || !absl::SimpleAtoi(f[1], &cookie[0]) || !absl::SimpleAtoi(f[2], &cookie[1])) {
    return absl::InternalError(absl::StrCat("malformed segment record '", published, "'"));
  }
  auto segment = ShmSegment::Open(f[0], layout.total);
  if (!segment.ok()) return segment.status();
  const auto* h = static_cast<const SegmentHeader*>((*segment)->data());
  if (h->magic != kMagic || h->cookie[0] != cookie[0] || h->cookie[1] != cookie[1] ||
      h->group_size != layout.size || h->slot_bytes != layout.slot_bytes) {
    return absl::FailedPreconditionError(absl::StrCat("segment ", f[0], " is not this group's"));
  }
  return segment;
}

}  // namespace

size_t DefaultShmSlotBytes(int group_size) {
  if (group_size < 2) return 256 << 10;
  const size_t budget = (size_t{16} << 20) / (static_cast<size_t>(group_size) * (group_size - 1));
  return RoundUp(std::clamp<size_t>(budget, 256 << 10, 4 << 20), kPage);
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateShmCommunicator(
    const c10::intrusive_ptr<c10d::Store>& store, int group_rank, int group_size,
    const ShmCommunicatorOptions& options, std::string* fallback_reason) {
  if (group_size < 1 || group_rank < 0 || group_rank >= group_size) {
    return absl::InvalidArgumentError(absl::StrCat("group ", options.name, ": rank ", group_rank,
                                                   " is outside [0, ", group_size, ")"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the collective timeout must be positive");
  }
  const size_t slot_bytes =
      options.slot_bytes > 0 ? RoundUp(options.slot_bytes, 64) : DefaultShmSlotBytes(group_size);
  const Layout layout = Layout::For(group_size, slot_bytes);
  const auto timeout = absl::ToChronoMilliseconds(options.timeout);
  std::unique_ptr<ShmSegment> segment;
  std::string decision;
  try {
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(absl::StrCat("shm/", options.name), store);
    std::string problem;  // why this rank cannot use the segment
    if (group_rank == 0) {
      auto created = ShmSegment::Create(layout.total);
      if (created.ok()) {
        segment = *std::move(created);
        char* base = static_cast<char*>(segment->data());
        auto* h = new (base) SegmentHeader{};
        std::random_device random;
        h->magic = kMagic;
        for (uint64_t& c : h->cookie) c = (static_cast<uint64_t>(random()) << 32) ^ random();
        h->group_size = group_size;
        h->slot_bytes = slot_bytes;
        for (int r = 0; r < group_size; ++r) new (base + layout.ranks_offset + r * sizeof(RankState)) RankState;
        for (size_t c = 0; c < layout.channels(); ++c) {
          new (base + layout.channels_offset + c * sizeof(ChannelHeader)) ChannelHeader;
        }
        prefixed->set("segment", ToBytes(SegmentKey(segment->name(), h->cookie)));
      } else {
        problem = std::string(created.status().message());
        prefixed->set("segment", ToBytes("-"));
      }
    } else {
      prefixed->wait({"segment"}, timeout);
      const std::string published = Text(prefixed->get("segment"));
      if (published == "-") {
        problem = "rank 0 could not create the segment";
      } else {
        auto attached = Attach(published, layout);
        if (attached.ok()) {
          segment = *std::move(attached);
        } else {
          problem = std::string(attached.status().message());
        }
      }
    }
    if (segment) {
      if (absl::Status s = segment->HoldLivenessLock(group_rank); !s.ok()) {
        problem = std::string(s.message());
      }
    }
    const std::string attached_key = absl::StrCat("attached/", group_rank);
    prefixed->set(attached_key, ToBytes(problem.empty() ? "ok" : problem));
    if (group_rank == 0) {
      decision = "shm";
      for (int r = 0; r < group_size && decision == "shm"; ++r) {
        const std::string key = absl::StrCat("attached/", r);
        prefixed->wait({key}, timeout);
        const std::string answer = Text(prefixed->get(key));
        if (answer != "ok") decision = absl::StrCat("rank ", r, ": ", answer);
      }
      prefixed->set("decision", ToBytes(decision));
    } else {
      prefixed->wait({"decision"}, timeout);
      decision = Text(prefixed->get("decision"));
    }
  } catch (const std::exception& e) {
    if (segment) segment->Unlink();  // nobody else may be left to
    std::string what = e.what();
    return absl::DeadlineExceededError(absl::StrCat("shared-memory group ", options.name,
                                                    " creation failed: ", what.substr(0, what.find('\n'))));
  }
  if (segment) segment->Unlink();  // every member has it open (or gave up)
  if (decision != "shm") {
    if (fallback_reason) *fallback_reason = decision;
    return std::unique_ptr<Communicator>();
  }
  auto engine = std::make_shared<ShmEngine>(std::move(segment), layout, group_rank, options);
  return std::unique_ptr<Communicator>(new ShmCommunicator(std::move(engine)));
}

}  // namespace ditserve::parallel
