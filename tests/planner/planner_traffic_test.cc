// The planner's byte counts against the engine's own: a CPU gang generates
// on the tiny preset under every method with --comm_stats, and every rank's
// bytes per method must equal TrafficOfRank's exactly (and no method may
// send what the planner does not know of).

#include <filesystem>
#include <map>
#include <sstream>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "planner/auto_parallel.h"
#include "planner/plan.h"
#include "tests/harness/binaries.h"

namespace ditserve::planner {
namespace {

using testing::BinDir;
using testing::RunOne;

class PlannerTraffic : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::testing::TempDir() + "/planner_traffic_" + std::to_string(getpid()));
    std::filesystem::create_directories(*dir_);
    const auto made = RunOne({BinDir() + "/ditserve-make-model", "--family=flux", "--preset=tiny", "--out=" + Model()});
    ASSERT_EQ(made.exit.exit_code, 0) << made.output;
    const auto pixart =
        RunOne({BinDir() + "/ditserve-make-model", "--family=pixart-sigma", "--preset=tiny", "--out=" + Model("pixart")});
    ASSERT_EQ(pixart.exit.exit_code, 0) << pixart.output;
    const auto hunyuan =
        RunOne({BinDir() + "/ditserve-make-model", "--family=hunyuandit", "--preset=tiny", "--out=" + Model("hunyuandit")});
    ASSERT_EQ(hunyuan.exit.exit_code, 0) << hunyuan.output;
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::string Model(const std::string& family = "flux") {
    return family == "flux" ? *dir_ + "/tiny" : *dir_ + "/" + family;
  }

  struct Case {
    std::string name;
    parallel::ParallelConfig config;
    bool cfg = false;
    int images = 1;
    // "flux" (true CFG from a negative prompt), "pixart" or "hunyuandit"
    // (cross-attention; classic CFG by default, `cfg` false turns it off).
    std::string family = "flux";
  };

  // Runs the case and compares every rank's bytes by method.
  void Check(const Case& c) {
    const int steps = 3, height = 128, width = 96;
    const int world = static_cast<int>(c.config.world_size());
    std::vector<std::string> argv = {BinDir() + "/ditserve-run", "--model=" + Model(c.family), "--device=cpu", "--threads=1",
                                     "--comm_stats", absl::StrCat("--nproc=", world),
                                     absl::StrCat("--num_inference_steps=", steps), absl::StrCat("--height=", height),
                                     absl::StrCat("--width=", width), "--seed=1",
                                     "--output_dir=" + *dir_ + "/out-" + c.name,
                                     absl::StrCat("--ulysses_degree=", c.config.ulysses_degree),
                                     absl::StrCat("--ring_degree=", c.config.ring_degree),
                                     absl::StrCat("--pipefusion_parallel_degree=", c.config.pipefusion_parallel_degree),
                                     absl::StrCat("--data_parallel_degree=", c.config.data_parallel_degree),
                                     c.config.use_cfg_parallel ? "--use_cfg_parallel" : "--nouse_cfg_parallel",
                                     "--prompt=a red circle"};
    if (c.images > 1) argv.push_back("--prompt=a green square");
    if (c.family == "pixart" || c.family == "hunyuandit") {
      argv.push_back(c.cfg ? "--guidance_scale=4.5" : "--guidance_scale=1");
    } else if (c.cfg) {
      argv.push_back("--negative_prompt=blurry");
      argv.push_back("--true_cfg_scale=3");
    }
    const auto run = RunOne(argv, absl::Minutes(10));
    ASSERT_EQ(run.exit.exit_code, 0) << run.output;
    // "rank 1 comm pipefusion         bytes_sent 8192  calls 13 ..."
    std::map<int, std::map<std::string, double>> measured;
    std::istringstream in(run.output);
    for (std::string l; std::getline(in, l);) {
      std::istringstream words(l);
      std::string rank_word, comm_word, method, bytes_word;
      int rank = -1;
      double bytes = 0;
      if (words >> rank_word >> rank >> comm_word >> method >> bytes_word >> bytes && rank_word == "rank" &&
          comm_word == "comm" && bytes_word == "bytes_sent") {
        measured[rank][method] = bytes;
      }
    }
    ASSERT_EQ(static_cast<int>(measured.size()), world) << run.output;
    auto model = ModelFromDirectory(Model(c.family));
    ASSERT_TRUE(model.ok()) << model.status();
    PlanRequest r;
    r.height = height;
    r.width = width;
    r.steps = steps;
    r.images = c.images;
    r.cfg = c.cfg;
    for (int rank = 0; rank < world; ++rank) {
      const auto predicted = TrafficOfRank(*model, c.config, r, /*element_bytes=*/4, rank);
      for (const auto& [method, bytes] : measured[rank]) {
        const auto it = predicted.find(method);
        ASSERT_TRUE(it != predicted.end() || bytes == 0)
            << c.name << " rank " << rank << " sent " << bytes << " bytes by " << method << ", which the planner omits";
        EXPECT_EQ(it == predicted.end() ? 0 : it->second, bytes) << c.name << " rank " << rank << " " << method;
      }
      for (const auto& [method, bytes] : predicted) {
        if (bytes > 0) {
          EXPECT_TRUE(measured[rank].count(method)) << c.name << " rank " << rank << " " << method;
        }
      }
    }
  }

  static parallel::ParallelConfig Config(int dp, bool cfg, int pp, int u, int r) {
    parallel::ParallelConfig c;
    c.data_parallel_degree = dp;
    c.use_cfg_parallel = cfg;
    c.pipefusion_parallel_degree = pp;
    c.ulysses_degree = u;
    c.ring_degree = r;
    return c;
  }

  static std::string* dir_;
};
std::string* PlannerTraffic::dir_ = nullptr;

TEST_F(PlannerTraffic, Ulysses2) { Check({"u2", Config(1, false, 1, 2, 1)}); }
TEST_F(PlannerTraffic, Ring2) { Check({"r2", Config(1, false, 1, 1, 2)}); }
TEST_F(PlannerTraffic, Ulysses2Ring2) { Check({"u2r2", Config(1, false, 1, 2, 2)}); }
TEST_F(PlannerTraffic, PipeFusion2) { Check({"pp2", Config(1, false, 2, 1, 1)}); }
TEST_F(PlannerTraffic, PipeFusion2Ulysses2) { Check({"pp2u2", Config(1, false, 2, 2, 1)}); }
TEST_F(PlannerTraffic, Cfg2) { Check({"cfg2", Config(1, true, 1, 1, 1), true}); }
TEST_F(PlannerTraffic, Cfg2PipeFusion2) { Check({"cfg2pp2", Config(1, true, 2, 1, 1), true}); }
TEST_F(PlannerTraffic, SerialCfgOnPipeFusion2) { Check({"pp2cfg", Config(1, false, 2, 1, 1), true}); }
TEST_F(PlannerTraffic, PipeFusion2Ring2) { Check({"pp2r2", Config(1, false, 2, 1, 2)}); }
TEST_F(PlannerTraffic, Cfg2Ulysses2) { Check({"cfg2u2", Config(1, true, 1, 2, 1), true}); }
// PixArt-Σ (cross-attention): the text whole on every rank and never in the
// self-attention exchanges, its mask broadcast with the embeddings, the
// caption projection carried with PipeFusion's patch 0.
TEST_F(PlannerTraffic, PixArtUlysses2Ring2) { Check({"px_u2r2", Config(1, false, 1, 2, 2), true, 1, "pixart"}); }
TEST_F(PlannerTraffic, PixArtPipeFusion2Ulysses2) {
  Check({"px_pp2u2", Config(1, false, 2, 2, 1), true, 1, "pixart"});
}
TEST_F(PlannerTraffic, PixArtCfg2PipeFusion2) { Check({"px_cfg2pp2", Config(1, true, 2, 1, 1), true, 1, "pixart"}); }
TEST_F(PlannerTraffic, PixArtDataParallel2NoCfg) { Check({"px_dp2", Config(2, false, 1, 1, 1), false, 2, "pixart"}); }
// HunyuanDiT (six blocks): its 77 + 256 text tokens in one sequence, and the
// two long skips that cross PipeFusion's boundary with every patch.
TEST_F(PlannerTraffic, HunyuanDiTPipeFusion2Ulysses2) {
  Check({"hy_pp2u2", Config(1, false, 2, 2, 1), true, 1, "hunyuandit"});
}
TEST_F(PlannerTraffic, HunyuanDiTCfg2PipeFusion2) {
  Check({"hy_cfg2pp2", Config(1, true, 2, 1, 1), true, 1, "hunyuandit"});
}
// ditserve-run --parallel auto: runs the configuration ChooseParallelConfig
// picks for the request (CFG on, two ranks), and says so; bad flags exit 2.
TEST_F(PlannerTraffic, ParallelAutoRunsThePlannersChoice) {
  const char* source = std::getenv("DITSERVE_SOURCE_DIR");
  const std::string hardware = std::string(source ? source : ".") + "/hardware/cpu-dev.json";
  AutoParallelRequest a;
  a.model_dir = Model();
  a.hardware_path = hardware;
  a.world_size = 2;
  a.height = 128;
  a.width = 96;
  a.steps = 3;
  a.true_cfg_scale = 3;
  auto expected = ChooseParallelConfig(a);
  ASSERT_TRUE(expected.ok()) << expected.status();
  const std::vector<std::string> common = {BinDir() + "/ditserve-run", "--model=" + Model(), "--device=cpu",
                                           "--threads=1", "--nproc=2", "--num_inference_steps=3", "--height=128",
                                           "--width=96", "--prompt=a red circle", "--negative_prompt=blurry",
                                           "--true_cfg_scale=3", "--output_dir=" + *dir_ + "/out-auto"};
  std::vector<std::string> argv = common;
  argv.push_back("--parallel=auto");
  argv.push_back("--hardware=" + hardware);
  const auto run = RunOne(argv, absl::Minutes(10));
  ASSERT_EQ(run.exit.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("ditserve-run: --parallel auto chose " + expected->config.ToString() + " ("),
            std::string::npos)
      << run.output;
  EXPECT_TRUE(std::filesystem::exists(*dir_ + "/out-auto/image-000.png"));
  for (const auto& [extra, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--parallel=auto", "--hardware=" + hardware, "--ring_degree=2"}, "chooses the degrees"},
           {{"--parallel=auto"}, "needs --hardware"},
           {{"--parallel=best"}, "--parallel must be manual or auto"},
           {{"--hardware=" + hardware}, "--hardware is for --parallel auto"}}) {
    std::vector<std::string> bad = common;
    bad.insert(bad.end(), extra.begin(), extra.end());
    const auto r = RunOne(bad, absl::Minutes(2));
    EXPECT_EQ(r.exit.exit_code, 2) << message << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
  }
}

TEST_F(PlannerTraffic, DataParallel2) { Check({"dp2", Config(2, false, 1, 1, 1), false, 2}); }

}  // namespace
}  // namespace ditserve::planner
