// Threads per block of every project kernel. build.rs turns this define into
// `device::cuda::BLOCK`, which the Rust launch code uses, and every kernel
// declares `__launch_bounds__(POLY_BLOCK)`: the compiler then keeps register
// use within what a full block may take (65,536 / POLY_BLOCK per thread), so
// no launch can fail with CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES.
#pragma once
#define POLY_BLOCK 256
