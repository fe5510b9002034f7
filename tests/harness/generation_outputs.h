#pragma once

// Reading what ditserve-run writes (image-NNN.png, and with --save_latents
// image-NNN.latents.safetensors) and comparing two runs' outputs: the
// parallel-against-serial checks of the end-to-end generation tests.

#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace ditserve::testing {

struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // empty when the file could not be read
};
RgbImage ReadPng(const std::string& path);

// The "latents" tensor of a --save_latents file (undefined, with a test
// failure recorded, when it cannot be read).
at::Tensor ReadLatents(const std::string& path);

struct Comparison {
  double latent_max_abs = 0;
  int differing_values = 0;  // uint8 channel values that differ
  int max_value_diff = 0;
  double psnr = INFINITY;
};
// Image `index` of the run in `dir` against the same image of the run in
// `reference_dir`: latents and PNG. Records a test failure when either is
// missing or the shapes differ.
Comparison CompareRuns(const std::string& dir, const std::string& reference_dir, int index);

// Images 0 … images-1 of the run `name` in `dir` against the serial run in
// `serial_dir`, for methods that compute the serial result up to float
// rounding: latents within 1e-4 (seen: ~5e-7), uint8 values at most 1 apart
// where a rounding difference moves one across a .5 boundary, at most 25 of
// them (seen: 0–3). Prints each comparison; records failures.
// `latent_scale` multiplies the latent bound for latents far from unit size
// (a random DDPM-trained model's final latents reach hundreds, where float32
// rounding alone is ~1e-5 per operation): pass the serial latents' largest
// magnitude there, 1 elsewhere.
void ExpectSerialResult(const std::string& name, const std::string& dir, const std::string& serial_dir, int images,
                        double latent_scale = 1.0);
// The largest |value| of image `index`'s saved latents in `dir`.
double MaxAbsLatent(const std::string& dir, int index);

}  // namespace ditserve::testing
