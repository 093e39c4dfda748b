// Host emulation of the parts of the CUDA execution model that the kernels of
// ../local_attention_cuda_kernel.cuh use, so that the tests can run those
// kernels, unchanged, on a machine without a GPU.
//
// A launch runs NUM_THREADS real threads; they walk the grid block by block
// (blocks run one after another) and __syncthreads() is a barrier over them.
// Dynamic shared memory is one static buffer, filled with 0xff bytes (NaN for
// float and double) before every block so that a read of shared memory that
// the block did not write shows up as NaN in the results.
#pragma once

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline dim3 gridDim;
inline dim3 blockDim;

namespace lma_emu {

// Reusable barrier over a fixed number of threads.
class Barrier {
 public:
  void reset(int n) {
    n_ = n;
    count_ = 0;
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const long gen = generation_;
    if (++count_ == n_) {
      count_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int n_ = 1, count_ = 0;
  long generation_ = 0;
};

inline Barrier barrier;

}  // namespace lma_emu

inline void __syncthreads() { lma_emu::barrier.wait(); }

using std::max;
using std::min;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__
#define __launch_bounds__(n)
