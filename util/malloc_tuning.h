#pragma once

// Process-wide allocator settings for processes that run tensor work on the
// CPU. glibc serves large blocks with mmap and returns them (and the heap's
// top) to the kernel when freed, so a denoising step or VAE decode that
// allocates and frees the same activation sizes again and again pays a page
// fault and a page clear for every page, every time. Keeping freed memory in
// the heap makes those allocations reuse warm pages: on the small preset
// (512×512, one thread) page faults fell from 566k to 177k and a whole
// generation with VAE decode took 23% less time, transformer steps about
// 7% (bench/cpu_allocator.sh, docs/benchmarks.md). The cost: the
// process's resident memory stays at its peak instead of shrinking between
// requests, as a GPU caching allocator's does.

namespace ditserve::util {

// Sets glibc's M_MMAP_MAX to 0 (large blocks come from the heap; a block too
// large for a thread's arena still falls back to mmap) and M_TRIM_THRESHOLD
// to its maximum (the heap is not given back), unless the environment's
// GLIBC_TUNABLES already sets a glibc.malloc tunable, in which case the
// operator's choice stands. Returns whether the settings were applied. Call
// once, at the start of main, before other threads run.
bool KeepFreedMemoryForReuse();

}  // namespace ditserve::util
