// Host emulation of the parts of the CUDA execution model that the kernels of
// ../local_attention_cuda_kernel.cuh use, so that the tests can run those
// kernels, unchanged, on a machine without a GPU.
//
// A block's NUM_THREADS threads are coroutines (ucontext) on the calling
// thread: each runs until its next __syncthreads() or its end, then the next
// one runs. A barrier is passed when every thread of the block has reached
// it; the threads run in ascending order between even-numbered barriers and
// in descending order between odd-numbered ones, so that a read of another
// thread's write without a barrier in between meets the unwritten value in
// one order or the other. Blocks run one after another. Dynamic shared
// memory is one static buffer, filled with 0xff bytes (NaN for float and
// double) before every block so that a read of shared memory that the block
// did not write shows up as NaN in the results. Threads of a block that
// pass different numbers of barriers (undefined behaviour on a GPU) stop
// the launch with an error.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

// one emulated thread runs at a time: plain globals
inline dim3 threadIdx;
inline dim3 blockIdx;
inline dim3 gridDim;
inline dim3 blockDim;

namespace lma_emu {

// The threads of one block as coroutines.
class Block {
 public:
  // Runs body() as `threads` threads (threadIdx.x = 0 .. threads - 1).
  void run(int threads, const std::function<void()>& body) {
    const size_t stack_bytes = 256 * 1024;
    if (static_cast<int>(ctx_.size()) != threads) {
      ctx_.assign(threads, ucontext_t{});
      stacks_.clear();
      for (int t = 0; t < threads; ++t)
        stacks_.emplace_back(new char[stack_bytes]);
    }
    body_ = &body;
    error_ = nullptr;
    state_.assign(threads, kReady);
    for (int t = 0; t < threads; ++t) {
      getcontext(&ctx_[t]);
      ctx_[t].uc_stack.ss_sp = stacks_[t].get();
      ctx_[t].uc_stack.ss_size = stack_bytes;
      ctx_[t].uc_link = &main_;
      makecontext(&ctx_[t], &Block::entry, 0);
    }
    for (long phase = 0;; ++phase) {
      for (int i = 0; i < threads; ++i) {
        current_ = phase % 2 == 0 ? i : threads - 1 - i;
        if (state_[current_] == kDone) continue;
        state_[current_] = kReady;
        threadIdx = dim3(current_);
        swapcontext(&main_, &ctx_[current_]);
      }
      if (error_) std::rethrow_exception(error_);
      const long done = std::count(state_.begin(), state_.end(), kDone);
      if (done == threads) return;
      if (done > 0)
        throw std::runtime_error(
            "emulated block: " + std::to_string(done) + " of " +
            std::to_string(threads) + " threads ended while the others wait "
            "at barrier " + std::to_string(phase));
    }
  }

  // __syncthreads(): back to the scheduler until every thread is here.
  void sync() {
    const int me = current_;
    state_[me] = kWaiting;
    swapcontext(&ctx_[me], &main_);
  }

 private:
  enum State { kReady, kWaiting, kDone };

  static void entry();

  std::vector<ucontext_t> ctx_;
  std::vector<std::unique_ptr<char[]>> stacks_;
  std::vector<State> state_;
  ucontext_t main_{};
  const std::function<void()>* body_ = nullptr;
  std::exception_ptr error_;
  int current_ = 0;
};

inline Block block;

inline void Block::entry() {
  const int me = block.current_;
  try {
    (*block.body_)();
  } catch (...) {
    if (!block.error_) block.error_ = std::current_exception();
  }
  block.state_[me] = kDone;
  // uc_link returns to the scheduler
}

}  // namespace lma_emu

inline void __syncthreads() { lma_emu::block.sync(); }

using std::max;
using std::min;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__
#define __launch_bounds__(n)
