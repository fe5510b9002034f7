#pragma once

// `ditserve-client generate`: one GenerateStream call with a progress bar
// on stderr; writes the images and prints each seed and the timings.

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "ditserve/v1/generation.pb.h"

namespace ditserve::client {

struct GenerateOptions {
  std::string output;     // FILE, or FILE_i.ext per image when there are several
  double deadline_s = 0;  // 0: none
  bool progress = true;
};

// The path of image `index` of `count`: `output` itself when count is 1,
// else "stem_index.ext".
std::string ImagePath(const std::string& output, int index, int count);

// Returns the process exit status: 0, 1 (the server's error, printed).
int RunGenerate(const std::shared_ptr<grpc::Channel>& channel, const v1::GenerateRequest& request,
                const GenerateOptions& options);

}  // namespace ditserve::client
