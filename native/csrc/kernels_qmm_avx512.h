// The AVX-512 register tiles of the quantized matmul: included by kernels_qmm.cpp inside its
// ISA namespace, after the helpers they use (gshift, imin, store, kPrefetch).
#pragma once

// ---------------------------------------------------------------------------------------
// AVX-512 VNNI: vpdpbusd multiplies unsigned weight bytes by signed activation bytes and sums
// each 4 into an int32 lane. A lane covers 8 elements for 4-bit weights (4 low nibbles with the
// even elements, 4 high nibbles with the odd ones) or 4 elements for 8-bit weights. A register
// tile is NR weight rows by MR rows of x: each weight chunk is unpacked once for MR rows, each
// activation chunk loaded once for NR rows.

template <int ST>
inline __m512 load_masked16(const void* p, int64_t i, __mmask16 mk) {  // the scales or biases in mk
  if (ST == kF32) return _mm512_maskz_loadu_ps(mk, (const float*)p + i);
  __m256i h = _mm256_maskz_loadu_epi16(mk, (const uint16_t*)p + i);
  if (ST == kF16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

template <int ST>
inline __m512 load_vals16(const void* p, int64_t i, int n) {  // up to 16 scales or biases
  return load_masked16<ST>(p, i, (__mmask16)((1u << n) - 1));
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
#pragma GCC unroll 16
    for (int mm = 0; mm < MR; ++mm) gv[mm] = _mm512_loadu_ps(X.gsum + (int64_t)(m + mm) * X.Gp + g0);
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      const __m512 bv = load_vals16<ST>(W.biases, (int64_t)(n + r) * G + g0, ng);
#pragma GCC unroll 16
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
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r)
#pragma GCC unroll 16
      for (int mm = 0; mm < MR; ++mm) store(reduce1(acc[r][mm]), m + mm, n + r, y, ldy, bias, res, ldr);
    return;
  }
  // A copy in output order: indexing acc itself with a run-time index would keep the whole tile
  // in memory, and the chunk loops then stored every sum on each pass.
  __m512 flat[(C + 7) / 8 * 8];
#pragma GCC unroll 16
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 16
    for (int mm = 0; mm < MR; ++mm) flat[r * MR + mm] = acc[r][mm];
  for (int i = C; i < (C + 7) / 8 * 8; ++i) flat[i] = _mm512_setzero_ps();
  float sums[(C + 7) / 8 * 8];
  for (int b = 0; b < C; b += 8) reduce8(*reinterpret_cast<const __m512(*)[8]>(flat + b), sums + b);
#pragma GCC unroll 16
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 16
    for (int mm = 0; mm < MR; ++mm) store(sums[r * MR + mm], m + mm, n + r, y, ldy, bias, res, ldr);
}

// The scales of one weight row's groups in a chunk, from scale i on, spread over the 16 lanes:
// `mk` covers the groups the chunk holds (the same for every full chunk).
template <int ST>
inline __m512 row_scales(const void* p, int64_t i, __mmask16 mk, __m512i idx) {
  return _mm512_permutexvar_ps(idx, load_masked16<ST>(p, i, mk));
}

template <int NR, int MR>
inline void zero_tile(__m512 (&acc)[NR][MR]) {
#pragma GCC unroll 16
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 16
    for (int mm = 0; mm < MR; ++mm) acc[r][mm] = _mm512_setzero_ps();
}

// A register tile walks K in chunks with its strides, group counts and masks fixed before the
// loop; the one partial chunk (K = 576: half of the fifth) picks its masks from two computed
// up front (tile4) or runs after the loop (tile8, whose full chunks then load unmasked). Every
// lane runs the same arithmetic either way, so a row's sums do not depend on the tile shape.
// Recomputing the addressing and masks per chunk had made the loop half scalar instructions.
template <int NR, int MR, int ST, int P>
void tile4(const QWeight& W, const QAct& X, int m, int n, float* y, int64_t ldy, const float* bias,
           const float* res, int64_t ldr) {
  const int K = W.K;
  const int64_t row_bytes = K / 2;
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const int gsh = gshift(W.group_size), G = K >> gsh;
  const __m512i idx = lane_index(8, gsh);
  const int full = K / 128;
  const int per_chunk = W.group_size <= 128 ? 128 >> gsh : 1;  // scales a full chunk loads
  const int64_t xstride = (int64_t)X.Kp * X.P, lstride = X.Kp / 8;
  const int8_t* xbase = X.q + (int64_t)m * xstride;
  const float* lbase = X.ldx + (int64_t)m * lstride;
  const uint8_t* wbase = (const uint8_t*)W.w + (int64_t)n * row_bytes;
  __m512 acc[NR][MR];
  zero_tile(acc);
  const int tail = K - full * 128;  // elements of the partial chunk, 0 when there is none
  const __mmask64 wtail = (1ull << (tail / 2)) - 1;
  const __mmask16 sfull = (__mmask16)((1u << per_chunk) - 1);
  const __mmask16 stail = (__mmask16)((1u << (W.group_size <= 128 ? tail >> gsh : 1)) - 1);
  for (int c = 0; c < full + (tail > 0); ++c) {
    const bool part = c == full;
    const int E = part ? tail : 128;
    const __mmask64 wmask = part ? wtail : ~0ull;
    const __mmask16 smask = part ? stail : sfull;
    __m512i lo[NR], hi[NR];
    __m512 sv[NR];
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      const uint8_t* wr = wbase + r * row_bytes + c * 64;
      _mm_prefetch((const char*)wr + kPrefetch, _MM_HINT_T0);
      const __m512i wv = _mm512_maskz_loadu_epi8(wmask, wr);
      lo[r] = _mm512_and_si512(wv, m4);
      hi[r] = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m4);
      sv[r] = row_scales<ST>(W.scales, (int64_t)(n + r) * G + (((int64_t)c * 128) >> gsh), smask, idx);
    }
#pragma GCC unroll 16
    for (int mm = 0; mm < MR; ++mm) {
      const int8_t* xq = xbase + mm * xstride + (int64_t)c * 128 * P;
      const __m512 ld = _mm512_loadu_ps(lbase + mm * lstride + c * 16);
      const __m512i xh0 = _mm512_loadu_si512(xq), xh1 = _mm512_loadu_si512(xq + E / 2);
      __m512i xl0, xl1;
      if (P == 2) {
        xl0 = _mm512_loadu_si512(xq + kChunk);
        xl1 = _mm512_loadu_si512(xq + kChunk + E / 2);
      }
#pragma GCC unroll 16
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

// One 64-element chunk c of a tile8 tile: NR weight rows (`wb`, K bytes apart) against MR rows
// of x; PART: the partial last chunk, its weight bytes and scales masked.
template <int NR, int MR, int ST, int P, bool PART>
__attribute__((always_inline)) inline void chunk8(__m512 (&acc)[NR][MR], const uint8_t* wb, int K,
                                                  const void* scales, int64_t s0, int G, int gsh, int c,
                                                  const int8_t* xb, int64_t xstride, const float* lb,
                                                  int64_t lstride, __mmask64 wtail, __mmask16 smask,
                                                  __m512i idx) {
  __m512i wv[NR];
  __m512 sv[NR];
#pragma GCC unroll 16
  for (int r = 0; r < NR; ++r) {
    const uint8_t* wr = wb + (int64_t)r * K + c * 64;
    _mm_prefetch((const char*)wr + kPrefetch, _MM_HINT_T0);
    wv[r] = PART ? _mm512_maskz_loadu_epi8(wtail, wr) : _mm512_loadu_si512(wr);
    sv[r] = row_scales<ST>(scales, s0 + (int64_t)r * G + (((int64_t)c * 64) >> gsh), smask, idx);
  }
  // Element 64c sits in 128-element chunk c / 2 (hi, then lo 128 bytes on), half c % 2.
  const int64_t off = (int64_t)(c >> 1) * kChunk * P + (c & 1) * 64;
#pragma GCC unroll 16
  for (int mm = 0; mm < MR; ++mm) {
    const int8_t* xq = xb + mm * xstride + off;
    const __m512 ld = _mm512_loadu_ps(lb + mm * lstride + c * 16);
    const __m512i xh = _mm512_loadu_si512(xq);
    __m512i xl;
    if (P == 2) xl = _mm512_loadu_si512(xq + kChunk);
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      __m512i ia = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[r], xh);
      if (P == 2) ia = _mm512_dpbusd_epi32(_mm512_slli_epi32(ia, 8), wv[r], xl);
      acc[r][mm] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), _mm512_mul_ps(sv[r], ld), acc[r][mm]);
    }
  }
}

template <int NR, int MR, int ST, int P>
void tile8(const QWeight& W, const QAct& X, int m, int n, float* y, int64_t ldy, const float* bias,
           const float* res, int64_t ldr) {
  const int K = W.K;
  const int gsh = gshift(W.group_size), G = K >> gsh;
  const __m512i idx = lane_index(4, gsh);
  const int full = K / 64, tail = K - full * 64;
  const int64_t xstride = (int64_t)X.Kp * X.P, lstride = X.Kp / 4;
  const int8_t* xb = X.q + (int64_t)m * xstride;
  const float* lb = X.ldx + (int64_t)m * lstride;
  const uint8_t* wb = (const uint8_t*)W.w + (int64_t)n * K;
  const int64_t s0 = (int64_t)n * G;
  __m512 acc[NR][MR];
  zero_tile(acc);
  const __mmask16 sfull = (__mmask16)((1u << (W.group_size <= 64 ? 64 >> gsh : 1)) - 1);
  for (int c = 0; c < full; ++c)
    chunk8<NR, MR, ST, P, false>(acc, wb, K, W.scales, s0, G, gsh, c, xb, xstride, lb, lstride, 0, sfull, idx);
  if (tail) {
    const __mmask16 stail = (__mmask16)((1u << (W.group_size <= 64 ? tail >> gsh : 1)) - 1);
    chunk8<NR, MR, ST, P, true>(acc, wb, K, W.scales, s0, G, gsh, full, xb, xstride, lb, lstride,
                                (1ull << tail) - 1, stail, idx);
  }
  add_bias_term<NR, MR, ST>(acc, W, X, m, n);
  store_tile<NR, MR>(acc, m, n, y, ldy, bias, res, ldr);
}
