// Times each transformer block of a Flux model directory on the CPU, one
// thread, serial attention: what a PipeFusion stage split has to balance
// (double-stream and single-stream blocks need not cost the same).
//   ditserve-bench-blocks --model DIR [--height 512 --width 512] [--text_tokens 512] [--repeats 5]
// Prints a Markdown table: block, kind, median seconds per full-image call.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "worker/families/flux/flux_components.h"
#include "worker/models/common/joint_attention.h"
#include "worker/models/flux/flow_match_scheduler.h"

ABSL_FLAG(std::string, model, "", "Flux diffusers directory");
ABSL_FLAG(int, height, 512, "Image height in pixels");
ABSL_FLAG(int, width, 512, "Image width in pixels");
ABSL_FLAG(int, text_tokens, 512, "T5 tokens");
ABSL_FLAG(int, repeats, 5, "Timed calls per block (the median is reported)");

namespace {

using namespace ditserve::worker;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  at::set_num_threads(1);
  const std::string dir = absl::GetFlag(FLAGS_model);
  const int T = absl::GetFlag(FLAGS_text_tokens), repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  auto config = families::LoadTransformerConfig(dir);
  if (dir.empty() || !config.ok() || T < 1 || absl::GetFlag(FLAGS_height) % 16 != 0 ||
      absl::GetFlag(FLAGS_width) % 16 != 0) {
    std::fprintf(stderr, "ditserve-bench-blocks: needs --model DIR (a Flux directory), sizes that are multiples "
                         "of 16 and --text_tokens >= 1\n");
    return 2;
  }
  at::NoGradGuard no_grad;
  const int64_t h = absl::GetFlag(FLAGS_height) / 16, w = absl::GetFlag(FLAGS_width) / 16;
  const int64_t dim = config->inner_dim();
  const int blocks = config->num_layers + config->num_single_layers;
  std::printf("%s: %d double + %d single blocks, hidden %lld, %lld image + %d text tokens, fp32, 1 thread, median of %d\n\n",
              dir.c_str(), config->num_layers, config->num_single_layers, static_cast<long long>(dim),
              static_cast<long long>(h * w), T, repeats);
  std::printf("| block | kind | seconds |\n| ---: | --- | ---: |\n");
  at::manual_seed(0);
  const at::Tensor x = at::randn({1, h * w, dim}), context = at::randn({1, T, dim});
  double sums[2] = {0, 0};
  int counts[2] = {0, 0};
  for (int b = 0; b < blocks; ++b) {
    flux::FluxPart part;
    part.first_block = b;
    part.end_block = b + 1;
    part.embedders = part.head = false;
    auto model = families::LoadTransformer(dir, *config, at::kFloat, c10::Device(c10::kCPU), part);
    if (!model.ok()) {
      std::fprintf(stderr, "ditserve-bench-blocks: %s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    const flux::FluxConditioning conditioning = (*model)->Condition(
        (*model)->TimeEmbedding(at::full({1}, 0.5), config->guidance_embeds ? at::full({1}, 3.5) : at::Tensor(),
                                at::randn({1, config->pooled_projection_dim})));
    const flux::FluxRopeTables rope = (*model)->Rope(at::zeros({T, 3}), flux::LatentImageIds(h * 2, w * 2),
                                                     c10::Device(c10::kCPU));
    models::SerialJointAttention attention;
    std::vector<double> times;
    for (int i = 0; i < repeats + 1; ++i) {  // the first call warms up
      flux::FluxHidden hidden{context, x};
      const auto start = std::chrono::steady_clock::now();
      if (absl::Status s = (*model)->RunBlocks(hidden, conditioning, rope, attention); !s.ok()) {
        std::fprintf(stderr, "ditserve-bench-blocks: %s\n", std::string(s.message()).c_str());
        return 1;
      }
      if (i > 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    const bool single = b >= config->num_layers;
    const double t = Median(times);
    sums[single] += t;
    ++counts[single];
    std::printf("| %d | %s | %.3f |\n", b, single ? "single-stream" : "double-stream", t);
  }
  if (counts[0] > 0 && counts[1] > 0) {
    std::printf("\nmean double-stream %.3f s, single-stream %.3f s: ratio %.2f\n", sums[0] / counts[0],
                sums[1] / counts[1], (sums[0] / counts[0]) / (sums[1] / counts[1]));
  }
  return 0;
}
