#include "client/generate_command.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "ditserve/v1/generation.grpc.pb.h"
#include "proto/grpc_code_names.h"

namespace ditserve::client {
namespace {

const char* FormatName(v1::ImageFormat f) {
  switch (f) {
    case v1::IMAGE_FORMAT_JPEG: return "jpeg";
    case v1::IMAGE_FORMAT_WEBP: return "webp";
    default: return "png";
  }
}

void DrawBar(int step, int total, double elapsed) {
  const int width = 30;
  const int filled = total > 0 ? step * width / total : 0;
  std::fprintf(stderr, "\r[%s%s] step %d/%d  %.1f s", std::string(filled, '#').c_str(),
               std::string(width - filled, '.').c_str(), step, total, elapsed);
  std::fflush(stderr);
}

}  // namespace

std::string ImagePath(const std::string& output, int index, int count) {
  if (count == 1) return output;
  const size_t slash = output.rfind('/');
  const size_t dot = output.rfind('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) {
    return absl::StrCat(output, "_", index);
  }
  return absl::StrCat(output.substr(0, dot), "_", index, output.substr(dot));
}

int RunGenerate(const std::shared_ptr<grpc::Channel>& channel, const v1::GenerateRequest& request,
                const GenerateOptions& options) {
  auto stub = v1::GenerationService::NewStub(channel);
  grpc::ClientContext context;
  if (options.deadline_s > 0) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(options.deadline_s)));
  }
  auto stream = stub->GenerateStream(&context, request);
  v1::GenerateStreamResponse message;
  v1::GenerateResponse result;
  bool have_result = false, drew = false;
  while (stream->Read(&message)) {
    if (message.has_progress()) {
      if (options.progress) {
        DrawBar(message.progress().step(), message.progress().total(), message.progress().elapsed_s());
        drew = true;
      }
    } else if (message.has_result()) {
      result = std::move(*message.mutable_result());
      have_result = true;
    }
  }
  if (drew) std::fprintf(stderr, "\n");
  const grpc::Status status = stream->Finish();
  if (!status.ok()) {
    std::fprintf(stderr, "ditserve-client: %s: %s\n", proto::CodeName(status.error_code()).c_str(),
                 status.error_message().c_str());
    return 1;
  }
  if (!have_result) {
    std::fprintf(stderr, "ditserve-client: the stream ended without a result\n");
    return 1;
  }
  const int count = result.images_size();
  for (int i = 0; i < count; ++i) {
    const v1::Image& image = result.images(i);
    const std::string path = ImagePath(options.output, i, count);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(image.data().data(), static_cast<std::streamsize>(image.data().size()));
    if (!out) {
      std::fprintf(stderr, "ditserve-client: cannot write %s\n", path.c_str());
      return 1;
    }
    std::printf("wrote %s (%dx%d %s, %zu bytes, seed %llu)\n", path.c_str(), image.width(),
                image.height(), FormatName(image.format()), image.data().size(),
                static_cast<unsigned long long>(image.seed()));
  }
  const v1::Timings& t = result.timings();
  std::printf(
      "timings: queued %.3f s, text encoding %.3f s, denoising %.3f s, vae %.3f s, encoding "
      "%.3f s, total %.3f s (batch of %d); steps: %d computed, %d cached\n",
      t.queued_s(), t.text_encoding_s(), t.denoising_s(), t.vae_s(), t.encoding_s(), t.total_s(),
      t.batch_size(), t.computed_steps(), t.cached_steps());
  return 0;
}

}  // namespace ditserve::client
