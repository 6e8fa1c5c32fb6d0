// CPU emulation (adapted from ../shared/tools/cuda-emu) of the CUDA builtins the project's kernels use: one std::thread per
// CUDA thread, blocks run one after another, __syncthreads = block barrier,
// warp shuffles through a per-warp exchange buffer + per-warp barrier.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstddef>
#include <algorithm>
#include <atomic>
#include <barrier>
#include <memory>
#include <thread>
#include <vector>
#include <functional>
using std::isnan; using std::min; using std::max;
using std::fmax; using std::fabs; using std::exp; using std::log; using std::pow; using std::expm1; using std::log1p; using std::sqrt;
struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct EmuCtx {
  dim3 gd, bd;
  std::unique_ptr<std::barrier<>> block_bar;
  std::vector<std::unique_ptr<std::barrier<>>> warp_bar;
  std::vector<double> xchg;  // float and double shuffles (exact for both)
};
inline EmuCtx emu;
inline thread_local dim3 threadIdx, blockIdx;
#include "launch.cuh"
#define __global__
#define __launch_bounds__(n)
#define __device__
#define __forceinline__ inline
#define __shared__ static
inline void __syncthreads() { emu.block_bar->arrive_and_wait(); }
template <class T> inline T __shfl_xor_sync(unsigned, T v, int o) {
  unsigned t = threadIdx.x, w = t / 32;
  emu.xchg[t] = (double)v; emu.warp_bar[w]->arrive_and_wait();
  T r = (T)emu.xchg[w * 32 + ((t % 32) ^ o)]; emu.warp_bar[w]->arrive_and_wait();
  return r;
}
template <class T> inline T __shfl_down_sync(unsigned, T v, int o) {
  unsigned t = threadIdx.x, w = t / 32, l = t % 32;
  emu.xchg[t] = (double)v; emu.warp_bar[w]->arrive_and_wait();
  T r = (l + o < 32) ? (T)emu.xchg[w * 32 + l + o] : v; emu.warp_bar[w]->arrive_and_wait();
  return r;
}
inline float atomicAdd(float *p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline float __expf(float x) { return std::exp(x); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
inline float sqrtf(float a) { return std::sqrt(a); }
// launch: grid (gx,1,1) x block (bx,1,1)
template <class F, class... A>
void launch(F f, unsigned gx, unsigned bx, A... args) {
  if (gx == 0 || bx == 0 || bx > POLY_BLOCK)  // every kernel has __launch_bounds__(POLY_BLOCK)
  { fprintf(stderr, "bad launch %u x %u\n", gx, bx); abort(); }
  emu.gd = {gx, 1, 1}; emu.bd = {bx, 1, 1};
  emu.xchg.assign(bx, 0.0);
  emu.warp_bar.clear();
  for (unsigned w = 0; w < (bx + 31) / 32; ++w) emu.warp_bar.emplace_back(new std::barrier<>(std::min(32u, bx - w * 32)));
  for (unsigned b = 0; b < gx; ++b) {
    emu.block_bar.reset(new std::barrier<>(bx));
    std::vector<std::thread> ts; ts.reserve(bx);
    for (unsigned t = 0; t < bx; ++t)
      ts.emplace_back([=] { blockIdx = {b, 1, 1}; threadIdx = {t, 1, 1}; f(args...); });
    for (auto &t : ts) t.join();
  }
}
#define gridDim emu.gd
#define blockDim emu.bd
