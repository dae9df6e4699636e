// The float kernels of the fused ops and each instruction set's table of kernels (see
// kernels_qmm.cpp for how a file is compiled per ISA): plain loops the compiler vectorizes,
// and on AVX-512 the attention's blocked scores and value sums.
#include <math.h>
#include <string.h>

#include "kernels_isa.h"

#if defined(SQ_ISA_avx512)
#include <immintrin.h>
#endif

namespace sqn {
namespace SQ_ISA {
namespace {

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

// Keys per block: 64 rows of a 64-wide head are 16 KB of K (or V), which stay in L1 while every
// query of the pass reads them.
constexpr int kKeyBlock = 64;

#if defined(SQ_ISA_avx512)
// Heads the AVX-512 attention covers: whole vectors, at most 8 of them in registers.
inline bool vector_head(int hd) {
  return hd % 16 == 0 && hd <= 128;
}

// Lane j of the result is the sum of the 16 lanes of a[j]: pairwise unpacks, then 128-bit
// shuffles. Every lane goes through the same tree, so a key's score does not depend on which
// other keys share its block.
inline __m512 sum16(const __m512 (&a)[16]) {
  __m512 b[8], c[4], d[2];
  for (int i = 0; i < 8; ++i)
    b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {
    const __m512d x = _mm512_castps_pd(b[2 * i]), y = _mm512_castps_pd(b[2 * i + 1]);
    c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  for (int i = 0; i < 2; ++i)
    d[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(d[0], d[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(d[0], d[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// The scores of attend() for heads of 16 * n floats: 16 keys at a time (blocks aligned at key 0,
// so a key is always scored in the same block), each block's keys read once for every query.
void scores_avx512(const float* q, int64_t qs, int nq, int len0, const float* k, int hd, float scale,
                   float* scores, int64_t ld) {
  const int lmax = len0 + nq - 1, nv = hd / 16;
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int j0 = 0; j0 < lmax; j0 += 16) {
    for (int i = 0; i < nq; ++i) {
      const int n = imin(16, len0 + i - j0);
      if (n <= 0) continue;
      const float* qi = q + i * qs;
      __m512 qv[8];
      for (int c = 0; c < nv; ++c) qv[c] = _mm512_loadu_ps(qi + 16 * c);
      __m512 acc[16];
      for (int jj = 0; jj < 16; ++jj) {
        acc[jj] = _mm512_setzero_ps();
        if (jj < n) {
          const float* kj = k + (int64_t)(j0 + jj) * hd;
          for (int c = 0; c < nv; ++c) acc[jj] = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(kj + 16 * c), acc[jj]);
        }
      }
      _mm512_mask_storeu_ps(scores + i * ld + j0, (__mmask16)((1u << n) - 1), _mm512_mul_ps(sum16(acc), vscale));
    }
  }
}

// out_i += sum_j p_ij v_j over blocks of kKeyBlock values, each read once for Q queries at a
// time (a value row loaded once feeds Q queries' FMAs: one query alone made 5 loads for every 4
// FMAs). A query's sums stay in registers through a block and run over j in order, exactly as
// alone; queries whose causal end comes later finish their keys after the shared ones.
template <int Q, int NV>
inline void values_tile(const float* p, int64_t ld, int i0, int len0, int j0, const float* v, int hd, float* out,
                        int64_t os) {
  int end[Q];
  for (int q = 0; q < Q; ++q) end[q] = imin(j0 + kKeyBlock, len0 + i0 + q);  // rises with q
  if (end[Q - 1] <= j0) return;
  __m512 acc[Q][NV];
  for (int q = 0; q < Q; ++q)
    for (int c = 0; c < NV; ++c) acc[q][c] = _mm512_loadu_ps(out + (i0 + q) * os + 16 * c);
  for (int j = j0; j < end[0]; ++j) {
    const float* vj = v + (int64_t)j * hd;
    __m512 vv[NV];
    for (int c = 0; c < NV; ++c) vv[c] = _mm512_loadu_ps(vj + 16 * c);
    for (int q = 0; q < Q; ++q) {
      const __m512 pj = _mm512_set1_ps(p[(i0 + q) * ld + j]);
      for (int c = 0; c < NV; ++c) acc[q][c] = _mm512_fmadd_ps(pj, vv[c], acc[q][c]);
    }
  }
  for (int q = 1; q < Q; ++q)
    for (int j = j0 > end[0] ? j0 : end[0]; j < end[q]; ++j) {
      const __m512 pj = _mm512_set1_ps(p[(i0 + q) * ld + j]);
      const float* vj = v + (int64_t)j * hd;
      for (int c = 0; c < NV; ++c) acc[q][c] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 16 * c), acc[q][c]);
    }
  for (int q = 0; q < Q; ++q)
    for (int c = 0; c < NV; ++c) _mm512_storeu_ps(out + (i0 + q) * os + 16 * c, acc[q][c]);
}

template <int NV>
void values_nv(const float* p, int64_t ld, int nq, int len0, const float* v, int hd, float* out, int64_t os) {
  constexpr int Q = NV <= 4 ? 4 : 2;  // Q x NV sums, NV values and a broadcast in 32 registers
  const int lmax = len0 + nq - 1;
  for (int j0 = 0; j0 < lmax; j0 += kKeyBlock) {
    int i = 0;
    for (; i + Q <= nq; i += Q) values_tile<Q, NV>(p, ld, i, len0, j0, v, hd, out, os);
    for (; i < nq; ++i) values_tile<1, NV>(p, ld, i, len0, j0, v, hd, out, os);
  }
}

void values_avx512(const float* p, int64_t ld, int nq, int len0, const float* v, int hd, float* out, int64_t os) {
  switch (hd / 16) {
    case 1: return values_nv<1>(p, ld, nq, len0, v, hd, out, os);
    case 2: return values_nv<2>(p, ld, nq, len0, v, hd, out, os);
    case 3: return values_nv<3>(p, ld, nq, len0, v, hd, out, os);
    case 4: return values_nv<4>(p, ld, nq, len0, v, hd, out, os);
    case 5: return values_nv<5>(p, ld, nq, len0, v, hd, out, os);
    case 6: return values_nv<6>(p, ld, nq, len0, v, hd, out, os);
    case 7: return values_nv<7>(p, ld, nq, len0, v, hd, out, os);
    default: return values_nv<8>(p, ld, nq, len0, v, hd, out, os);
  }
}
#endif

void attend(const float* q, int64_t qs, int nq, int len0, const float* k, const float* v, int hd, float scale,
            float* out, int64_t os, float* scores) {
  const int lmax = len0 + nq - 1, ld = lmax + 1;  // row i: its scores, then their sum at lmax
#if defined(SQ_ISA_avx512)
  if (vector_head(hd)) {
    scores_avx512(q, qs, nq, len0, k, hd, scale, scores, ld);
  } else
#endif
  for (int j0 = 0; j0 < lmax; j0 += kKeyBlock) {
    const int j1 = imin(j0 + kKeyBlock, lmax);
    for (int i = 0; i < nq; ++i) {
      const float* qi = q + i * qs;
      float* si = scores + (int64_t)i * ld;
      const int end = imin(j1, len0 + i);
      for (int j = j0; j < end; ++j) {
        const float* kj = k + (int64_t)j * hd;
        float d = 0.0f;
#pragma omp simd reduction(+ : d)
        for (int c = 0; c < hd; ++c) d += qi[c] * kj[c];
        si[j] = d * scale;
      }
    }
  }
  for (int i = 0; i < nq; ++i) {
    float* si = scores + (int64_t)i * ld;
    const int len = len0 + i;
    float m = -3.0e38f;
#pragma omp simd reduction(max : m)
    for (int j = 0; j < len; ++j) m = si[j] > m ? si[j] : m;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < len; ++j) {
      const float e = exp_approx(si[j] - m);
      si[j] = e;
      sum += e;
    }
    si[lmax] = sum;
    float* oi = out + i * os;
    for (int c = 0; c < hd; ++c) oi[c] = 0.0f;
  }
#if defined(SQ_ISA_avx512)
  if (vector_head(hd)) {
    values_avx512(scores, ld, nq, len0, v, hd, out, os);
  } else
#endif
  for (int j0 = 0; j0 < lmax; j0 += kKeyBlock) {
    const int j1 = imin(j0 + kKeyBlock, lmax);
    for (int i = 0; i < nq; ++i) {
      const float* si = scores + (int64_t)i * ld;
      float* oi = out + i * os;
      const int end = imin(j1, len0 + i);
      for (int j = j0; j < end; ++j) {
        const float p = si[j];
        const float* vj = v + (int64_t)j * hd;
#pragma omp simd
        for (int c = 0; c < hd; ++c) oi[c] += p * vj[c];
      }
    }
  }
  for (int i = 0; i < nq; ++i) {
    const float inv = 1.0f / scores[(int64_t)i * ld + lmax];
    float* oi = out + i * os;
#pragma omp simd
    for (int c = 0; c < hd; ++c) oi[c] *= inv;
  }
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
