#include "parallel/gloo_communicator.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "parallel/communicator_checks.h"

namespace ditserve::parallel {
namespace {

// Gloo moves bytes only for the dtypes it knows (no int16, and bfloat16
// not everywhere): bfloat16 travels as float16 and bool as uint8, views of
// the same width whose bits are copied, never converted. Reductions upcast
// instead (see AllReduce).
at::Tensor WireView(const at::Tensor& contiguous) {
  switch (contiguous.scalar_type()) {
    case at::kBFloat16:
      return contiguous.view(at::kHalf);
    case at::kBool:
      return contiguous.view(at::kByte);
    default:
      return contiguous;
  }
}

absl::Status ErrorFrom(const std::string& op, const std::string& group, const std::exception& e) {
  std::string what = e.what();
  what = what.substr(0, what.find('\n'));
  const std::string message = absl::StrCat("gloo ", op, " on group ", group, " failed: ", what);
  if (absl::StrContains(what, "imed out") || absl::StrContains(what, "imeout")) {
    return absl::DeadlineExceededError(message);
  }
  return absl::UnavailableError(message);
}

class GlooTransfer : public PendingTransfer {
 public:
  GlooTransfer(c10::intrusive_ptr<c10d::Work> work, at::Tensor wire, at::Tensor target,
               std::chrono::milliseconds timeout, std::string what, bool* failed)
      : work_(std::move(work)), wire_(std::move(wire)), target_(std::move(target)),
        timeout_(timeout), what_(std::move(what)), failed_(failed) {}
  ~GlooTransfer() override {
    if (!waited_) (void)Wait();
  }
  absl::Status Wait() override {
    if (waited_) return absl::FailedPreconditionError(what_ + ": Wait() called twice");
    waited_ = true;
    try {
      work_->wait(timeout_);
    } catch (const std::exception& e) {
      *failed_ = true;
      return ErrorFrom(what_, "", e);
    }
    // A receive into a staging buffer: copy into the caller's view.
    if (target_.defined()) target_.copy_(wire_.view(target_.scalar_type()).view(target_.sizes()));
    return absl::OkStatus();
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  at::Tensor wire_;
  at::Tensor target_;
  std::chrono::milliseconds timeout_;
  std::string what_;
  bool* failed_;
  bool waited_ = false;
};

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(c10::intrusive_ptr<c10d::ProcessGroupGloo> pg, int rank, int size,
                   GlooCommunicatorOptions options)
      : pg_(std::move(pg)), rank_(rank), size_(size), options_(std::move(options)),
        timeout_(absl::ToChronoMilliseconds(options_.timeout)) {}
  ~GlooCommunicator() override = default;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return options_.name; }
  const char* backend() const override { return "gloo"; }

  absl::Status AllReduce(at::Tensor& tensor, ReduceOp op) override {
    if (absl::Status s = Usable("all_reduce", tensor); !s.ok()) return s;
    if (absl::Status s = CheckReducible(tensor); !s.ok()) return s;
    if (absl::Status s = CheckShapes("all_reduce", tensor); !s.ok()) return s;
    const bool upcast = tensor.scalar_type() == at::kHalf || tensor.scalar_type() == at::kBFloat16;
    at::Tensor work = upcast ? tensor.to(at::kFloat).contiguous() : tensor.contiguous();
    std::vector<at::Tensor> list{work};
    c10d::AllreduceOptions opts;
    opts.reduceOp = op == ReduceOp::kSum ? c10d::ReduceOp::SUM : c10d::ReduceOp::MAX;
    opts.timeout = timeout_;
    if (absl::Status s = Run("all_reduce", [&] { return pg_->allreduce(list, opts); }); !s.ok()) {
      return s;
    }
    if (!work.is_same(tensor)) tensor.copy_(work);
    return absl::OkStatus();
  }

  absl::StatusOr<at::Tensor> AllGather(const at::Tensor& input, int64_t dim) override {
    if (absl::Status s = Usable("all_gather", input); !s.ok()) return s;
    if (absl::Status s = CheckDim("all_gather", input, dim); !s.ok()) return s;
    if (absl::Status s = CheckShapes("all_gather", input); !s.ok()) return s;
    at::Tensor in = input.contiguous();
    std::vector<at::Tensor> outs;
    for (int i = 0; i < size_; ++i) outs.push_back(at::empty_like(in));
    std::vector<std::vector<at::Tensor>> out_lists{{}};
    for (auto& o : outs) out_lists[0].push_back(WireView(o));
    std::vector<at::Tensor> in_list{WireView(in)};
    if (absl::Status s = Run("all_gather", [&] { return pg_->allgather(out_lists, in_list); });
        !s.ok()) {
      return s;
    }
    return at::cat(outs, dim);
  }

  absl::StatusOr<at::Tensor> AllToAll(const at::Tensor& input, int64_t scatter_dim,
                                      int64_t gather_dim) override {
    if (absl::Status s = Usable("all_to_all", input); !s.ok()) return s;
    if (absl::Status s = CheckDim("all_to_all", input, scatter_dim); !s.ok()) return s;
    if (absl::Status s = CheckDim("all_to_all", input, gather_dim); !s.ok()) return s;
    if (absl::Status s = CheckShapes("all_to_all", input); !s.ok()) return s;
    const int64_t sd = at::maybe_wrap_dim(scatter_dim, input.dim());
    if (input.size(sd) % size_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "all_to_all on group ", name(), ": dimension ", sd, " has size ", input.size(sd),
          ", which does not divide by the group size ", size_));
    }
    // [P, chunk...]: row j goes to rank j; row j received came from rank j.
    at::Tensor send = at::stack(input.chunk(size_, sd), 0).contiguous();
    at::Tensor recv = at::empty_like(send);
    at::Tensor send_wire = WireView(send);
    at::Tensor recv_wire = WireView(recv);
    std::vector<int64_t> equal_splits;
    if (absl::Status s = Run("all_to_all", [&] {
          return pg_->alltoall_base(recv_wire, send_wire, equal_splits, equal_splits);
        });
        !s.ok()) {
      return s;
    }
    return at::cat(recv.unbind(0), gather_dim);
  }

  absl::Status Broadcast(at::Tensor& tensor, int root) override {
    if (absl::Status s = Usable("broadcast", tensor); !s.ok()) return s;
    if (absl::Status s = CheckPeer("broadcast", root); !s.ok()) return s;
    if (absl::Status s = CheckShapes("broadcast", tensor); !s.ok()) return s;
    at::Tensor work = tensor.contiguous();
    std::vector<at::Tensor> list{WireView(work)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = timeout_;
    if (absl::Status s = Run("broadcast", [&] { return pg_->broadcast(list, opts); }); !s.ok()) {
      return s;
    }
    if (!work.is_same(tensor)) tensor.copy_(work);
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<PendingTransfer>> Send(const at::Tensor& tensor, int dst,
                                                        int tag) override {
    if (absl::Status s = Usable("send", tensor); !s.ok()) return s;
    if (absl::Status s = CheckPeer("send", dst); !s.ok()) return s;
    at::Tensor wire = WireView(tensor.contiguous());
    std::vector<at::Tensor> list{wire};
    const std::string what = absl::StrCat("send to rank ", dst, " of ", name());
    try {
      auto work = pg_->send(list, dst, tag);
      return std::unique_ptr<PendingTransfer>(
          new GlooTransfer(std::move(work), wire, at::Tensor(), timeout_, what, &failed_));
    } catch (const std::exception& e) {
      failed_ = true;
      return ErrorFrom("send", name(), e);
    }
  }

  absl::StatusOr<std::unique_ptr<PendingTransfer>> Recv(at::Tensor& tensor, int src,
                                                        int tag) override {
    if (absl::Status s = Usable("recv", tensor); !s.ok()) return s;
    if (absl::Status s = CheckPeer("recv", src); !s.ok()) return s;
    // Receive straight into the caller's storage when it is contiguous.
    const bool direct = tensor.is_contiguous();
    at::Tensor buffer = direct ? tensor : at::empty_like(tensor, at::MemoryFormat::Contiguous);
    at::Tensor wire = WireView(buffer);
    std::vector<at::Tensor> list{wire};
    const std::string what = absl::StrCat("recv from rank ", src, " of ", name());
    try {
      auto work = pg_->recv(list, src, tag);
      return std::unique_ptr<PendingTransfer>(new GlooTransfer(
          std::move(work), wire, direct ? at::Tensor() : tensor, timeout_, what, &failed_));
    } catch (const std::exception& e) {
      failed_ = true;
      return ErrorFrom("recv", name(), e);
    }
  }

  absl::Status Barrier() override {
    if (absl::Status s = Usable("barrier", at::Tensor()); !s.ok()) return s;
    // An all-reduce rather than c10d's barrier: it honours the timeout.
    at::Tensor one = at::ones({1}, at::kInt);
    std::vector<at::Tensor> list{one};
    c10d::AllreduceOptions opts;
    opts.timeout = timeout_;
    return Run("barrier", [&] { return pg_->allreduce(list, opts); });
  }

  void Abort() override {
    aborted_ = true;
    // Dropping the process group joins its worker threads; an operation
    // stuck on a hung peer ends by its own timeout first.
    pg_.reset();
  }

 private:
  absl::Status Usable(const char* op, const at::Tensor& tensor) const {
    if (aborted_ || !pg_) {
      return absl::FailedPreconditionError(
          absl::StrCat(op, " on group ", name(), ": the communicator was aborted"));
    }
    if (failed_) {
      return absl::FailedPreconditionError(absl::StrCat(
          op, " on group ", name(), ": an earlier operation failed; the group must be rebuilt"));
    }
    return CheckCpu(op, name(), "Gloo", tensor);
  }

  absl::Status CheckDim(const char* op, const at::Tensor& t, int64_t dim) const {
    return parallel::CheckDim(op, name(), t, dim);
  }
  absl::Status CheckPeer(const char* op, int peer) const {
    return parallel::CheckPeer(op, name(), peer, size_);
  }

  // Every rank learns every rank's shape and dtype; a difference fails the
  // call on all of them.
  absl::Status CheckShapes(const char* op, const at::Tensor& t) {
    if (!options_.check_shapes || size_ == 1) return absl::OkStatus();
    at::Tensor meta = ShapeMeta(t);
    std::vector<at::Tensor> outs;
    for (int i = 0; i < size_; ++i) outs.push_back(at::empty_like(meta));
    std::vector<std::vector<at::Tensor>> out_lists{outs};
    std::vector<at::Tensor> in_list{meta};
    if (absl::Status s = Run(absl::StrCat(op, " (shape check)"),
                             [&] { return pg_->allgather(out_lists, in_list); });
        !s.ok()) {
      return s;
    }
    return CompareShapeMeta(at::stack(out_lists[0]), meta, op, name(), rank_);
  }

  template <typename F>
  absl::Status Run(const std::string& op, F&& start) {
    try {
      c10::intrusive_ptr<c10d::Work> work = start();
      work->wait(timeout_);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      failed_ = true;
      return ErrorFrom(op, name(), e);
    }
  }

  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  const int rank_;
  const int size_;
  const GlooCommunicatorOptions options_;
  const std::chrono::milliseconds timeout_;
  bool aborted_ = false;
  bool failed_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const c10::intrusive_ptr<c10d::Store>& store, int group_rank, int group_size,
    const GlooCommunicatorOptions& options) {
  if (group_size < 1 || group_rank < 0 || group_rank >= group_size) {
    return absl::InvalidArgumentError(absl::StrCat("group ", options.name, ": rank ", group_rank,
                                                   " is outside [0, ", group_size, ")"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the collective timeout must be positive");
  }
  try {
    auto pg_options = c10d::ProcessGroupGloo::Options::create(absl::ToChronoMilliseconds(options.timeout));
    if (!options.interface.empty()) {
      pg_options->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForInterface(options.interface));
    } else if (!options.hostname.empty()) {
      pg_options->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForHostname(options.hostname));
    } else if (options.loopback_only) {
      pg_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      pg_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    // Collectives are awaited one at a time; one worker thread per group
    // keeps a many-rank gang on a small machine from oversubscribing it.
    pg_options->threads = 1;
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(absl::StrCat("gloo/", options.name), store);
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, group_rank, group_size,
                                                          pg_options);
    return std::unique_ptr<Communicator>(
        new GlooCommunicator(std::move(pg), group_rank, group_size, options));
  } catch (const std::exception& e) {
    return ErrorFrom("group creation", options.name, e);
  }
}

}  // namespace ditserve::parallel
