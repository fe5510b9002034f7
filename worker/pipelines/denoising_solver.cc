#include "worker/pipelines/denoising_solver.h"

#include <ATen/ATen.h>

namespace ditserve::worker::pipelines {

void DenoisingSolver::Allocate(const at::Tensor& latents) {
  history_.clear();
  for (int i = 0; i < schedule_.history_depth(); ++i) {
    history_.push_back(at::zeros(latents.sizes(), latents.options().dtype(at::kFloat)));
  }
}

at::Tensor DenoisingSolver::ModelInput(int step, const at::Tensor& x) const {
  const double scale = schedule_.input_scales[step];
  return scale == 1.0 ? x : (x.to(at::kFloat) * scale).to(x.scalar_type());
}

at::Tensor DenoisingSolver::Step(int step, const at::Tensor& x, const at::Tensor& output, int64_t begin) {
  const core::StepUpdate& u = schedule_.updates[step];
  const at::Tensor xf = x.to(at::kFloat);
  // Terms with a coefficient of 0 are skipped and those of 1 not multiplied:
  // the flow-matching step is x + dσ·v, exactly.
  at::Tensor acc;
  const auto add = [&acc](const at::Tensor& t, double coef) {
    if (coef == 0.0) return;
    const at::Tensor term = coef == 1.0 ? t : t * coef;
    acc = acc.defined() ? acc + term : term.to(at::kFloat);
  };
  add(xf, u.sample);
  add(output, u.output);
  if (!u.history.empty()) {
    const int depth = static_cast<int>(history_.size());
    const int64_t L = x.size(1);
    at::Tensor m;
    if (u.history_sample != 0.0) m = xf * u.history_sample;
    if (u.history_output != 0.0) {
      const at::Tensor o = output.to(at::kFloat) * u.history_output;
      m = m.defined() ? m + o : o;
    }
    if (!m.defined()) m = at::zeros_like(xf);
    if (u.clip_range > 0) m = m.clamp(-u.clip_range, u.clip_range);
    history_[step % depth].narrow(1, begin, L).copy_(m);
    for (size_t j = 0; j < u.history.size(); ++j) {
      const int slot = ((step - static_cast<int>(j)) % depth + depth) % depth;
      add(history_[slot].narrow(1, begin, L), u.history[j]);
    }
  }
  if (u.noise != 0.0) {
    if (noise_step_ != step) {
      noise_ = noise_source_(step).to(x.device(), at::kFloat);
      noise_step_ = step;
    }
    add(noise_.narrow(1, begin, x.size(1)), u.noise);
  }
  if (!acc.defined()) acc = at::zeros_like(xf);
  return acc.to(x.scalar_type());
}

std::vector<at::Tensor*> DenoisingSolver::state() {
  std::vector<at::Tensor*> s;
  for (at::Tensor& h : history_) s.push_back(&h);
  return s;
}

}  // namespace ditserve::worker::pipelines
