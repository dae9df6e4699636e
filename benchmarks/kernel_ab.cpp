// Driver of benchmarks/kernel_ab.py: the quantized matmul of two builds of the kernel sources
// (namespaces sqn::kernel_a and sqn::kernel_b), on one thread, timed in alternating order on the
// same weights and activations.
//
//   kernel_ab K N BITS M RUNS WARMUP  ->  one JSON object on stdout
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <vector>

#include "common.h"

namespace sqn {
namespace kernel_a {
const Kernels* kernels();
}
namespace kernel_b {
const Kernels* kernels();
}
}  // namespace sqn

using namespace sqn;

static double now_ms() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char** argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: kernel_ab K N BITS M RUNS WARMUP\n");
    return 1;
  }
  const int K = atoi(argv[1]), N = atoi(argv[2]), bits = atoi(argv[3]), M = atoi(argv[4]);
  const int runs = atoi(argv[5]), warmup = atoi(argv[6]), gs = 32;
  const Kernels* ks[2] = {kernel_a::kernels(), kernel_b::kernels()};
  if (ks[0]->order4 != ks[1]->order4 || ks[0]->wants_lxs != ks[1]->wants_lxs) {
    fprintf(stderr, "kernel_ab: the two builds want different activation layouts\n");
    return 1;
  }
  // Seeded weights in MLX's layout: random nibbles or bytes, float16 scales near 0.01, biases near -0.1.
  srand(1);
  std::vector<uint32_t> w((size_t)N * K * bits / 32);
  for (auto& v : w) v = ((uint32_t)rand() << 16) ^ (uint32_t)rand();
  std::vector<uint16_t> scales((size_t)N * K / gs), biases((size_t)N * K / gs);
  for (auto& v : scales) v = (uint16_t)(0x2000 + rand() % 0x400);
  for (auto& v : biases) v = (uint16_t)(0xA000 + rand() % 0x400);
  const QWeight W{w.data(), scales.data(), biases.data(), kF16, N, K, bits, gs};

  std::vector<float> x((size_t)M * K);
  for (auto& v : x) v = (rand() / (float)RAND_MAX - 0.5f) * 4.0f;
  const int Kp = padded(K), lane = bits == 4 ? 8 : 4, P = 2;
  const int Gp = (Kp / gs + kGroupPad - 1) / kGroupPad * kGroupPad;
  std::vector<int8_t> q((size_t)M * Kp * P);
  std::vector<float> ldx((size_t)M * (Kp / lane)), gsum((size_t)M * Gp);
  std::vector<int32_t> lxs((size_t)M * (Kp / lane));
  const QAct a{q.data(), ldx.data(), gsum.data(), bits == 8 && ks[0]->wants_lxs ? lxs.data() : nullptr,
               M, K, Kp, lane, gs, bits == 4 ? ks[0]->order4 : 0, P, Gp};
  ks[0]->quantize(x.data(), K, 0, M, a);

  // Blocks of 16 weight rows, as the pool hands them out for passes of more than 4 rows.
  std::vector<float> y[2] = {std::vector<float>((size_t)M * N), std::vector<float>((size_t)M * N)};
  auto sweep = [&](int v) {
    for (int n0 = 0; n0 < N; n0 += 16) ks[v]->qmm(W, a, 0, M, n0, n0 + 16 < N ? n0 + 16 : N, y[v].data(), N, nullptr, nullptr, N);
  };
  std::vector<double> t[2];
  for (int r = 0; r < warmup + runs; ++r) {
    for (int i = 0; i < 2; ++i) {
      const int v = r % 2 ? 1 - i : i;
      const double t0 = now_ms();
      sweep(v);
      if (r >= warmup) t[v].push_back(now_ms() - t0);
    }
  }
  double max_diff = 0.0;
  long differ = 0;
  for (size_t i = 0; i < y[0].size(); ++i) {
    max_diff = fmax(max_diff, fabs((double)y[0][i] - y[1][i]));
    differ += y[0][i] != y[1][i];
  }
  printf("{\"isa\": \"%s\", \"max_abs_diff\": %.9g, \"outputs_differing\": %ld, \"a_ms\": [", ks[0]->name, max_diff, differ);
  for (size_t i = 0; i < t[0].size(); ++i) printf("%s%.6f", i ? ", " : "", t[0][i]);
  printf("], \"b_ms\": [");
  for (size_t i = 0; i < t[1].size(); ++i) printf("%s%.6f", i ? ", " : "", t[1][i]);
  printf("]}\n");
  return 0;
}
