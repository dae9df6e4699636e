// Activation quantization and the quantized matmul, compiled once per instruction set
// (CMakeLists.txt sets SQ_ISA and the -m flags). Everything lives in an ISA-named namespace and
// uses no C++ standard library templates (see common.h), so no code compiled for AVX-512 can be
// linked into a scalar caller; only qmm and quantize (kernels_isa.h) leave this file.
#include <math.h>
#include <string.h>

#include "kernels_isa.h"

#if defined(SQ_ISA_avx2) || defined(SQ_ISA_avx512)
#include <immintrin.h>
#endif

// Decode streams every weight once per token from memory; the hardware prefetcher alone
// reached about half of this machine's bandwidth (AMD EPYC, Zen 4), so each weight load also
// prefetches the bytes this far ahead (a few rows later). Measured 1024-4096: 2048 was best.
constexpr int kPrefetch = 2048;

namespace sqn {
namespace SQ_ISA {
namespace {

// log2 of a supported group size (32, 64, 128): the kernels shift instead of dividing by a
// run-time group size, which compiles to idiv in the inner loops.
inline int gshift(int gs) {
  return gs == 32 ? 5 : (gs == 64 ? 6 : 7);
}

// IEEE half to float without F16C (the scalar build must run on any CPU).
inline float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400) == 0);
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

inline float load_scale(const void* p, int64_t i, int stype) {
  if (stype == kF32) return ((const float*)p)[i];
  uint16_t h = ((const uint16_t*)p)[i];
  if (stype == kF16) return half_to_float(h);
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

// ---------------------------------------------------------------------------------------
// Activation quantization: identical arithmetic on every ISA (only the byte order differs),
// so the integer dot products agree exactly between paths.

inline float round_even(float v) {  // |v| <= 2^22: the 1.5 * 2^23 trick rounds to nearest even
  return (v + 12582912.0f) - 12582912.0f;
}

inline int8_t to_int8(float r) {
  r = r == r ? r : 0.0f;  // NaN and Inf reach the output through the group sums instead
  r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
  return (int8_t)(int)r;
}

// Stores the natural-order bytes `nat` of the chunk at c0 into `dst` in the kernel's order.
inline void reorder(const int8_t* nat, int c0, int K, int C, int8_t* dst) {
  if (C == 0) {
    memcpy(dst, nat, kChunk);
    return;
  }
  for (int s0 = 0; s0 < kChunk; s0 += C) {
    const int E = imin(C, K - (c0 + s0)) > 0 ? imin(C, K - (c0 + s0)) : C;
    int8_t* qs = dst + s0;
    for (int j = 0; j < E / 2; ++j) {
      qs[j] = nat[s0 + 2 * j];
      qs[E / 2 + j] = nat[s0 + 2 * j + 1];
    }
    for (int j = E; j < C; ++j) qs[j] = 0;
  }
}

// Quantizes one row of K floats into QAct row `row` (see QAct in common.h).
void quantize_row(const float* xr, const QAct& a, int row) {
  const int K = a.K, Kp = a.Kp, gs = a.group_size, L = a.lane, C = a.order, P = a.P;
  int8_t* q = a.q + (int64_t)row * Kp * P;
  float* gsum = a.gsum + (int64_t)row * a.Gp;
  float* ld = a.ldx + (int64_t)row * (Kp / L);
  const int G = K / gs;
  for (int g = 0; g < a.Gp; ++g) {
    float s = 0.0f;
    if (g < G) {
#pragma omp simd reduction(+ : s)
      for (int j = 0; j < gs; ++j) s += xr[g * gs + j];
    }
    gsum[g] = s;
  }
  int8_t hi[kChunk], lo[kChunk];
  for (int c0 = 0; c0 < Kp; c0 += kChunk) {
    for (int b = c0 / kBlock; b < (c0 + kChunk) / kBlock; ++b) {
      int8_t* hb = hi + (b * kBlock - c0);
      int8_t* lb = lo + (b * kBlock - c0);
      float* lane_d = ld + b * kBlock / L;
      if (b * kBlock >= K) {
        for (int j = 0; j < kBlock; ++j) hb[j] = lb[j] = 0;
        for (int j = 0; j < kBlock / L; ++j) lane_d[j] = 0.0f;
        continue;
      }
      const float* xb = xr + b * kBlock;
      float amax = 0.0f;
#pragma omp simd reduction(max : amax)
      for (int j = 0; j < kBlock; ++j) amax = fmaxf(amax, fabsf(xb[j]));
      const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      const float d = amax / 127.0f;
      float qh[kBlock];
#pragma omp simd
      for (int j = 0; j < kBlock; ++j) {
        qh[j] = round_even(xb[j] * inv);
        hb[j] = to_int8(qh[j]);
      }
      if (P == 2) {
        const float inv_lo = inv * 256.0f;
#pragma omp simd
        for (int j = 0; j < kBlock; ++j) {
          const float h = qh[j] == qh[j] ? qh[j] : 0.0f;
          lb[j] = to_int8(round_even((xb[j] - d * h) * inv_lo));
        }
      }
      const float lane_scale = P == 2 ? d * (1.0f / 256.0f) : d;
      for (int j = 0; j < kBlock / L; ++j) lane_d[j] = lane_scale;
    }
    int8_t* qc = q + (int64_t)c0 * P;
    reorder(hi, c0, K, C, qc);
    if (P == 2) reorder(lo, c0, K, C, qc + kChunk);
  }
  if (a.lxs) {  // only with the natural order (8-bit weights)
    int32_t* lx = a.lxs + (int64_t)row * (Kp / L);
    for (int o = 0; o < Kp / L; ++o) {
      const int e = o * L;
      const int8_t* qc = q + (int64_t)(e / kChunk) * kChunk * P + e % kChunk;
      int s = 0;
      for (int j = 0; j < L; ++j) s += P == 2 ? 256 * qc[j] + qc[j + kChunk] : qc[j];
      lx[o] = 128 * s;
    }
  }
}

inline void store(float v, int m, int n, float* y, int64_t ldy, const float* bias, const float* res,
                  int64_t ldr) {
  if (bias) v += bias[n];
  if (res) v += res[(int64_t)m * ldr + n];
  y[(int64_t)m * ldy + n] = v;
}

// The bytes of element e (a multiple of 32) of QAct row m: hi at the pointer, lo 128 further.
inline const int8_t* xq_at(const QAct& X, int m, int e) {
  return X.q + (int64_t)m * X.Kp * X.P + (int64_t)(e / kChunk) * kChunk * X.P + e % kChunk;
}

// ---------------------------------------------------------------------------------------
// Scalar reference: natural order, one block at a time.
template <int BITS>
float dot_scalar(const QWeight& W, const QAct& X, int n, int m) {
  const int K = W.K, gsh = gshift(W.group_size), G = K >> gsh, L = X.lane;
  const uint8_t* wr = (const uint8_t*)W.w + (int64_t)n * K * BITS / 8;
  const float* ld = X.ldx + (int64_t)m * (X.Kp / L);
  const float* gsum = X.gsum + (int64_t)m * X.Gp;
  float acc = 0.0f, bacc = 0.0f;
  for (int b = 0; b < K / kBlock; ++b) {
    const int8_t* xq = xq_at(X, m, b * kBlock);
    int hs = 0, ls = 0;
    for (int j = 0; j < kBlock; ++j) {
      const int k = b * kBlock + j;
      const int qv = BITS == 4 ? (wr[k >> 1] >> ((k & 1) * 4)) & 0xF : wr[k];
      hs += qv * xq[j];
      if (X.P == 2) ls += qv * xq[j + kChunk];
    }
    const int isum = X.P == 2 ? 256 * hs + ls : hs;
    acc += load_scale(W.scales, (int64_t)n * G + ((b * kBlock) >> gsh), W.stype) * ld[b * kBlock / L] * (float)isum;
  }
  for (int g = 0; g < G; ++g) bacc += load_scale(W.biases, (int64_t)n * G + g, W.stype) * gsum[g];
  return acc + bacc;
}

template <int BITS>
void qmm_scalar(const QWeight& W, const QAct& X, int m0, int m1, int n0, int n1, float* y,
                int64_t ldy, const float* bias, const float* res, int64_t ldr) {
  for (int n = n0; n < n1; ++n) {
    for (int m = m0; m < m1; ++m) store(dot_scalar<BITS>(W, X, n, m), m, n, y, ldy, bias, res, ldr);
  }
}

#if defined(SQ_ISA_avx512)
#include "kernels_qmm_avx512.h"
#endif

#if defined(SQ_ISA_avx2)
#include "kernels_qmm_avx2.h"
#endif

#if defined(SQ_ISA_avx2) || defined(SQ_ISA_avx512)
template <int BITS, int NR, int MR, int ST, int P>
inline void tile(const QWeight& W, const QAct& X, int m, int n, float* y, int64_t ldy, const float* bias,
                 const float* res, int64_t ldr) {
  if constexpr (BITS == 4) {
    tile4<NR, MR, ST, P>(W, X, m, n, y, ldy, bias, res, ldr);
  } else {
    tile8<NR, MR, ST, P>(W, X, m, n, y, ldy, bias, res, ldr);
  }
}

// Weight rows [n0, n1) against x rows [m, m + MR): tiles of NR weight rows, then single rows.
template <int BITS, int MR, int ST, int P>
inline void tiles_n(const QWeight& W, const QAct& X, int m, int n0, int n1, float* y, int64_t ldy,
                    const float* bias, const float* res, int64_t ldr) {
  // AVX2 has 16 vector registers: 2 weight rows x 4 rows of x (8 sums, 4 unpacked weights, 4
  // activation loads, scales) spilled, as did 4 x 2. One weight row per 3-4 rows of x, and two
  // per 2, measured 7-12% faster on passes of 4-16 rows and 4-7% on 2
  // (benchmarks/results/20261202T095720Z_kernel-ab.json), same outputs. On AVX-512 the 8-bit head
  // of one or two rows (decode) takes two weight rows a tile: with four it ran 9% slower once the
  // chunk loops lost their scalar work (20261202T135726Z against 20261202T135705Z, kernel-ab).
#if defined(SQ_ISA_avx2)
  constexpr int NR = MR == 1 ? 4 : (MR == 2 ? 2 : 1);
#else
  constexpr int NR = MR <= 2 && BITS == 8 ? 2 : (MR <= 2 ? 4 : 2);
#endif
  int n = n0;
  for (; n + NR <= n1; n += NR) tile<BITS, NR, MR, ST, P>(W, X, m, n, y, ldy, bias, res, ldr);
  for (; n < n1; ++n) tile<BITS, 1, MR, ST, P>(W, X, m, n, y, ldy, bias, res, ldr);
}

// Rows [m0, m1) of x in register tiles of MR_MAX rows, then the rest.
template <int BITS, int ST, int P>
void run_tiles(const QWeight& W, const QAct& X, int m0, int m1, int n0, int n1, float* y, int64_t ldy,
               const float* bias, const float* res, int64_t ldr) {
  constexpr int MR_MAX = 4;
  int m = m0;
  for (; m + MR_MAX <= m1; m += MR_MAX) tiles_n<BITS, MR_MAX, ST, P>(W, X, m, n0, n1, y, ldy, bias, res, ldr);
  switch (m1 - m) {
    case 3: tiles_n<BITS, 3, ST, P>(W, X, m, n0, n1, y, ldy, bias, res, ldr); break;
    case 2: tiles_n<BITS, 2, ST, P>(W, X, m, n0, n1, y, ldy, bias, res, ldr); break;
    case 1: tiles_n<BITS, 1, ST, P>(W, X, m, n0, n1, y, ldy, bias, res, ldr); break;
  }
}

template <int ST>
void qmm_simd_st(const QWeight& W, const QAct& X, int m0, int m1, int n0, int n1, float* y,
                 int64_t ldy, const float* bias, const float* res, int64_t ldr) {
  if (W.bits == 4) {
    if (X.P == 2) run_tiles<4, ST, 2>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
    else run_tiles<4, ST, 1>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
  } else {
    if (X.P == 2) run_tiles<8, ST, 2>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
    else run_tiles<8, ST, 1>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
  }
}

}  // namespace

void qmm(const QWeight& W, const QAct& X, int m0, int m1, int n0, int n1, float* y, int64_t ldy,
         const float* bias, const float* res, int64_t ldr) {
  switch (W.stype) {
    case kF32: return qmm_simd_st<kF32>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
    case kF16: return qmm_simd_st<kF16>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
    default: return qmm_simd_st<kBF16>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
  }
}
#else
}  // namespace

void qmm(const QWeight& W, const QAct& X, int m0, int m1, int n0, int n1, float* y, int64_t ldy,
         const float* bias, const float* res, int64_t ldr) {
  if (W.bits == 4) {
    qmm_scalar<4>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
  } else {
    qmm_scalar<8>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
  }
}
#endif

void quantize(const float* x, int64_t ldx, int m0, int m1, const QAct& a) {
  for (int m = m0; m < m1; ++m) quantize_row(x + (int64_t)m * ldx, a, m);
}

}  // namespace SQ_ISA
}  // namespace sqn
