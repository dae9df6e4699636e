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
// ---------------------------------------------------------------------------------------
// AVX-512 VNNI: vpdpbusd multiplies unsigned weight bytes by signed activation bytes and sums
// each 4 into an int32 lane. A lane covers 8 elements for 4-bit weights (4 low nibbles with the
// even elements, 4 high nibbles with the odd ones) or 4 elements for 8-bit weights. A register
// tile is NR weight rows by MR rows of x: each weight chunk is unpacked once for MR rows, each
// activation chunk loaded once for NR rows.

template <int ST>
inline __m512 load_vals16(const void* p, int64_t i, int n) {  // up to 16 scales or biases
  const __mmask16 mk = (__mmask16)((1u << n) - 1);
  if (ST == kF32) return _mm512_maskz_loadu_ps(mk, (const float*)p + i);
  __m256i h = _mm256_maskz_loadu_epi16(mk, (const uint16_t*)p + i);
  if (ST == kF16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Lane i of a chunk holds elements [lane_elems * i, lane_elems * (i + 1)): its group in the chunk.
inline __m512i lane_index(int lane_elems, int gsh) {
  const __m512i first = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(lane_elems));
  return _mm512_srl_epi32(first, _mm_cvtsi32_si128(gsh));
}

// The bias term of NR x MR outputs: sum over groups of bias[n, g] * gsum[m, g].
template <int NR, int MR, int ST>
inline void add_bias_term(__m512 (&acc)[NR][MR], const QWeight& W, const QAct& X, int m, int n) {
  const int G = W.K >> gshift(W.group_size);
  for (int g0 = 0; g0 < G; g0 += 16) {
    const int ng = imin(16, G - g0);
    __m512 gv[MR];
    for (int mm = 0; mm < MR; ++mm) gv[mm] = _mm512_loadu_ps(X.gsum + (int64_t)(m + mm) * X.Gp + g0);
    for (int r = 0; r < NR; ++r) {
      const __m512 bv = load_vals16<ST>(W.biases, (int64_t)(n + r) * G + g0, ng);
      for (int mm = 0; mm < MR; ++mm) acc[r][mm] = _mm512_fmadd_ps(bv, gv[mm], acc[r][mm]);
    }
  }
}

// An output's 16 partial sums are added in one fixed order, written out so that no tile shape
// or compiler changes it (a row checked in a pass must equal the row computed alone): halves,
// then quarters, then (0 + 2) + (1 + 3), the order of GCC's _mm512_reduce_add_ps.
inline float reduce1(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
                                 _mm512_castps512_ps256(v));
  const __m128 q = _mm_add_ps(_mm256_extractf128_ps(h, 1), _mm256_castps256_ps128(h));
  const __m128 p = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
}

// reduce1 of 8 vectors at once, out[i] for v[i], in a transposing tree of 24 instructions
// instead of 8 separate trees: passes of 4-16 rows measured 9-17% faster (benchmarks/kernel_ab.py).
inline void reduce8(const __m512 (&v)[8], float* out) {
  __m512 s[4], t[2];
  for (int i = 0; i < 4; ++i) {  // halves: [a.q0+a.q2, a.q1+a.q3, b.q0+b.q2, b.q1+b.q3]
    const __m512 lo = _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 hi = _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2));
    s[i] = _mm512_add_ps(hi, lo);
  }
  for (int i = 0; i < 2; ++i) {  // quarters: one 128-bit lane per vector, [a, b, c, d]
    const __m512 e = _mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 o = _mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1));
    t[i] = _mm512_add_ps(o, e);
  }
  // Lane j holds vector j (t[0]) and vector j + 4 (t[1]): (0 + 2), (1 + 3), then their sum.
  const __m512 u = _mm512_add_ps(_mm512_shuffle_ps(t[0], t[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(t[0], t[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(u, u, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(u, u, _MM_SHUFFLE(3, 1, 3, 1)));
  float f[16];
  _mm512_storeu_ps(f, r);
  for (int j = 0; j < 4; ++j) {
    out[j] = f[4 * j];
    out[j + 4] = f[4 * j + 1];
  }
}

template <int NR, int MR>
inline void store_tile(__m512 (&acc)[NR][MR], int m, int n, float* y, int64_t ldy, const float* bias,
                       const float* res, int64_t ldr) {
  constexpr int C = NR * MR;
  if (C < 6) {  // decode's 4x1 tiles and the tails: the batched tree measured no faster there
    for (int r = 0; r < NR; ++r)
      for (int mm = 0; mm < MR; ++mm) store(reduce1(acc[r][mm]), m + mm, n + r, y, ldy, bias, res, ldr);
    return;
  }
  float sums[(C + 7) / 8 * 8];
  for (int b = 0; b < C; b += 8) {
    __m512 v[8];
    for (int i = 0; i < 8; ++i) v[i] = b + i < C ? acc[(b + i) / MR][(b + i) % MR] : _mm512_setzero_ps();
    reduce8(v, sums + b);
  }
  for (int r = 0; r < NR; ++r)
    for (int mm = 0; mm < MR; ++mm) store(sums[r * MR + mm], m + mm, n + r, y, ldy, bias, res, ldr);
}

// Scales of weight row `row` for the 128 / gs groups of chunk c, spread over the 16 lanes.
template <int ST>
inline __m512 chunk_scales(const QWeight& W, int64_t row, int G, int gsh, int c, int chunk, int E, __m512i idx) {
  const int ng = W.group_size <= chunk ? E >> gsh : 1;
  return _mm512_permutexvar_ps(idx, load_vals16<ST>(W.scales, row * G + (((int64_t)c * chunk) >> gsh), ng));
}

template <int NR, int MR, int ST, int P>
void tile4(const QWeight& W, const QAct& X, int m, int n, float* y, int64_t ldy, const float* bias,
           const float* res, int64_t ldr) {
  const int K = W.K;
  const int64_t row_bytes = K / 2;
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const int gsh = gshift(W.group_size), G = K >> gsh;
  const __m512i idx = lane_index(8, gsh);
  const int nch = (K + 127) / 128;
  __m512 acc[NR][MR];
  for (int r = 0; r < NR; ++r)
    for (int mm = 0; mm < MR; ++mm) acc[r][mm] = _mm512_setzero_ps();
  for (int c = 0; c < nch; ++c) {
    const int E = imin(128, K - c * 128);
    const __mmask64 wmask = E == 128 ? ~0ull : (1ull << (E / 2)) - 1;
    __m512i lo[NR], hi[NR];
    __m512 sv[NR];
    for (int r = 0; r < NR; ++r) {
      const uint8_t* wr = (const uint8_t*)W.w + (int64_t)(n + r) * row_bytes + c * 64;
      _mm_prefetch((const char*)wr + kPrefetch, _MM_HINT_T0);
      const __m512i wv = _mm512_maskz_loadu_epi8(wmask, wr);
      lo[r] = _mm512_and_si512(wv, m4);
      hi[r] = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m4);
      sv[r] = chunk_scales<ST>(W, n + r, G, gsh, c, 128, E, idx);
    }
    for (int mm = 0; mm < MR; ++mm) {
      const int8_t* xq = xq_at(X, m + mm, c * 128);
      const __m512 ld = _mm512_loadu_ps(X.ldx + (int64_t)(m + mm) * (X.Kp / 8) + c * 16);
      const __m512i xh0 = _mm512_loadu_si512(xq), xh1 = _mm512_loadu_si512(xq + E / 2);
      __m512i xl0, xl1;
      if (P == 2) {
        xl0 = _mm512_loadu_si512(xq + kChunk);
        xl1 = _mm512_loadu_si512(xq + kChunk + E / 2);
      }
      for (int r = 0; r < NR; ++r) {
        __m512i ia = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[r], xh0);
        ia = _mm512_dpbusd_epi32(ia, hi[r], xh1);
        if (P == 2) {
          ia = _mm512_slli_epi32(ia, 8);
          ia = _mm512_dpbusd_epi32(ia, lo[r], xl0);
          ia = _mm512_dpbusd_epi32(ia, hi[r], xl1);
        }
        acc[r][mm] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), _mm512_mul_ps(sv[r], ld), acc[r][mm]);
      }
    }
  }
  add_bias_term<NR, MR, ST>(acc, W, X, m, n);
  store_tile<NR, MR>(acc, m, n, y, ldy, bias, res, ldr);
}

template <int NR, int MR, int ST, int P>
void tile8(const QWeight& W, const QAct& X, int m, int n, float* y, int64_t ldy, const float* bias,
           const float* res, int64_t ldr) {
  const int K = W.K;
  const int gsh = gshift(W.group_size), G = K >> gsh;
  const __m512i idx = lane_index(4, gsh);
  const int nch = (K + 63) / 64;
  __m512 acc[NR][MR];
  for (int r = 0; r < NR; ++r)
    for (int mm = 0; mm < MR; ++mm) acc[r][mm] = _mm512_setzero_ps();
  for (int c = 0; c < nch; ++c) {
    const int E = imin(64, K - c * 64);
    const __mmask64 wmask = E == 64 ? ~0ull : (1ull << E) - 1;
    __m512i wv[NR];
    __m512 sv[NR];
    for (int r = 0; r < NR; ++r) {
      _mm_prefetch((const char*)W.w + (int64_t)(n + r) * K + c * 64 + kPrefetch, _MM_HINT_T0);
      wv[r] = _mm512_maskz_loadu_epi8(wmask, (const uint8_t*)W.w + (int64_t)(n + r) * K + c * 64);
      sv[r] = chunk_scales<ST>(W, n + r, G, gsh, c, 64, E, idx);
    }
    for (int mm = 0; mm < MR; ++mm) {
      const int8_t* xq = xq_at(X, m + mm, c * 64);
      const __m512 ld = _mm512_loadu_ps(X.ldx + (int64_t)(m + mm) * (X.Kp / 4) + c * 16);
      const __m512i xh = _mm512_loadu_si512(xq);
      __m512i xl;
      if (P == 2) xl = _mm512_loadu_si512(xq + kChunk);
      for (int r = 0; r < NR; ++r) {
        __m512i ia = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[r], xh);
        if (P == 2) ia = _mm512_dpbusd_epi32(_mm512_slli_epi32(ia, 8), wv[r], xl);
        acc[r][mm] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), _mm512_mul_ps(sv[r], ld), acc[r][mm]);
      }
    }
  }
  add_bias_term<NR, MR, ST>(acc, W, X, m, n);
  store_tile<NR, MR>(acc, m, n, y, ldy, bias, res, ldr);
}
#endif

#if defined(SQ_ISA_avx2)
// ---------------------------------------------------------------------------------------
// AVX2: vpmaddubsw (unsigned x signed bytes, pairs summed to int16) then vpmaddwd with ones.
// 8-bit weights would saturate int16, so they are biased to signed (q - 128) and paired with
// the sign trick; the 128 * sum(x) it removes comes back through QAct::lxs.

template <int ST>
inline __m128 load_vals(const void* p, int64_t i, int n) {
  if (ST == kF32) {
    const float* f = (const float*)p + i;
    return n == 2 ? _mm_castpd_ps(_mm_load_sd((const double*)f)) : _mm_load_ss(f);
  }
  const uint16_t* h = (const uint16_t*)p + i;
  const int32_t bits = n == 2 ? (int32_t)((uint32_t)h[0] | ((uint32_t)h[1] << 16)) : (int32_t)h[0];
  const __m128i v = _mm_cvtsi32_si128(bits);
  if (ST == kF16) return _mm_cvtph_ps(v);
  return _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(v), 16));
}

template <int ST>
inline __m256 load_vals8(const void* p, int64_t i) {  // 8 scales or biases
  if (ST == kF32) return _mm256_loadu_ps((const float*)p + i);
  const __m128i h = _mm_loadu_si128((const __m128i*)((const uint16_t*)p + i));
  if (ST == kF16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Lane i of a chunk holds elements [lane_elems * i, lane_elems * (i + 1)): its group in the chunk.
inline __m256i lane_index(int lane_elems, int chunk, int gsh) {
  if ((1 << gsh) > chunk) return _mm256_setzero_si256();
  const __m256i first = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(lane_elems));
  return _mm256_srl_epi32(first, _mm_cvtsi32_si128(gsh));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The bias term of NR x MR outputs: whole vectors of 8 groups, then the rest one by one.
template <int NR, int MR, int ST>
inline void add_bias_term(__m256 (&acc)[NR][MR], float (&tail)[NR][MR], const QWeight& W, const QAct& X, int m,
                          int n) {
  const int G = W.K >> gshift(W.group_size);
  int g0 = 0;
  for (; g0 + 8 <= G; g0 += 8) {
    for (int r = 0; r < NR; ++r) {
      const __m256 bv = load_vals8<ST>(W.biases, (int64_t)(n + r) * G + g0);
      for (int mm = 0; mm < MR; ++mm)
        acc[r][mm] = _mm256_fmadd_ps(bv, _mm256_loadu_ps(X.gsum + (int64_t)(m + mm) * X.Gp + g0), acc[r][mm]);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int mm = 0; mm < MR; ++mm) {
      float t = 0.0f;
      for (int g = g0; g < G; ++g)
        t += load_scale(W.biases, (int64_t)(n + r) * G + g, ST) * X.gsum[(int64_t)(m + mm) * X.Gp + g];
      tail[r][mm] = t;
    }
}

template <int NR, int MR, int ST>
inline void finish_tile(__m256 (&acc)[NR][MR], const QWeight& W, const QAct& X, int m, int n, float* y,
                        int64_t ldy, const float* bias, const float* res, int64_t ldr) {
  float tail[NR][MR];
  add_bias_term<NR, MR, ST>(acc, tail, W, X, m, n);
  for (int r = 0; r < NR; ++r)
    for (int mm = 0; mm < MR; ++mm) store(hsum(acc[r][mm]) + tail[r][mm], m + mm, n + r, y, ldy, bias, res, ldr);
}

template <int NR, int MR, int ST, int P>
void tile4(const QWeight& W, const QAct& X, int m, int n, float* y, int64_t ldy, const float* bias,
           const float* res, int64_t ldr) {
  const int K = W.K, gs = W.group_size, gsh = gshift(gs), G = K >> gsh;
  const int64_t row_bytes = K / 2;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i idx = lane_index(8, 64, gsh);
  const __m256i tail_mask = _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0);
  const int nch = (K + 63) / 64;
  __m256 acc[NR][MR];
  for (int r = 0; r < NR; ++r)
    for (int mm = 0; mm < MR; ++mm) acc[r][mm] = _mm256_setzero_ps();
  for (int c = 0; c < nch; ++c) {
    const int E = imin(64, K - c * 64);  // 64 or 32
    __m256i lo[NR], hi[NR];
    __m256 sv[NR];
    for (int r = 0; r < NR; ++r) {
      const uint8_t* wr = (const uint8_t*)W.w + (int64_t)(n + r) * row_bytes + c * 32;
      if (c % 2 == 0) _mm_prefetch((const char*)wr + kPrefetch, _MM_HINT_T0);
      const __m256i wv = E == 64 ? _mm256_loadu_si256((const __m256i*)wr) : _mm256_maskload_epi32((const int*)wr, tail_mask);
      lo[r] = _mm256_and_si256(wv, m4);
      hi[r] = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m4);
      const int64_t g0 = (int64_t)(n + r) * G + ((c * 64) >> gsh);
      sv[r] = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(load_vals<ST>(W.scales, g0, gs <= 64 ? E >> gsh : 1)), idx);
    }
    for (int mm = 0; mm < MR; ++mm) {
      const int8_t* xq = xq_at(X, m + mm, c * 64);
      const __m256 ld = _mm256_loadu_ps(X.ldx + (int64_t)(m + mm) * (X.Kp / 8) + c * 8);
      const __m256i xh0 = _mm256_loadu_si256((const __m256i*)xq);
      const __m256i xh1 = _mm256_loadu_si256((const __m256i*)(xq + E / 2));
      __m256i xl0, xl1;
      if (P == 2) {
        xl0 = _mm256_loadu_si256((const __m256i*)(xq + kChunk));
        xl1 = _mm256_loadu_si256((const __m256i*)(xq + kChunk + E / 2));
      }
      for (int r = 0; r < NR; ++r) {
        __m256i ia = _mm256_madd_epi16(
            _mm256_add_epi16(_mm256_maddubs_epi16(lo[r], xh0), _mm256_maddubs_epi16(hi[r], xh1)), ones);
        if (P == 2) {
          const __m256i il = _mm256_madd_epi16(
              _mm256_add_epi16(_mm256_maddubs_epi16(lo[r], xl0), _mm256_maddubs_epi16(hi[r], xl1)), ones);
          ia = _mm256_add_epi32(_mm256_slli_epi32(ia, 8), il);
        }
        acc[r][mm] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_mul_ps(sv[r], ld), acc[r][mm]);
      }
    }
  }
  finish_tile<NR, MR, ST>(acc, W, X, m, n, y, ldy, bias, res, ldr);
}

template <int NR, int MR, int ST, int P>
void tile8(const QWeight& W, const QAct& X, int m, int n, float* y, int64_t ldy, const float* bias,
           const float* res, int64_t ldr) {
  const int K = W.K, gsh = gshift(W.group_size), G = K >> gsh;
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i flip = _mm256_set1_epi8((char)0x80);
  const int nch = K / 32;
  __m256 acc[NR][MR];
  for (int r = 0; r < NR; ++r)
    for (int mm = 0; mm < MR; ++mm) acc[r][mm] = _mm256_setzero_ps();
  for (int c = 0; c < nch; ++c) {
    __m256i ws[NR], aw[NR];
    __m256 sv[NR];
    for (int r = 0; r < NR; ++r) {
      const uint8_t* wr = (const uint8_t*)W.w + (int64_t)(n + r) * K + c * 32;
      if (c % 2 == 0) _mm_prefetch((const char*)wr + kPrefetch, _MM_HINT_T0);
      ws[r] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)wr), flip);
      aw[r] = _mm256_abs_epi8(ws[r]);
      sv[r] = _mm256_set1_ps(load_scale(W.scales, (int64_t)(n + r) * G + ((c * 32) >> gsh), ST));
    }
    for (int mm = 0; mm < MR; ++mm) {
      const int8_t* xq = xq_at(X, m + mm, c * 32);
      const int64_t lane = (int64_t)(m + mm) * (X.Kp / 4) + c * 8;
      const __m256 ld = _mm256_loadu_ps(X.ldx + lane);
      const __m256i lx = _mm256_loadu_si256((const __m256i*)(X.lxs + lane));
      const __m256i xh = _mm256_loadu_si256((const __m256i*)xq);
      __m256i xl;
      if (P == 2) xl = _mm256_loadu_si256((const __m256i*)(xq + kChunk));
      for (int r = 0; r < NR; ++r) {
        __m256i ia = _mm256_madd_epi16(_mm256_maddubs_epi16(aw[r], _mm256_sign_epi8(xh, ws[r])), ones);
        if (P == 2) {
          const __m256i il = _mm256_madd_epi16(_mm256_maddubs_epi16(aw[r], _mm256_sign_epi8(xl, ws[r])), ones);
          ia = _mm256_add_epi32(_mm256_slli_epi32(ia, 8), il);
        }
        ia = _mm256_add_epi32(ia, lx);
        acc[r][mm] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_mul_ps(sv[r], ld), acc[r][mm]);
      }
    }
  }
  finish_tile<NR, MR, ST>(acc, W, X, m, n, y, ldy, bias, res, ldr);
}
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
  // (benchmarks/results/20261202T095720Z_kernel-ab.json), same outputs.
#if defined(SQ_ISA_avx2)
  constexpr int NR = MR == 1 ? 4 : (MR == 2 ? 2 : 1);
#else
  constexpr int NR = MR == 1 ? 4 : (MR == 2 ? 4 : 2);
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
