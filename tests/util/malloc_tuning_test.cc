// KeepFreedMemoryForReuse changes this process's allocator: a large block
// comes from the heap and stays there after it is freed. Its own test
// binary, since the settings are process-wide.

#include "util/malloc_tuning.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>

namespace ditserve::util {
namespace {

TEST(KeepFreedMemoryForReuse, AnOperatorsMallocTunablesWin) {
  ASSERT_EQ(setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0", 1), 0);
  EXPECT_FALSE(KeepFreedMemoryForReuse());
  ASSERT_EQ(unsetenv("GLIBC_TUNABLES"), 0);
}

TEST(KeepFreedMemoryForReuse, LargeBlocksComeFromTheHeapAndStay) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "ASan's allocator replaces glibc's: mallopt and mallinfo2 do not apply";
#endif
  constexpr size_t kBlock = size_t{48} << 20;  // above glibc's largest dynamic mmap threshold (32 MiB)
  // Before: glibc maps such a block and unmaps it on free.
  void* before = std::malloc(kBlock);
  ASSERT_NE(before, nullptr);
  std::memset(before, 1, kBlock);
  EXPECT_GE(mallinfo2().hblkhd, kBlock);
  std::free(before);

  ASSERT_TRUE(KeepFreedMemoryForReuse());
  const size_t heap_before = mallinfo2().arena;
  void* block = std::malloc(kBlock);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBlock);
  EXPECT_EQ(mallinfo2().hblkhd, 0u);                // not mapped
  EXPECT_GE(mallinfo2().arena, heap_before + kBlock);  // from the heap
  std::free(block);
  EXPECT_GE(mallinfo2().arena, heap_before + kBlock);  // and kept there
  EXPECT_GE(mallinfo2().fordblks, kBlock);             // as free space to reuse
}

}  // namespace
}  // namespace ditserve::util
