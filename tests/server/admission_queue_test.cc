#include "server/admission_queue.h"

#include <gtest/gtest.h>

namespace ditserve::server {
namespace {

QueueEntry Entry(uint64_t id, int priority, int images = 1, int steps = 4, int size = 64) {
  QueueEntry e;
  e.id = id;
  e.params.priority = priority;
  e.params.num_images = images;
  e.params.num_inference_steps = steps;
  e.params.height = e.params.width = size;
  return e;
}

std::vector<uint64_t> Ids(const std::vector<QueueEntry>& entries) {
  std::vector<uint64_t> ids;
  for (const auto& e : entries) ids.push_back(e.id);
  return ids;
}

TEST(AdmissionQueue, HigherPriorityFirstAndFifoWithinAPriority) {
  AdmissionQueue q(10);
  ASSERT_TRUE(q.Push(Entry(1, 0)).ok());
  ASSERT_TRUE(q.Push(Entry(2, 5)).ok());
  ASSERT_TRUE(q.Push(Entry(3, 0)).ok());
  ASSERT_TRUE(q.Push(Entry(4, 5)).ok());
  ASSERT_TRUE(q.Push(Entry(5, -3)).ok());
  std::vector<uint64_t> order;
  while (q.size() > 0) {
    for (uint64_t id : Ids(q.TakeBatch(1))) order.push_back(id);
  }
  EXPECT_EQ(order, (std::vector<uint64_t>{2, 4, 1, 3, 5}));
}

TEST(AdmissionQueue, FullQueueIsResourceExhaustedNamingTheFlag) {
  AdmissionQueue q(2);
  ASSERT_TRUE(q.Push(Entry(1, 0)).ok());
  ASSERT_TRUE(q.Push(Entry(2, 0)).ok());
  const absl::Status s = q.Push(Entry(3, 100));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("--max_queue_size"), std::string::npos) << s;
  EXPECT_TRUE(q.Remove(1));
  EXPECT_FALSE(q.Remove(1));
  EXPECT_TRUE(q.Push(Entry(3, 100)).ok());
}

TEST(AdmissionQueue, BatchTakesCompatibleRequestsUpToTheImageLimit) {
  AdmissionQueue q(10);
  ASSERT_TRUE(q.Push(Entry(1, 0, 1, 4)).ok());
  ASSERT_TRUE(q.Push(Entry(2, 0, 1, 8)).ok());   // other step count
  ASSERT_TRUE(q.Push(Entry(3, 0, 2, 4)).ok());
  ASSERT_TRUE(q.Push(Entry(4, 0, 2, 4)).ok());   // would exceed 4 images
  ASSERT_TRUE(q.Push(Entry(5, 0, 1, 4)).ok());
  EXPECT_EQ(Ids(q.TakeBatch(4)), (std::vector<uint64_t>{1, 3, 5}));
  EXPECT_EQ(Ids(q.TakeBatch(4)), (std::vector<uint64_t>{2}));
  EXPECT_EQ(Ids(q.TakeBatch(4)), (std::vector<uint64_t>{4}));
  EXPECT_TRUE(q.TakeBatch(4).empty());
}

TEST(AdmissionQueue, FirstRequestIsTakenEvenWhenLargerThanTheBatch) {
  AdmissionQueue q(10);
  ASSERT_TRUE(q.Push(Entry(1, 0, 3)).ok());
  ASSERT_TRUE(q.Push(Entry(2, 0, 1)).ok());
  EXPECT_EQ(Ids(q.TakeBatch(2)), (std::vector<uint64_t>{1}));
}

TEST(AdmissionQueue, TrueCfgAndSizeSplitBatches) {
  AdmissionQueue q(10);
  QueueEntry cfg = Entry(1, 0);
  cfg.params.true_cfg_scale = 4;
  cfg.params.cfg = true;  // resolved by ValidateRequest
  cfg.params.negative_prompt = "blurry";
  ASSERT_TRUE(q.Push(cfg).ok());
  ASSERT_TRUE(q.Push(Entry(2, 0)).ok());
  ASSERT_TRUE(q.Push(Entry(3, 0, 1, 4, 128)).ok());
  EXPECT_EQ(Ids(q.TakeBatch(8)), (std::vector<uint64_t>{1}));
  EXPECT_EQ(Ids(q.TakeBatch(8)), (std::vector<uint64_t>{2}));
  EXPECT_EQ(Ids(q.TakeBatch(8)), (std::vector<uint64_t>{3}));
}

TEST(AdmissionQueue, ExpiredRequestsLeaveTheQueue) {
  AdmissionQueue q(10);
  const absl::Time now = absl::Now();
  QueueEntry a = Entry(1, 0), b = Entry(2, 0), c = Entry(3, 0);
  a.deadline = now - absl::Seconds(1);
  b.deadline = now + absl::Seconds(60);
  ASSERT_TRUE(q.Push(a).ok());
  ASSERT_TRUE(q.Push(b).ok());
  ASSERT_TRUE(q.Push(c).ok());
  EXPECT_EQ(q.EarliestDeadline(), a.deadline);
  EXPECT_EQ(Ids(q.TakeExpired(now)), (std::vector<uint64_t>{1}));
  EXPECT_EQ(q.size(), 2);
  EXPECT_EQ(q.EarliestDeadline(), b.deadline);
}

}  // namespace
}  // namespace ditserve::server
