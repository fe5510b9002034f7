#include "worker/weights/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "worker/weights/load_module.h"

namespace ditserve::worker::weights {
namespace {

std::string TempPath(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/st_", getpid(), "_", name);
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string HeaderAndData(const std::string& header_json, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header_json + data;
}

// Our own writer for tests: tensors laid out back to back.
std::string Serialize(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, t0] : tensors) {
    const at::Tensor t = t0.contiguous();
    const char* dtype = t.scalar_type() == at::kFloat      ? "F32"
                        : t.scalar_type() == at::kHalf     ? "F16"
                        : t.scalar_type() == at::kBFloat16 ? "BF16"
                                                           : "I64";
    const size_t begin = data.size();
    data.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
    header[name] = {{"dtype", dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {begin, data.size()}}};
  }
  return HeaderAndData(header.dump(), data);
}

std::string ValidFile() {
  return Serialize({{"a", at::arange(6, at::kFloat).view({2, 3})},
                    {"b", at::arange(4, at::kFloat).to(at::kHalf)},
                    {"c", at::ones({3}, at::kFloat).to(at::kBFloat16)}});
}

TEST(Safetensors, ReadsWhatItWrote) {
  const std::string path = TempPath("valid.safetensors");
  WriteBytes(path, ValidFile());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->header().tensors.size(), 3u);
  auto a = (*file)->Get("a");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(at::equal(*a, at::arange(6, at::kFloat).view({2, 3})));
  EXPECT_EQ((*file)->Get("b")->scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal((*file)->Get("c")->to(at::kFloat), at::ones({3})));
  EXPECT_EQ((*file)->Get("zzz").status().code(), absl::StatusCode::kNotFound);
  // Tensors outlive the file object and may be written (copy on write).
  at::Tensor kept = *a;
  file->reset();
  kept.add_(1);
  EXPECT_EQ(kept[1][2].item<float>(), 6.f);
  auto again = SafetensorsFile::Open(path);
  EXPECT_EQ((*again)->Get("a")->index({1, 2}).item<float>(), 5.f);
}

// The reference implementation (PyPI's safetensors) writes a file; we read it.
TEST(Safetensors, ReadsFilesWrittenByTheSafetensorsLibrary) {
  const char* python = std::getenv("DITSERVE_PYTHON");
  ASSERT_NE(python, nullptr) << "DITSERVE_PYTHON is not set (CTest sets it)";
  const std::string path = TempPath("py.safetensors");
  const std::string cmd = absl::StrCat(
      python, " -c \"import torch; from safetensors.torch import save_file; save_file({",
      "'w.f32': torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7,",
      "'w.f16': (torch.arange(5, dtype=torch.float32) / 3).half(),",
      "'w.bf16': (torch.arange(5, dtype=torch.float32) / 3).bfloat16(),",
      "'w.i64': torch.tensor([1, -2, 3**30]), 'w.empty': torch.zeros(0, 3)}, '", path,
      "', metadata={'format': 'pt'})\"");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->header().metadata.at("format"), "pt");
  EXPECT_TRUE(at::equal(*(*file)->Get("w.f32"), at::arange(12, at::kFloat).view({3, 4}) / 7));
  EXPECT_TRUE(at::equal(*(*file)->Get("w.f16"), (at::arange(5, at::kFloat) / 3).to(at::kHalf)));
  EXPECT_TRUE(at::equal(*(*file)->Get("w.bf16"), (at::arange(5, at::kFloat) / 3).to(at::kBFloat16)));
  at::Tensor i64 = *(*file)->Get("w.i64");
  EXPECT_EQ(i64.scalar_type(), at::kLong);
  EXPECT_EQ(i64[2].item<int64_t>(), 205891132094649LL);
  EXPECT_EQ((*file)->Get("w.empty")->sizes(), (std::vector<int64_t>{0, 3}));
}

struct Corruption {
  std::string name;
  std::string bytes;
  std::string message;  // expected substring
};

std::vector<Corruption> Corruptions() {
  const std::string valid = ValidFile();
  const auto with_header = [](const std::string& h, size_t data_bytes) {
    return HeaderAndData(h, std::string(data_bytes, '\0'));
  };
  std::string past_end = valid;
  past_end[0] = static_cast<char>(0xff);
  past_end[1] = static_cast<char>(0xff);
  return {
      {"truncated", valid.substr(0, 5), "truncated file: 5 bytes"},
      {"header_past_end", past_end, "runs past the end of the file"},
      {"cut_data", valid.substr(0, valid.size() - 4), "run past the end of the data"},
      {"json_garbage", with_header("{\"a\": [1, 2,", 0), "not valid JSON"},
      {"not_object", with_header("[1, 2]", 0), "not a JSON object"},
      {"unknown_dtype",
       with_header(R"({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})", 1),
       "unknown dtype \"F8_E4M3\""},
      {"size_mismatch",
       with_header(R"({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", 12),
       "needs 16 bytes but data_offsets give 12"},
      {"overlap",
       with_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12),
       "overlap"},
      {"offsets_past_end",
       with_header(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8),
       "run past the end of the data (8 bytes)"},
      {"reversed_offsets",
       with_header(R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}})", 8),
       "data_offsets [8, 0]"},
      {"negative_dim",
       with_header(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4),
       "bad shape"},
      {"huge_shape",
       with_header(R"({"a": {"dtype": "F32", "shape": [1099511627776, 1099511627776], "data_offsets": [0, 4]}})", 4),
       "too large"},
      {"missing_fields", with_header(R"({"a": {"dtype": "F32"}})", 0), "needs dtype, shape and data_offsets"},
  };
}

TEST(Safetensors, RejectsEveryCorruption) {
  for (const Corruption& c : Corruptions()) {
    const std::string path = TempPath(c.name);
    WriteBytes(path, c.bytes);
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok()) << c.name;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(file.status().message().find(c.message), std::string::npos)
        << c.name << ": " << file.status();
    EXPECT_NE(file.status().message().find(path), std::string::npos) << c.name;
  }
}

// Random byte flips, truncations and header-length edits of a valid file
// never crash or read out of bounds (run under ASan to check the latter);
// every outcome is OK or INVALID_ARGUMENT, and OK results stay in bounds.
TEST(Safetensors, SurvivesMutations) {
  const std::string valid = ValidFile();
  std::mt19937 rng(12345);
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string bytes = valid;
    const int kind = i % 3;
    if (kind == 0) {
      for (int flips = 0; flips < 1 + static_cast<int>(rng() % 4); ++flips) {
        bytes[rng() % bytes.size()] = static_cast<char>(rng());
      }
    } else if (kind == 1) {
      bytes.resize(rng() % bytes.size());
    } else {
      bytes[rng() % 8] = static_cast<char>(rng());
    }
    auto header = ParseSafetensors(bytes);
    if (header.ok()) {
      ++accepted;
      for (const auto& t : header->tensors) ASSERT_LE(header->data_offset + t.end, bytes.size());
    } else {
      ASSERT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  EXPECT_GT(accepted, 0);
}

TEST(SafetensorsCheckpoint, ShardsFromAnIndex) {
  const std::string dir = TempPath("sharded");
  std::filesystem::create_directories(dir);
  WriteBytes(dir + "/model-00001-of-00002.safetensors", Serialize({{"x.weight", at::ones({2, 2})}}));
  WriteBytes(dir + "/model-00002-of-00002.safetensors", Serialize({{"y.bias", at::zeros({3})}}));
  nlohmann::json index = {{"metadata", {{"total_size", 28}}},
                          {"weight_map", {{"x.weight", "model-00001-of-00002.safetensors"},
                                          {"y.bias", "model-00002-of-00002.safetensors"}}}};
  WriteBytes(dir + "/model.safetensors.index.json", index.dump());
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->names(), (std::vector<std::string>{"x.weight", "y.bias"}));
  EXPECT_TRUE(at::equal(*ckpt->Get("x.weight"), at::ones({2, 2})));
  // An index naming a tensor its shard lacks is an error.
  index["weight_map"]["z"] = "model-00002-of-00002.safetensors";
  WriteBytes(dir + "/model.safetensors.index.json", index.dump());
  auto bad = SafetensorsCheckpoint::Open(dir);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'z'"), std::string::npos) << bad.status();
  EXPECT_EQ(SafetensorsCheckpoint::Open(TempPath("nowhere")).status().code(), absl::StatusCode::kNotFound);
  // Shard names that are not plain file names, among them "" (the index's
  // own directory: found by tests/fuzz/safetensors_index_fuzz, which then
  // got INTERNAL from mmap), ".", ".." and names with a slash.
  for (const char* name : {"", ".", "..", "../model-00001-of-00002.safetensors", "sub/x.safetensors"}) {
    index["weight_map"] = {{"x.weight", name}};
    WriteBytes(dir + "/model.safetensors.index.json", index.dump());
    auto refused = SafetensorsCheckpoint::Open(dir + "/model.safetensors.index.json");
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << "'" << name << "': " << refused.status();
    EXPECT_NE(refused.status().message().find("must be a plain file name"), std::string::npos) << refused.status();
  }
  // A directory is not a checkpoint file.
  EXPECT_EQ(SafetensorsFile::Open(dir).status().code(), absl::StatusCode::kInvalidArgument);
}

// A module whose parameter names are diffusers-style keys.
struct Block : torch::nn::Module {
  Block() {
    weight = register_parameter("weight", at::zeros({2, 3}));
    bias = register_parameter("bias", at::zeros({2}));
  }
  at::Tensor weight, bias;
};
struct Model : torch::nn::Module {
  Model() {
    register_module("to_q", std::make_shared<Block>());
    register_module("norm", std::make_shared<Block>());
  }
};

TEST(LoadModuleWeights, ConsumesEveryKeyAndConverts) {
  const std::string path = TempPath("model.safetensors");
  const at::Tensor w = at::randn({2, 3});
  WriteBytes(path, Serialize({{"to_q.weight", w.to(at::kBFloat16)},
                              {"to_q.bias", at::ones({2}).to(at::kBFloat16)},
                              {"norm.weight", at::ones({2, 3})},
                              {"norm.bias", at::zeros({2})}}));
  auto ckpt = SafetensorsCheckpoint::Open(path);
  ASSERT_TRUE(ckpt.ok());
  Model model;
  ASSERT_TRUE(LoadModuleWeights(model, *ckpt).ok());
  const auto params = model.named_parameters();
  EXPECT_EQ(params["to_q.weight"].scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(params["to_q.weight"], w.to(at::kBFloat16).to(at::kFloat)));
  EXPECT_TRUE(at::equal(params["to_q.bias"], at::ones({2})));
}

TEST(LoadModuleWeights, ListsMissingAndUnexpectedKeys) {
  const std::string path = TempPath("partial.safetensors");
  WriteBytes(path, Serialize({{"to_q.weight", at::ones({2, 3})},
                              {"to_q.bias", at::ones({2})},
                              {"norm.weight", at::ones({2, 3})},
                              {"to_k.weight", at::ones({2, 3})}}));
  auto ckpt = SafetensorsCheckpoint::Open(path);
  Model model;
  absl::Status s = LoadModuleWeights(model, *ckpt);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "the checkpoint does not match the model: missing keys: norm.bias. unexpected keys: "
            "to_k.weight.");
  const std::string shapes = TempPath("shapes.safetensors");
  WriteBytes(shapes, Serialize({{"to_q.weight", at::ones({3, 2})}, {"to_q.bias", at::ones({2})},
                                {"norm.weight", at::ones({2, 3})}, {"norm.bias", at::ones({2})}}));
  s = LoadModuleWeights(model, *SafetensorsCheckpoint::Open(shapes));
  EXPECT_EQ(s.message(), "'to_q.weight' has shape [3, 2] in the checkpoint but [2, 3] in the model");
}

}  // namespace
}  // namespace ditserve::worker::weights
