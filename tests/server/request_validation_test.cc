#include "server/request_validation.h"

#include <gtest/gtest.h>

#include <functional>

namespace ditserve::server {
namespace {

Limits TestLimits() {
  Limits l;
  l.max_pixels = 256 * 256;
  l.max_steps = 50;
  l.max_prompt_bytes = 100;
  l.max_images = 4;
  l.default_steps = 28;
  return l;
}

TEST(RequestValidation, DefaultsAreFilledIn) {
  v1::GenerateRequest r;
  r.set_prompt("a red circle");
  auto p = ValidateRequest(r, TestLimits(), ModelShape{16, 128}, 777);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->height, 128);
  EXPECT_EQ(p->width, 128);
  EXPECT_EQ(p->num_inference_steps, 28);
  EXPECT_EQ(p->seed, 777u);
  EXPECT_EQ(p->num_images, 1);
  EXPECT_EQ(p->format, v1::IMAGE_FORMAT_PNG);
  EXPECT_EQ(p->quality, 90);
  EXPECT_DOUBLE_EQ(p->guidance_scale, 3.5);
  EXPECT_FALSE(p->cfg);
  r.set_seed(0);
  EXPECT_EQ(ValidateRequest(r, TestLimits(), ModelShape{16, 128}, 777)->seed, 0u);
}

struct BadCase {
  const char* name;
  std::function<void(v1::GenerateRequest&)> edit;
  const char* expected;  // in the message: the field and its limit
};

TEST(RequestValidation, BadInputsNameTheFieldAndTheLimit) {
  const std::vector<BadCase> cases = {
      {"long prompt", [](auto& r) { r.set_prompt(std::string(101, 'a')); }, "prompt must be at most 100 bytes"},
      {"long negative", [](auto& r) { r.set_negative_prompt(std::string(101, 'a')); }, "negative_prompt must be at most 100"},
      {"height not multiple", [](auto& r) { r.set_height(100); }, "height must be a multiple of 16"},
      {"negative width", [](auto& r) { r.set_width(-16); }, "width must be a multiple of 16"},
      {"side too long", [](auto& r) { r.set_height(4112); }, "height must be a multiple of 16 in [16, 4096]"},
      {"area", [](auto& r) { r.set_height(512); r.set_width(512); }, "height x width must be at most 65536"},
      {"steps", [](auto& r) { r.set_num_inference_steps(51); }, "num_inference_steps must be in [1, 50]"},
      {"negative steps", [](auto& r) { r.set_num_inference_steps(-1); }, "num_inference_steps"},
      {"guidance", [](auto& r) { r.set_guidance_scale(-1); }, "guidance_scale must be in [0, 100]"},
      {"guidance nan", [](auto& r) { r.set_guidance_scale(std::nan("")); }, "guidance_scale"},
      {"true cfg", [](auto& r) { r.set_true_cfg_scale(0.5); }, "true_cfg_scale must be in [1, 100]"},
      {"images", [](auto& r) { r.set_num_images(5); }, "num_images must be in [1, 4]"},
      {"format", [](auto& r) { r.set_output_format(static_cast<v1::ImageFormat>(9)); }, "output_format"},
      {"quality", [](auto& r) { r.set_quality(101); }, "quality must be in [1, 100]"},
      {"priority", [](auto& r) { r.set_priority(1000); }, "priority must be in [-100, 100]"},
  };
  for (const BadCase& c : cases) {
    v1::GenerateRequest r;
    r.set_prompt("ok");
    c.edit(r);
    auto p = ValidateRequest(r, TestLimits(), ModelShape{16, 128}, 1);
    ASSERT_FALSE(p.ok()) << c.name;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(p.status().message().find(c.expected), std::string::npos)
        << c.name << ": " << p.status().message();
  }
}

}  // namespace
}  // namespace ditserve::server
