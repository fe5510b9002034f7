// --model_root: models inside the root pass; a model outside it, a `..`
// path out of it, and a symlink under the model pointing out of it are
// refused with the path named.

#include "core/model_root.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace ditserve::core {
namespace {

namespace fs = std::filesystem;

class ModelRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = absl::StrCat(::testing::TempDir(), "/model_root_", getpid());
    fs::create_directories(base_ + "/root/flux/transformer");
    fs::create_directories(base_ + "/elsewhere");
    std::ofstream(base_ + "/root/flux/model_index.json") << "{}";
    std::ofstream(base_ + "/root/flux/transformer/config.json") << "{}";
    std::ofstream(base_ + "/elsewhere/secret") << "x";
    // An in-root symlink (as Hugging Face caches point at their blobs).
    fs::create_directories(base_ + "/root/blobs");
    std::ofstream(base_ + "/root/blobs/weights") << "w";
    fs::create_symlink(base_ + "/root/blobs/weights", base_ + "/root/flux/transformer/weights.safetensors");
  }
  void TearDown() override { fs::remove_all(base_); }
  std::string base_;
};

TEST_F(ModelRoot, ModelsInsideTheRootPass) {
  EXPECT_TRUE(ConfineModel(base_ + "/root/flux", base_ + "/root").ok());
  EXPECT_TRUE(ConfineModel(base_ + "/root/flux/", base_ + "/root/").ok());
  EXPECT_TRUE(ConfineModel(base_ + "/elsewhere", "").ok()) << "no root: no confinement";
}

TEST_F(ModelRoot, PathsOutOfTheRootAreRefused) {
  const std::string root = fs::canonical(base_ + "/root").string();
  const absl::Status outside = ConfineModel(base_ + "/elsewhere", base_ + "/root");
  EXPECT_EQ(outside.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(std::string(outside.message()).find("outside --model_root " + root), std::string::npos) << outside;
  EXPECT_EQ(ConfineModel(base_ + "/root/../elsewhere", base_ + "/root").code(), absl::StatusCode::kPermissionDenied);
  // A sibling whose name starts with the root's is not inside it.
  fs::create_directories(base_ + "/root2/m");
  EXPECT_EQ(ConfineModel(base_ + "/root2/m", base_ + "/root").code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(ModelRoot, SymlinksOutOfTheRootAreRefused) {
  fs::create_symlink(base_ + "/elsewhere/secret", base_ + "/root/flux/transformer/config2.json");
  const absl::Status s = ConfineModel(base_ + "/root/flux", base_ + "/root");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(std::string(s.message()).find("config2.json resolves to"), std::string::npos) << s;
  fs::remove(base_ + "/root/flux/transformer/config2.json");
  // A symlinked directory out of the root, too.
  fs::create_directory_symlink(base_ + "/elsewhere", base_ + "/root/flux/tokenizer");
  EXPECT_EQ(ConfineModel(base_ + "/root/flux", base_ + "/root").code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(ModelRoot, MissingPathsAreNotFound) {
  EXPECT_EQ(ConfineModel(base_ + "/root/flux", base_ + "/nowhere").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ConfineModel(base_ + "/root/missing", base_ + "/root").code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ditserve::core
