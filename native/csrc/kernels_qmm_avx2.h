// The AVX2 register tiles of the quantized matmul: included by kernels_qmm.cpp inside its ISA
// namespace, after the helpers they use (gshift, load_scale, store, kPrefetch).
#pragma once

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
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      const __m256 bv = load_vals8<ST>(W.biases, (int64_t)(n + r) * G + g0);
#pragma GCC unroll 16
      for (int mm = 0; mm < MR; ++mm)
        acc[r][mm] = _mm256_fmadd_ps(bv, _mm256_loadu_ps(X.gsum + (int64_t)(m + mm) * X.Gp + g0), acc[r][mm]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 16
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
#pragma GCC unroll 16
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 16
    for (int mm = 0; mm < MR; ++mm) store(hsum(acc[r][mm]) + tail[r][mm], m + mm, n + r, y, ldy, bias, res, ldr);
}

template <int NR, int MR>
inline void zero_tile(__m256 (&acc)[NR][MR]) {
#pragma GCC unroll 16
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 16
    for (int mm = 0; mm < MR; ++mm) acc[r][mm] = _mm256_setzero_ps();
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
  const int64_t xstride = (int64_t)X.Kp * X.P, lstride = X.Kp / 8;
  const int8_t* xb = X.q + (int64_t)m * xstride;
  const float* lb = X.ldx + (int64_t)m * lstride;
  __m256 acc[NR][MR];
  zero_tile(acc);
  for (int c = 0; c < nch; ++c) {
    const int E = imin(64, K - c * 64);  // 64 or 32
    __m256i lo[NR], hi[NR];
    __m256 sv[NR];
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      const uint8_t* wr = (const uint8_t*)W.w + (int64_t)(n + r) * row_bytes + c * 32;
      if (c % 2 == 0) _mm_prefetch((const char*)wr + kPrefetch, _MM_HINT_T0);
      const __m256i wv = E == 64 ? _mm256_loadu_si256((const __m256i*)wr) : _mm256_maskload_epi32((const int*)wr, tail_mask);
      lo[r] = _mm256_and_si256(wv, m4);
      hi[r] = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m4);
      const int64_t g0 = (int64_t)(n + r) * G + ((c * 64) >> gsh);
      sv[r] = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(load_vals<ST>(W.scales, g0, gs <= 64 ? E >> gsh : 1)), idx);
    }
#pragma GCC unroll 16
    for (int mm = 0; mm < MR; ++mm) {
      // Element 64c sits in 128-element chunk c / 2 (hi, then lo 128 bytes on), half c % 2.
      const int8_t* xq = xb + mm * xstride + (int64_t)(c >> 1) * kChunk * P + (c & 1) * 64;
      const __m256 ld = _mm256_loadu_ps(lb + mm * lstride + c * 8);
      const __m256i xh0 = _mm256_loadu_si256((const __m256i*)xq);
      const __m256i xh1 = _mm256_loadu_si256((const __m256i*)(xq + E / 2));
      __m256i xl0, xl1;
      if (P == 2) {
        xl0 = _mm256_loadu_si256((const __m256i*)(xq + kChunk));
        xl1 = _mm256_loadu_si256((const __m256i*)(xq + kChunk + E / 2));
      }
#pragma GCC unroll 16
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
  const int64_t xstride = (int64_t)X.Kp * X.P, lstride = X.Kp / 4;
  const int8_t* xb = X.q + (int64_t)m * xstride;
  __m256 acc[NR][MR];
  zero_tile(acc);
  for (int c = 0; c < nch; ++c) {
    __m256i ws[NR], aw[NR];
    __m256 sv[NR];
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      const uint8_t* wr = (const uint8_t*)W.w + (int64_t)(n + r) * K + c * 32;
      if (c % 2 == 0) _mm_prefetch((const char*)wr + kPrefetch, _MM_HINT_T0);
      ws[r] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)wr), flip);
      aw[r] = _mm256_abs_epi8(ws[r]);
      sv[r] = _mm256_set1_ps(load_scale(W.scales, (int64_t)(n + r) * G + ((c * 32) >> gsh), ST));
    }
#pragma GCC unroll 16
    for (int mm = 0; mm < MR; ++mm) {
      // Element 32c sits in 128-element chunk c / 4 (hi, then lo 128 bytes on), at 32 (c % 4).
      const int8_t* xq = xb + mm * xstride + (int64_t)(c >> 2) * kChunk * P + (c & 3) * 32;
      const int64_t lane = (int64_t)(m + mm) * lstride + c * 8;
      const __m256 ld = _mm256_loadu_ps(X.ldx + lane);
      const __m256i lx = _mm256_loadu_si256((const __m256i*)(X.lxs + lane));
      const __m256i xh = _mm256_loadu_si256((const __m256i*)xq);
      __m256i xl;
      if (P == 2) xl = _mm256_loadu_si256((const __m256i*)(xq + kChunk));
#pragma GCC unroll 16
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
