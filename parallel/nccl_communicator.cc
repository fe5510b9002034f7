#include "parallel/nccl_communicator.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "parallel/communicator_checks.h"

namespace ditserve::parallel {
namespace {


absl::StatusOr<ncclDataType_t> NcclType(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    case at::kBool: return ncclUint8;
    default:
      return absl::InvalidArgumentError(absl::StrCat("NCCL has no type for ", c10::toString(t)));
  }
}

class NcclCommunicator;

class NcclTransfer : public PendingTransfer {
 public:
  NcclTransfer(NcclCommunicator* comm, cudaEvent_t event, at::Tensor keep, at::Tensor staging,
               at::Tensor target, std::string what)
      : comm_(comm), event_(event), keep_(std::move(keep)), staging_(std::move(staging)),
        target_(std::move(target)), what_(std::move(what)) {}
  ~NcclTransfer() override {
    if (!waited_) (void)Wait();
    cudaEventDestroy(event_);
  }
  absl::Status Wait() override;

 private:
  NcclCommunicator* comm_;
  cudaEvent_t event_;
  at::Tensor keep_, staging_, target_;
  std::string what_;
  bool waited_ = false;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int rank, int size, NcclCommunicatorOptions options)
      : comm_(comm), rank_(rank), size_(size), options_(std::move(options)) {}
  ~NcclCommunicator() override {
    if (!aborted_) {
      if (failed_) {
        ncclCommAbort(comm_);
      } else {
        ncclCommDestroy(comm_);
      }
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return options_.name; }
  const char* backend() const override { return "nccl"; }

  absl::Status AllReduce(at::Tensor& tensor, ReduceOp op) override {
    if (absl::Status s = Usable("all_reduce", tensor); !s.ok()) return s;
    if (absl::Status s = CheckReducible(tensor); !s.ok()) return s;
    if (absl::Status s = CheckShapes("all_reduce", tensor); !s.ok()) return s;
    const bool upcast = tensor.scalar_type() == at::kHalf || tensor.scalar_type() == at::kBFloat16;
    at::Tensor work = upcast ? tensor.to(at::kFloat).contiguous() : tensor.contiguous();
    auto type = NcclType(work.scalar_type());
    if (!type.ok()) return type.status();
    const ncclRedOp_t red = op == ReduceOp::kSum ? ncclSum : ncclMax;
    if (absl::Status s = Issue("all_reduce", [&](cudaStream_t st) {
          return ncclAllReduce(work.data_ptr(), work.data_ptr(), work.numel(), *type, red, comm_, st);
        });
        !s.ok()) {
      return s;
    }
    if (!work.is_same(tensor)) tensor.copy_(work);
    return Complete("all_reduce");
  }

  absl::StatusOr<at::Tensor> AllGather(const at::Tensor& input, int64_t dim) override {
    if (absl::Status s = Usable("all_gather", input); !s.ok()) return s;
    if (input.dim() == 0 || dim < -input.dim() || dim >= input.dim()) {
      return absl::InvalidArgumentError(absl::StrCat("all_gather on group ", name(),
                                                     ": dimension ", dim, " is out of range"));
    }
    if (absl::Status s = CheckShapes("all_gather", input); !s.ok()) return s;
    at::Tensor in = input.contiguous();
    std::vector<int64_t> shape{size_};
    for (int64_t s : in.sizes()) shape.push_back(s);
    at::Tensor out = at::empty(shape, in.options());
    auto type = NcclType(in.scalar_type());
    if (!type.ok()) return type.status();
    if (absl::Status s = Issue("all_gather", [&](cudaStream_t st) {
          return ncclAllGather(in.data_ptr(), out.data_ptr(), in.numel(), *type, comm_, st);
        });
        !s.ok()) {
      return s;
    }
    if (absl::Status s = Complete("all_gather"); !s.ok()) return s;
    return at::cat(out.unbind(0), dim);
  }

  absl::StatusOr<at::Tensor> AllToAll(const at::Tensor& input, int64_t scatter_dim,
                                      int64_t gather_dim) override {
    if (absl::Status s = Usable("all_to_all", input); !s.ok()) return s;
    for (int64_t d : {scatter_dim, gather_dim}) {
      if (input.dim() == 0 || d < -input.dim() || d >= input.dim()) {
        return absl::InvalidArgumentError(absl::StrCat("all_to_all on group ", name(),
                                                       ": dimension ", d, " is out of range"));
      }
    }
    if (absl::Status s = CheckShapes("all_to_all", input); !s.ok()) return s;
    const int64_t sd = at::maybe_wrap_dim(scatter_dim, input.dim());
    if (input.size(sd) % size_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "all_to_all on group ", name(), ": dimension ", sd, " has size ", input.size(sd),
          ", which does not divide by the group size ", size_));
    }
    at::Tensor send = at::stack(input.chunk(size_, sd), 0).contiguous();
    at::Tensor recv = at::empty_like(send);
    auto type = NcclType(send.scalar_type());
    if (!type.ok()) return type.status();
    const int64_t count = send.numel() / size_;
    const size_t bytes = static_cast<size_t>(count) * send.element_size();
    if (absl::Status s = Issue("all_to_all", [&](cudaStream_t st) {
          ncclResult_t r = ncclGroupStart();
          for (int j = 0; j < size_ && (r == ncclSuccess || r == ncclInProgress); ++j) {
            r = ncclSend(static_cast<char*>(send.data_ptr()) + j * bytes, count, *type, j, comm_, st);
            if (r == ncclSuccess || r == ncclInProgress) {
              r = ncclRecv(static_cast<char*>(recv.data_ptr()) + j * bytes, count, *type, j, comm_, st);
            }
          }
          const ncclResult_t end = ncclGroupEnd();
          return (r == ncclSuccess || r == ncclInProgress) ? end : r;
        });
        !s.ok()) {
      return s;
    }
    if (absl::Status s = Complete("all_to_all"); !s.ok()) return s;
    return at::cat(recv.unbind(0), gather_dim);
  }

  absl::Status Broadcast(at::Tensor& tensor, int root) override {
    if (absl::Status s = Usable("broadcast", tensor); !s.ok()) return s;
    if (root < 0 || root >= size_) {
      return absl::InvalidArgumentError(absl::StrCat("broadcast on group ", name(), ": rank ",
                                                     root, " is outside [0, ", size_, ")"));
    }
    if (absl::Status s = CheckShapes("broadcast", tensor); !s.ok()) return s;
    at::Tensor work = tensor.contiguous();
    auto type = NcclType(work.scalar_type());
    if (!type.ok()) return type.status();
    if (absl::Status s = Issue("broadcast", [&](cudaStream_t st) {
          return ncclBroadcast(work.data_ptr(), work.data_ptr(), work.numel(), *type, root, comm_, st);
        });
        !s.ok()) {
      return s;
    }
    if (!work.is_same(tensor)) tensor.copy_(work);
    return Complete("broadcast");
  }

  absl::StatusOr<std::unique_ptr<PendingTransfer>> Send(const at::Tensor& tensor, int dst,
                                                        int tag) override {
    if (absl::Status s = Usable("send", tensor); !s.ok()) return s;
    if (dst < 0 || dst >= size_) return absl::InvalidArgumentError("send: peer out of range");
    at::Tensor buf = tensor.contiguous();
    auto type = NcclType(buf.scalar_type());
    if (!type.ok()) return type.status();
    if (absl::Status s = Issue("send", [&](cudaStream_t st) {
          return ncclSend(buf.data_ptr(), buf.numel(), *type, dst, comm_, st);
        });
        !s.ok()) {
      return s;
    }
    return MakeTransfer(buf, at::Tensor(), at::Tensor(), absl::StrCat("send to rank ", dst));
  }

  absl::StatusOr<std::unique_ptr<PendingTransfer>> Recv(at::Tensor& tensor, int src,
                                                        int tag) override {
    if (absl::Status s = Usable("recv", tensor); !s.ok()) return s;
    if (src < 0 || src >= size_) return absl::InvalidArgumentError("recv: peer out of range");
    const bool direct = tensor.is_contiguous();
    at::Tensor buf = direct ? tensor : at::empty_like(tensor, at::MemoryFormat::Contiguous);
    auto type = NcclType(buf.scalar_type());
    if (!type.ok()) return type.status();
    if (absl::Status s = Issue("recv", [&](cudaStream_t st) {
          return ncclRecv(buf.data_ptr(), buf.numel(), *type, src, comm_, st);
        });
        !s.ok()) {
      return s;
    }
    return MakeTransfer(buf, direct ? at::Tensor() : buf, direct ? at::Tensor() : tensor,
                        absl::StrCat("recv from rank ", src));
  }

  absl::Status Barrier() override {
    at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA, options_.device_index));
    if (absl::Status s = Usable("barrier", one); !s.ok()) return s;
    if (absl::Status s = Issue("barrier", [&](cudaStream_t st) {
          return ncclAllReduce(one.data_ptr(), one.data_ptr(), 1, ncclInt32, ncclSum, comm_, st);
        });
        !s.ok()) {
      return s;
    }
    return Complete("barrier");
  }

  void Abort() override {
    if (aborted_) return;
    aborted_ = true;
    ncclCommAbort(comm_);
  }

  // Waits for `event` (recorded after an operation) or an asynchronous
  // NCCL error or the deadline; on error or timeout the communicator aborts.
  absl::Status WaitEvent(cudaEvent_t event, const std::string& what) {
    const absl::Time deadline = absl::Now() + options_.timeout;
    while (true) {
      const cudaError_t q = cudaEventQuery(event);
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) {
        failed_ = true;
        return absl::InternalError(absl::StrCat(what, " on group ", name(),
                                                ": CUDA error ", cudaGetErrorString(q)));
      }
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        failed_ = true;
        Abort();
        return absl::UnavailableError(absl::StrCat(what, " on group ", name(), " failed: ",
                                                   ncclGetErrorString(async)));
      }
      if (absl::Now() >= deadline) {
        failed_ = true;
        Abort();
        return absl::DeadlineExceededError(absl::StrCat(
            what, " on group ", name(), " did not complete within ",
            absl::FormatDuration(options_.timeout), "; the communicator was aborted"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  absl::Status Usable(const char* op, const at::Tensor& tensor) const {
    if (aborted_) {
      return absl::FailedPreconditionError(
          absl::StrCat(op, " on group ", name(), ": the communicator was aborted"));
    }
    if (failed_) {
      return absl::FailedPreconditionError(absl::StrCat(
          op, " on group ", name(), ": an earlier operation failed; the group must be rebuilt"));
    }
    if (tensor.defined() && !(tensor.is_cuda() && tensor.get_device() == options_.device_index)) {
      return absl::InvalidArgumentError(absl::StrCat(
          op, " on group ", name(), ": the NCCL communicator takes tensors on cuda:",
          options_.device_index, ", got ", tensor.device().str()));
    }
    return absl::OkStatus();
  }

  cudaStream_t Stream() const {
    return c10::cuda::getCurrentCUDAStream(options_.device_index).stream();
  }

  // Enqueues an operation; with a non-blocking communicator the call may
  // return ncclInProgress, in which case we poll until it is enqueued.
  template <typename F>
  absl::Status Issue(const char* op, F&& enqueue) {
    c10::cuda::CUDAGuard guard(options_.device_index);
    ncclResult_t r = enqueue(Stream());
    const absl::Time deadline = absl::Now() + options_.timeout;
    while (r == ncclInProgress) {
      if (absl::Now() >= deadline) {
        failed_ = true;
        Abort();
        return absl::DeadlineExceededError(absl::StrCat(op, " on group ", name(),
                                                        " could not be enqueued in time"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      ncclCommGetAsyncError(comm_, &r);
    }
    if (r != ncclSuccess) {
      failed_ = true;
      return absl::UnavailableError(
          absl::StrCat(op, " on group ", name(), " failed: ", ncclGetErrorString(r)));
    }
    return absl::OkStatus();
  }

  absl::Status Complete(const char* op) {
    cudaEvent_t event;
    cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
    cudaEventRecord(event, Stream());
    absl::Status s = WaitEvent(event, op);
    cudaEventDestroy(event);
    return s;
  }

  absl::StatusOr<std::unique_ptr<PendingTransfer>> MakeTransfer(at::Tensor keep, at::Tensor staging,
                                                                at::Tensor target, std::string what) {
    cudaEvent_t event;
    cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
    cudaEventRecord(event, Stream());
    return std::unique_ptr<PendingTransfer>(
        new NcclTransfer(this, event, std::move(keep), std::move(staging), std::move(target),
                         std::move(what)));
  }

  absl::Status CheckShapes(const char* op, const at::Tensor& t) {
    if (!options_.check_shapes || size_ == 1) return absl::OkStatus();
    const at::Tensor meta = ShapeMeta(t);
    at::Tensor dev = meta.to(at::Device(at::kCUDA, options_.device_index));
    at::Tensor all = at::empty({size_, kShapeMetaSlots}, dev.options());
    if (absl::Status s = Issue(op, [&](cudaStream_t st) {
          return ncclAllGather(dev.data_ptr(), all.data_ptr(), kShapeMetaSlots, ncclInt64, comm_, st);
        });
        !s.ok()) {
      return s;
    }
    if (absl::Status s = Complete(op); !s.ok()) return s;
    return CompareShapeMeta(all.cpu(), meta, op, name(), rank_);
  }

  ncclComm_t comm_;
  const int rank_;
  const int size_;
  const NcclCommunicatorOptions options_;
  bool aborted_ = false;
  bool failed_ = false;
};

absl::Status NcclTransfer::Wait() {
  if (waited_) return absl::FailedPreconditionError(what_ + ": Wait() called twice");
  waited_ = true;
  absl::Status s = comm_->WaitEvent(event_, what_);
  if (s.ok() && target_.defined()) target_.copy_(staging_);
  return s;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const c10::intrusive_ptr<c10d::Store>& store, int group_rank, int group_size,
    const NcclCommunicatorOptions& options) {
  if (group_size < 1 || group_rank < 0 || group_rank >= group_size) {
    return absl::InvalidArgumentError(absl::StrCat("group ", options.name, ": rank ", group_rank,
                                                   " is outside [0, ", group_size, ")"));
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || options.device_index >= devices) {
    return absl::FailedPreconditionError(
        absl::StrCat("NCCL group ", options.name, ": CUDA device ", options.device_index,
                     " is not available (", devices, " devices)"));
  }
  c10::cuda::CUDAGuard guard(options.device_index);
  const std::string key = absl::StrCat("nccl/", options.name, "/unique_id");
  ncclUniqueId id;
  try {
    if (group_rank == 0) {
      ncclResult_t r = ncclGetUniqueId(&id);
      if (r != ncclSuccess) {
        return absl::UnavailableError(absl::StrCat("ncclGetUniqueId: ", ncclGetErrorString(r)));
      }
      std::vector<uint8_t> bytes(sizeof(id));
      std::memcpy(bytes.data(), &id, sizeof(id));
      store->set(key, bytes);
    } else {
      store->wait({key}, absl::ToChronoMilliseconds(options.timeout));
      std::vector<uint8_t> bytes = store->get(key);
      if (bytes.size() != sizeof(id)) return absl::InternalError("NCCL unique id has the wrong size");
      std::memcpy(&id, bytes.data(), sizeof(id));
    }
  } catch (const std::exception& e) {
    return absl::DeadlineExceededError(absl::StrCat("NCCL group ", options.name,
                                                    ": unique id exchange failed: ", e.what()));
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, group_size, id, group_rank, &config);
  const absl::Time deadline = absl::Now() + options.timeout;
  while (r == ncclInProgress) {
    if (absl::Now() >= deadline) {
      ncclCommAbort(comm);
      return absl::DeadlineExceededError(absl::StrCat(
          "NCCL group ", options.name, " did not form within ", absl::FormatDuration(options.timeout)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ncclCommGetAsyncError(comm, &r);
  }
  if (r != ncclSuccess) {
    if (comm != nullptr) ncclCommAbort(comm);
    return absl::UnavailableError(
        absl::StrCat("NCCL group ", options.name, ": ", ncclGetErrorString(r)));
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(comm, group_rank, group_size, options));
}

}  // namespace ditserve::parallel
