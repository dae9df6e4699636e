// Types shared by the per-ISA kernel objects and the MLX primitives. This header includes no
// C++ standard library templates: the kernels_*.cpp are compiled once per instruction set, and an
// inline library function instantiated there could be picked by the linker for the scalar
// build (an ODR merge of code compiled with different -m flags).
#pragma once

#include <stdint.h>

namespace sqn {

enum ScaleType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// A quantized matrix in MLX's affine layout: w[n, k] = scales[n, g] * q[n, k] + biases[n, g],
// g = k / group_size; q packed little-endian into uint32 words (element j of a word at bits
// j*bits), rows of K*bits/32 words.
struct QWeight {
  const uint32_t* w;
  const void* scales;
  const void* biases;
  int stype;  // ScaleType of scales and biases
  int N, K, bits, group_size;
};

// Block size of the int8 activations (every supported group size is a multiple of it).
constexpr int kBlock = 32;
// Rows of activations are padded to a multiple of this many elements.
constexpr int kChunk = 128;

inline int padded(int K) {
  return (K + kChunk - 1) / kChunk * kChunk;
}

// Activations quantized for one weight layout: M rows of x[k] ~= ldx[k / lane] * q[k].
// With P = 2 (precise) each element has two int8 values, q = 256 * hi + lo: hi = round(x / d)
// with d = max|x| / 127 over its block of 32, lo = round(256 * (x - d * hi) / d), what hi
// rounded away, and the lane scale is d / 256; with P = 1 only hi, and the lane scale is d.
// A row holds, per 128-element chunk, its 128 hi bytes then (P = 2) its 128 lo bytes, each in
// the order the kernel's dot product wants (see docs/native.md): natural, or, for 4-bit
// weights on SIMD paths, each `order` elements as their even then their odd elements (a
// byte's low nibble pairs with an even element, its high nibble with the next). One lane is 8
// elements for 4-bit weights and 4 for 8-bit. The group sums (exact, in float) give the bias
// term; lxs is 128 * (the lane's sum of q), for the AVX2 8-bit sign trick.
struct QAct {
  int8_t* q;      // M x Kp*P
  float* ldx;     // M x Kp/lane
  float* gsum;    // M x Gp: sum of x over each weight group, zero past K/group_size
  int32_t* lxs;   // M x Kp/lane (only when the kernels ask for it, else null)
  int M, K, Kp, lane, group_size, order, P, Gp;
};

// Group sums per row are padded to a multiple of this many (one AVX-512 vector).
constexpr int kGroupPad = 16;

// Per-ISA entry points; each works on a slice of the problem so the pool can split it.
struct Kernels {
  const char* name;
  int order4;       // chunk size of the 4-bit activation order (0: natural)
  int wants_lxs;    // the 8-bit kernel needs QAct::lxs
  // y[m, n] (m in [m0, m1), n in [n0, n1)) = sum_k x[m, k] w[n, k] (+ bias[n]) (+ res[m, n]).
  void (*qmm)(const QWeight& w, const QAct& x, int m0, int m1, int n0, int n1, float* y,
              int64_t ldy, const float* bias, const float* res, int64_t ldr);
  // Quantize rows [m0, m1) of x (M x K, row stride ldx) into the buffers of `a`.
  void (*quantize)(const float* x, int64_t ldx, int m0, int m1, const QAct& a);

  // Float kernels of the fused ops (one row or one head at a time).
  // out[i] = x[i] * w[i] / sqrt(mean(x^2) + eps); w may be null (no weight).
  void (*rms_norm)(const float* x, const float* w, float eps, int n, float* out);
  // Rotary embedding of one head in place: `dims` leading features, angles theta[i] given as
  // cos/sin tables of dims/2 entries; traditional rotates pairs (2i, 2i+1), else (i, i+dims/2).
  void (*rope)(float* x, const float* cos, const float* sin, int dims, int traditional);
  // Causal attention of nq consecutive queries of one head against its cached positions (row
  // stride hd): query i (at q + i * qs) sees the first len0 + i positions, and out + i * os =
  // softmax(scale * K q_i) V. Each block of keys is loaded once for all nq queries; a query's
  // arithmetic does not depend on nq, so a row checked in a pass of several equals the row
  // computed alone. `scores` holds nq * (len0 + nq) floats of scratch.
  void (*attend)(const float* q, int64_t qs, int nq, int len0, const float* k, const float* v, int hd, float scale,
                 float* out, int64_t os, float* scores);
  // out[i] = silu(g[i]) * u[i]
  void (*swiglu)(const float* g, const float* u, int n, float* out);
};

namespace scalar {
const Kernels* kernels();
}
namespace avx2 {
const Kernels* kernels();
}
namespace avx512 {
const Kernels* kernels();
}

}  // namespace sqn
