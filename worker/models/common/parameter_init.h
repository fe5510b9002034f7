#pragma once
// How a model's layers start out (torch-free, for the model factories'
// signatures).

namespace ditserve::worker::models {

enum class ParameterInit {
  // float32, initialised as torch::nn's layers are (kaiming-uniform weights):
  // for training and for random models.
  kTorchDefault,
  // Allocated in the run dtype with unspecified values, for a model whose
  // every parameter is loaded next (the loader refuses a missing one).
  kUninitialized,
};

}  // namespace ditserve::worker::models
