// The kernels, compiled once per instruction set (CMakeLists.txt sets SQ_ISA and the -m flags).
// Everything here lives in an ISA-named namespace with internal linkage and uses no C++
// standard library templates (see common.h), so no code compiled for AVX-512 can be linked
// into a scalar caller.
#include <math.h>
#include <string.h>

#include "common.h"

#if defined(SQ_ISA_avx2) || defined(SQ_ISA_avx512)
#include <immintrin.h>
#endif

namespace sqn {
namespace SQ_ISA {
namespace {

inline int imin(int a, int b) {
  return a < b ? a : b;
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

inline float round_even(float v) {  // |v| <= 127: the 1.5 * 2^23 trick rounds to nearest even
  return (v + 12582912.0f) - 12582912.0f;
}

// Quantizes one row of K floats into QAct row `row`; with `residual`, quantizes instead what
// d * q of that row left over (x - d[b] * q[k]), with no group sums (the first row has them).
void quantize_row(const float* xr, const QAct& a, int row, const QAct* hi_of) {
  const int K = a.K, Kp = a.Kp, gs = a.group_size, L = a.lane, C = a.order;
  int8_t* q = a.q + (int64_t)row * Kp;
  float* d = a.d + (int64_t)row * (Kp / kBlock);
  float* gsum = a.gsum + (int64_t)row * (Kp / gs);
  const int8_t* qh = hi_of ? a.q + (int64_t)(row - 1) * Kp : nullptr;
  const float* dh = hi_of ? a.d + (int64_t)(row - 1) * (Kp / kBlock) : nullptr;
  int8_t nat[kChunk];
  int8_t hi_nat[kChunk];
  float rb[kBlock];
  for (int g = 0; g < Kp / gs; ++g) {
    float s = 0.0f;
    if (!hi_of && g * gs < K) {
#pragma omp simd reduction(+ : s)
      for (int j = 0; j < gs; ++j) s += xr[g * gs + j];
    }
    gsum[g] = s;
  }
  for (int c0 = 0; c0 < Kp; c0 += kChunk) {
    if (hi_of) {  // the high row's values in natural order, to form the residual
      if (C == 0) {
        memcpy(hi_nat, qh + c0, kChunk);
      } else {
        for (int s0 = 0; s0 < kChunk; s0 += C) {
          const int E = imin(C, K - (c0 + s0)) > 0 ? imin(C, K - (c0 + s0)) : C;
          for (int j = 0; j < E / 2; ++j) {
            hi_nat[s0 + 2 * j] = qh[c0 + s0 + j];
            hi_nat[s0 + 2 * j + 1] = qh[c0 + s0 + E / 2 + j];
          }
        }
      }
    }
    for (int b = c0 / kBlock; b < (c0 + kChunk) / kBlock; ++b) {
      int8_t* qb = nat + (b * kBlock - c0);
      if (b * kBlock >= K) {
        d[b] = 0.0f;
        for (int j = 0; j < kBlock; ++j) qb[j] = 0;
        continue;
      }
      const float* xb = xr + b * kBlock;
      if (hi_of) {
        const float dhb = dh[b];
        const int8_t* hb = hi_nat + (b * kBlock - c0);
#pragma omp simd
        for (int j = 0; j < kBlock; ++j) rb[j] = xb[j] - dhb * (float)hb[j];
        xb = rb;
      }
      float amax = 0.0f;
#pragma omp simd reduction(max : amax)
      for (int j = 0; j < kBlock; ++j) amax = fmaxf(amax, fabsf(xb[j]));
      const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      d[b] = amax / 127.0f;
#pragma omp simd
      for (int j = 0; j < kBlock; ++j) {
        float r = round_even(xb[j] * inv);
        r = r == r ? r : 0.0f;  // NaN and Inf reach the output through gsum instead
        r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
        qb[j] = (int8_t)(int)r;
      }
    }
    if (C == 0) {
      memcpy(q + c0, nat, kChunk);
    } else {
      for (int s0 = 0; s0 < kChunk; s0 += C) {
        const int E = imin(C, K - (c0 + s0)) > 0 ? imin(C, K - (c0 + s0)) : C;
        int8_t* qs = q + c0 + s0;
        for (int j = 0; j < E / 2; ++j) {
          qs[j] = nat[s0 + 2 * j];
          qs[E / 2 + j] = nat[s0 + 2 * j + 1];
        }
        for (int j = E; j < C; ++j) qs[j] = 0;
      }
    }
  }
  float* ld = a.ldx + (int64_t)row * (Kp / L);
  float* lh = a.lhb + (int64_t)row * (Kp / L);
  const float share = (float)L / (float)gs;
  for (int o = 0; o < Kp / L; ++o) {
    ld[o] = d[o * L / kBlock];
    lh[o] = gsum[o * L / gs] * share;
  }
  if (a.lxs) {  // only with the natural order (8-bit weights)
    int32_t* lx = a.lxs + (int64_t)row * (Kp / L);
    for (int o = 0; o < Kp / L; ++o) {
      int s = 0;
      for (int j = 0; j < L; ++j) s += q[o * L + j];
      lx[o] = 128 * s;
    }
  }
}

void quantize(const float* x, int64_t ldx, int m0, int m1, const QAct& a) {
  for (int m = m0; m < m1; ++m) {
    const float* xr = x + (int64_t)m * ldx;
    if (a.pairs) {
      quantize_row(xr, a, 2 * m, nullptr);
      quantize_row(xr, a, 2 * m + 1, &a);
    } else {
      quantize_row(xr, a, m, nullptr);
    }
  }
}

inline void store(float v, int m, int n, float* y, int64_t ldy, const float* bias, const float* res,
                  int64_t ldr) {
  if (bias) v += bias[n];
  if (res) v += res[(int64_t)m * ldr + n];
  y[(int64_t)m * ldy + n] = v;
}

// ---------------------------------------------------------------------------------------
template <int BITS>
float dot_scalar(const QWeight& W, const QAct& X, int n, int row) {
  const int K = W.K, gs = W.group_size, G = K / gs, Kp = X.Kp;
  const uint8_t* wr = (const uint8_t*)W.w + (int64_t)n * K * BITS / 8;
  const int8_t* xq = X.q + (int64_t)row * Kp;
  const float* d = X.d + (int64_t)row * (Kp / kBlock);
  const float* gsum = X.gsum + (int64_t)row * (Kp / gs);
  float acc = 0.0f, bacc = 0.0f;
  for (int b = 0; b < K / kBlock; ++b) {
    int isum = 0;
    for (int j = 0; j < kBlock; ++j) {
      const int k = b * kBlock + j;
      const int qv = BITS == 4 ? (wr[k >> 1] >> ((k & 1) * 4)) & 0xF : wr[k];
      isum += qv * xq[k];
    }
    acc += load_scale(W.scales, (int64_t)n * G + b * kBlock / gs, W.stype) * d[b] * (float)isum;
  }
  for (int g = 0; g < G; ++g) bacc += load_scale(W.biases, (int64_t)n * G + g, W.stype) * gsum[g];
  return acc + bacc;
}

// Scalar reference: natural order, one block at a time.
template <int BITS>
void qmm_scalar(const QWeight& W, const QAct& X, int m0, int m1, int n0, int n1, float* y,
                int64_t ldy, const float* bias, const float* res, int64_t ldr) {
  for (int n = n0; n < n1; ++n) {
    for (int m = m0; m < m1; ++m) {
      const float v = X.pairs ? dot_scalar<BITS>(W, X, n, 2 * m) + dot_scalar<BITS>(W, X, n, 2 * m + 1)
                              : dot_scalar<BITS>(W, X, n, m);
      store(v, m, n, y, ldy, bias, res, ldr);
    }
  }
}

#if defined(SQ_ISA_avx512)
// ---------------------------------------------------------------------------------------
// AVX-512 VNNI: vpdpbusd multiplies unsigned weight bytes by signed activation bytes and sums
// each 4 into an int32 lane. A lane covers 8 elements for 4-bit weights (4 low nibbles with the
// even elements, 4 high nibbles with the odd ones) or 4 elements for 8-bit weights.

template <int ST>
inline __m128 load_vals(const void* p, int64_t i, int n) {
  const __mmask8 mk = (__mmask8)((1u << n) - 1);
  if (ST == kF32) return _mm_maskz_loadu_ps(mk, (const float*)p + i);
  __m128i h = _mm_maskz_loadu_epi16(mk, (const uint16_t*)p + i);
  if (ST == kF16) return _mm_cvtph_ps(h);
  return _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(h), 16));
}

inline __m512i lane_index(int lane_elems, int chunk, int gs) {
  alignas(64) int idx[16];
  for (int i = 0; i < 16; ++i) idx[i] = gs <= chunk ? lane_elems * i / gs : 0;
  return _mm512_load_si512(idx);
}

// acc += ia * (scale * d) + bias * (group sum share), lane by lane.
inline __m512 accumulate(__m512 acc, __m512i ia, __m512 sv, __m512 bv, const QAct& X, int64_t lane) {
  acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), _mm512_mul_ps(sv, _mm512_loadu_ps(X.ldx + lane)), acc);
  return _mm512_fmadd_ps(bv, _mm512_loadu_ps(X.lhb + lane), acc);
}

template <int MR, bool PAIRS>
inline void store_tile(const __m512* acc, int m, int n, float* y, int64_t ldy, const float* bias,
                       const float* res, int64_t ldr) {
  if (PAIRS) {
    for (int r = 0; r < MR; r += 2)
      store(_mm512_reduce_add_ps(_mm512_add_ps(acc[r], acc[r + 1])), (m + r) / 2, n, y, ldy, bias, res, ldr);
  } else {
    for (int r = 0; r < MR; ++r) store(_mm512_reduce_add_ps(acc[r]), m + r, n, y, ldy, bias, res, ldr);
  }
}

template <int MR, int ST, bool PAIRS>
void tile4(const QWeight& W, const QAct& X, int m, int n0, int n1, float* y, int64_t ldy,
           const float* bias, const float* res, int64_t ldr) {
  const int K = W.K, gs = W.group_size, G = K / gs, Kp = X.Kp;
  const int64_t row_bytes = K / 2;
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i idx = lane_index(8, 128, gs);
  const int nch = (K + 127) / 128;
  for (int n = n0; n < n1; ++n) {
    const uint8_t* wr = (const uint8_t*)W.w + n * row_bytes;
    __m512 acc[MR];
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps();
    for (int c = 0; c < nch; ++c) {
      const int E = imin(128, K - c * 128);
      const __m512i wv = E == 128 ? _mm512_loadu_si512(wr + c * 64)
                                  : _mm512_maskz_loadu_epi8((__mmask64)((1ull << (E / 2)) - 1), wr + c * 64);
      const __m512i lo = _mm512_and_si512(wv, m4);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m4);
      const int64_t g0 = (int64_t)n * G + c * 128 / gs;
      const int ng = gs <= 128 ? E / gs : 1;
      const __m512 sv = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(load_vals<ST>(W.scales, g0, ng)));
      const __m512 bv = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(load_vals<ST>(W.biases, g0, ng)));
      for (int r = 0; r < MR; ++r) {
        const int8_t* xq = X.q + (int64_t)(m + r) * Kp + c * 128;
        __m512i ia = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xq));
        ia = _mm512_dpbusd_epi32(ia, hi, _mm512_loadu_si512(xq + E / 2));
        acc[r] = accumulate(acc[r], ia, sv, bv, X, (int64_t)(m + r) * (Kp / 8) + c * 16);
      }
    }
    store_tile<MR, PAIRS>(acc, m, n, y, ldy, bias, res, ldr);
  }
}

template <int MR, int ST, bool PAIRS>
void tile8(const QWeight& W, const QAct& X, int m, int n0, int n1, float* y, int64_t ldy,
           const float* bias, const float* res, int64_t ldr) {
  const int K = W.K, gs = W.group_size, G = K / gs, Kp = X.Kp;
  const __m512i idx = lane_index(4, 64, gs);
  const int nch = (K + 63) / 64;
  for (int n = n0; n < n1; ++n) {
    const uint8_t* wr = (const uint8_t*)W.w + (int64_t)n * K;
    __m512 acc[MR];
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps();
    for (int c = 0; c < nch; ++c) {
      const int E = imin(64, K - c * 64);
      const __m512i wv = E == 64 ? _mm512_loadu_si512(wr + c * 64)
                                 : _mm512_maskz_loadu_epi8((__mmask64)((1ull << E) - 1), wr + c * 64);
      const int64_t g0 = (int64_t)n * G + c * 64 / gs;
      const int ng = gs <= 64 ? E / gs : 1;
      const __m512 sv = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(load_vals<ST>(W.scales, g0, ng)));
      const __m512 bv = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(load_vals<ST>(W.biases, g0, ng)));
      for (int r = 0; r < MR; ++r) {
        const int8_t* xq = X.q + (int64_t)(m + r) * Kp + c * 64;
        const __m512i ia = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, _mm512_loadu_si512(xq));
        acc[r] = accumulate(acc[r], ia, sv, bv, X, (int64_t)(m + r) * (Kp / 4) + c * 16);
      }
    }
    store_tile<MR, PAIRS>(acc, m, n, y, ldy, bias, res, ldr);
  }
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

inline __m256i lane_index(int lane_elems, int chunk, int gs) {
  alignas(32) int idx[8];
  for (int i = 0; i < 8; ++i) idx[i] = gs <= chunk ? lane_elems * i / gs : 0;
  return _mm256_load_si256((const __m256i*)idx);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 accumulate(__m256 acc, __m256i ia, __m256 sv, __m256 bv, const QAct& X, int64_t lane) {
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_mul_ps(sv, _mm256_loadu_ps(X.ldx + lane)), acc);
  return _mm256_fmadd_ps(bv, _mm256_loadu_ps(X.lhb + lane), acc);
}

template <int MR, bool PAIRS>
inline void store_tile(const __m256* acc, int m, int n, float* y, int64_t ldy, const float* bias,
                       const float* res, int64_t ldr) {
  if (PAIRS) {
    for (int r = 0; r < MR; r += 2) store(hsum(_mm256_add_ps(acc[r], acc[r + 1])), (m + r) / 2, n, y, ldy, bias, res, ldr);
  } else {
    for (int r = 0; r < MR; ++r) store(hsum(acc[r]), m + r, n, y, ldy, bias, res, ldr);
  }
}

template <int MR, int ST, bool PAIRS>
void tile4(const QWeight& W, const QAct& X, int m, int n0, int n1, float* y, int64_t ldy,
           const float* bias, const float* res, int64_t ldr) {
  const int K = W.K, gs = W.group_size, G = K / gs, Kp = X.Kp;
  const int64_t row_bytes = K / 2;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i idx = lane_index(8, 64, gs);
  const __m256i tail_mask = _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0);
  const int nch = (K + 63) / 64;
  for (int n = n0; n < n1; ++n) {
    const uint8_t* wr = (const uint8_t*)W.w + n * row_bytes;
    __m256 acc[MR];
    for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_ps();
    for (int c = 0; c < nch; ++c) {
      const int E = imin(64, K - c * 64);  // 64 or 32
      const __m256i wv = E == 64 ? _mm256_loadu_si256((const __m256i*)(wr + c * 32))
                                 : _mm256_maskload_epi32((const int*)(wr + c * 32), tail_mask);
      const __m256i lo = _mm256_and_si256(wv, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m4);
      const int64_t g0 = (int64_t)n * G + c * 64 / gs;
      const int ng = gs <= 64 ? E / gs : 1;
      const __m256 sv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(load_vals<ST>(W.scales, g0, ng)), idx);
      const __m256 bv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(load_vals<ST>(W.biases, g0, ng)), idx);
      for (int r = 0; r < MR; ++r) {
        const int8_t* xq = X.q + (int64_t)(m + r) * Kp + c * 64;
        const __m256i p = _mm256_add_epi16(
            _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i*)xq)),
            _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i*)(xq + E / 2))));
        acc[r] = accumulate(acc[r], _mm256_madd_epi16(p, ones), sv, bv, X, (int64_t)(m + r) * (Kp / 8) + c * 8);
      }
    }
    store_tile<MR, PAIRS>(acc, m, n, y, ldy, bias, res, ldr);
  }
}

template <int MR, int ST, bool PAIRS>
void tile8(const QWeight& W, const QAct& X, int m, int n0, int n1, float* y, int64_t ldy,
           const float* bias, const float* res, int64_t ldr) {
  const int K = W.K, gs = W.group_size, G = K / gs, Kp = X.Kp;
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i flip = _mm256_set1_epi8((char)0x80);
  const int nch = K / 32;
  for (int n = n0; n < n1; ++n) {
    const uint8_t* wr = (const uint8_t*)W.w + (int64_t)n * K;
    __m256 acc[MR];
    for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_ps();
    for (int c = 0; c < nch; ++c) {
      const __m256i ws = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(wr + c * 32)), flip);
      const __m256i aw = _mm256_abs_epi8(ws);
      const int64_t g = (int64_t)n * G + c * 32 / gs;
      const __m256 sv = _mm256_set1_ps(load_scale(W.scales, g, ST));
      const __m256 bv = _mm256_set1_ps(load_scale(W.biases, g, ST));
      for (int r = 0; r < MR; ++r) {
        const __m256i xv = _mm256_loadu_si256((const __m256i*)(X.q + (int64_t)(m + r) * Kp + c * 32));
        const int64_t lo_off = (int64_t)(m + r) * (Kp / 4) + c * 8;
        __m256i ia = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, ws)), ones);
        ia = _mm256_add_epi32(ia, _mm256_loadu_si256((const __m256i*)(X.lxs + lo_off)));
        acc[r] = accumulate(acc[r], ia, sv, bv, X, lo_off);
      }
    }
    store_tile<MR, PAIRS>(acc, m, n, y, ldy, bias, res, ldr);
  }
}
#endif

#if defined(SQ_ISA_avx2) || defined(SQ_ISA_avx512)
template <int BITS, int MR, int ST, bool PAIRS>
inline void tile(const QWeight& W, const QAct& X, int m, int n0, int n1, float* y, int64_t ldy,
                 const float* bias, const float* res, int64_t ldr) {
  if constexpr (PAIRS && MR % 2 != 0) {
    return;  // pairs never leave an odd number of rows
  } else if constexpr (BITS == 4) {
    tile4<MR, ST, PAIRS>(W, X, m, n0, n1, y, ldy, bias, res, ldr);
  } else {
    tile8<MR, ST, PAIRS>(W, X, m, n0, n1, y, ldy, bias, res, ldr);
  }
}

// Rows [r0, r1) of QAct in register tiles of 4, then the rest.
template <int BITS, int ST, bool PAIRS>
void run_tiles(const QWeight& W, const QAct& X, int r0, int r1, int n0, int n1, float* y, int64_t ldy,
               const float* bias, const float* res, int64_t ldr) {
  int m = r0;
  for (; m + 4 <= r1; m += 4) tile<BITS, 4, ST, PAIRS>(W, X, m, n0, n1, y, ldy, bias, res, ldr);
  switch (r1 - m) {
    case 3: tile<BITS, 3, ST, PAIRS>(W, X, m, n0, n1, y, ldy, bias, res, ldr); break;
    case 2: tile<BITS, 2, ST, PAIRS>(W, X, m, n0, n1, y, ldy, bias, res, ldr); break;
    case 1: tile<BITS, 1, ST, PAIRS>(W, X, m, n0, n1, y, ldy, bias, res, ldr); break;
  }
}

template <int ST>
void qmm_simd_st(const QWeight& W, const QAct& X, int m0, int m1, int n0, int n1, float* y,
                 int64_t ldy, const float* bias, const float* res, int64_t ldr) {
  const int r0 = X.pairs ? 2 * m0 : m0, r1 = X.pairs ? 2 * m1 : m1;
  if (W.bits == 4) {
    if (X.pairs) run_tiles<4, ST, true>(W, X, r0, r1, n0, n1, y, ldy, bias, res, ldr);
    else run_tiles<4, ST, false>(W, X, r0, r1, n0, n1, y, ldy, bias, res, ldr);
  } else {
    if (X.pairs) run_tiles<8, ST, true>(W, X, r0, r1, n0, n1, y, ldy, bias, res, ldr);
    else run_tiles<8, ST, false>(W, X, r0, r1, n0, n1, y, ldy, bias, res, ldr);
  }
}

void qmm(const QWeight& W, const QAct& X, int m0, int m1, int n0, int n1, float* y, int64_t ldy,
         const float* bias, const float* res, int64_t ldr) {
  switch (W.stype) {
    case kF32: return qmm_simd_st<kF32>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
    case kF16: return qmm_simd_st<kF16>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
    default: return qmm_simd_st<kBF16>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
  }
}
#else
void qmm(const QWeight& W, const QAct& X, int m0, int m1, int n0, int n1, float* y, int64_t ldy,
         const float* bias, const float* res, int64_t ldr) {
  if (W.bits == 4) {
    qmm_scalar<4>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
  } else {
    qmm_scalar<8>(W, X, m0, m1, n0, n1, y, ldy, bias, res, ldr);
  }
}
#endif


// ---------------------------------------------------------------------------------------
// Float kernels of the fused ops: plain loops the compiler vectorizes for each ISA.

// exp(x) for x <= 88: 2^n * p(r), r in [-ln2/2, ln2/2], degree-6 polynomial (about 2 ulp).
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, 4);
  return p * scale;
}

void rms_norm(const float* x, const float* w, float eps, int n, float* out) {
  float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / sqrtf(ss / (float)n + eps);
  if (w) {
#pragma omp simd
    for (int i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
  } else {
#pragma omp simd
    for (int i = 0; i < n; ++i) out[i] = x[i] * inv;
  }
}

void rope(float* x, const float* c, const float* s, int dims, int traditional) {
  const int half = dims / 2;
  if (traditional) {
#pragma omp simd
    for (int i = 0; i < half; ++i) {
      const float a = x[2 * i], b = x[2 * i + 1];
      x[2 * i] = a * c[i] - b * s[i];
      x[2 * i + 1] = a * s[i] + b * c[i];
    }
  } else {
#pragma omp simd
    for (int i = 0; i < half; ++i) {
      const float a = x[i], b = x[i + half];
      x[i] = a * c[i] - b * s[i];
      x[i + half] = a * s[i] + b * c[i];
    }
  }
}

void attend(const float* q, const float* k, const float* v, int L, int hd, float scale, float* out,
            float* scores) {
  float m = -3.0e38f;
  for (int j = 0; j < L; ++j) {
    const float* kj = k + (int64_t)j * hd;
    float d = 0.0f;
#pragma omp simd reduction(+ : d)
    for (int i = 0; i < hd; ++i) d += q[i] * kj[i];
    d *= scale;
    scores[j] = d;
    m = d > m ? d : m;
  }
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < L; ++j) {
    const float e = exp_approx(scores[j] - m);
    scores[j] = e;
    sum += e;
  }
  for (int i = 0; i < hd; ++i) out[i] = 0.0f;
  for (int j = 0; j < L; ++j) {
    const float p = scores[j];
    const float* vj = v + (int64_t)j * hd;
#pragma omp simd
    for (int i = 0; i < hd; ++i) out[i] += p * vj[i];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int i = 0; i < hd; ++i) out[i] *= inv;
}

void swiglu(const float* g, const float* u, int n, float* out) {
#pragma omp simd
  for (int i = 0; i < n; ++i) out[i] = g[i] / (1.0f + exp_approx(-g[i])) * u[i];
}

#if defined(SQ_ISA_avx512)
constexpr Kernels table = {"avx512", 128, 0, qmm, quantize, rms_norm, rope, attend, swiglu};
#elif defined(SQ_ISA_avx2)
constexpr Kernels table = {"avx2", 64, 1, qmm, quantize, rms_norm, rope, attend, swiglu};
#else
constexpr Kernels table = {"scalar", 0, 0, qmm, quantize, rms_norm, rope, attend, swiglu};
#endif

}  // namespace

const Kernels* kernels() {
  return &table;
}

}  // namespace SQ_ISA
}  // namespace sqn
