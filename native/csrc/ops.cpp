#include "ops.h"

#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "pool.h"
#include "prof.h"

namespace sqn {

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("squish_native: " + what);
}

std::string shape_str(const mx::Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

int scale_type(mx::Dtype t) {
  if (t == mx::float32) return kF32;
  if (t == mx::float16) return kF16;
  if (t == mx::bfloat16) return kBF16;
  return -1;
}

// A per-thread growing buffer (kernels run on MLX's stream thread; a stream runs one task at
// a time, so one buffer per thread is enough).
struct Scratch {
  void* p = nullptr;
  size_t size = 0;
  void* get(size_t bytes) {
    if (bytes > size) {
      std::free(p);
      size = (bytes + 4095) / 4096 * 4096;
      p = std::aligned_alloc(64, size);
      if (!p) throw std::bad_alloc();
    }
    return p;
  }
};

thread_local Scratch act_scratch;
thread_local Scratch copy_scratch;

inline size_t align64(size_t n) {
  return (n + 63) / 64 * 64;
}

}  // namespace

void copy_strided(const mx::array& a, float* dst) {
  const float* src = a.data<float>();
  const int nd = a.ndim();
  std::vector<int> idx(nd, 0);
  int64_t loc = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    dst[i] = src[loc];
    for (int d = nd - 1; d >= 0; --d) {
      loc += a.strides()[d];
      if (++idx[d] < a.shape(d)) break;
      loc -= a.strides()[d] * a.shape(d);
      idx[d] = 0;
    }
  }
}

namespace {

// The float rows of a, in place when row-contiguous, else copied into scratch.
const float* rows_of(const mx::array& a, Scratch& scratch) {
  if (a.flags().row_contiguous) return a.data<float>();
  float* dst = static_cast<float*>(scratch.get(a.size() * sizeof(float)));
  copy_strided(a, dst);
  return dst;
}

}  // namespace

// [y_0 | y_1 | ...] = x @ [W_0 | W_1 | ...].T (+ bias) (+ res) for M rows, the weights sharing K,
// bits and group size (q/k/v, gate/up): x is quantized once into int8 blocks, then the integer
// dot products of all weights run in one parallel region. y, bias and res span the summed N.
void run_qmm(const Kernels& k, const QWeight* ws, int nw, const float* x, int M, float* y, const float* bias,
             const float* res, bool precise) {
  Pool& pool = Pool::get();
  const QWeight& W0 = ws[0];
  const int K = W0.K, Kp = padded(K), gs = W0.group_size;
  int N = 0;
  for (int i = 0; i < nw; ++i) N += ws[i].N;
  const int lane = W0.bits == 4 ? 8 : 4;
  const bool lxs = W0.bits == 8 && k.wants_lxs;
  const int P = precise ? 2 : 1;
  const int Gp = (Kp / gs + kGroupPad - 1) / kGroupPad * kGroupPad;
  const size_t q_bytes = align64((size_t)M * Kp * P);
  const size_t l_bytes = align64((size_t)M * (Kp / lane) * 4);
  const size_t g_bytes = align64((size_t)M * Gp * 4);
  char* base = static_cast<char*>(act_scratch.get(q_bytes + g_bytes + 2 * l_bytes));
  QAct a;
  a.q = reinterpret_cast<int8_t*>(base);
  a.gsum = reinterpret_cast<float*>(base + q_bytes);
  a.ldx = reinterpret_cast<float*>(base + q_bytes + g_bytes);
  a.lxs = lxs ? reinterpret_cast<int32_t*>(base + q_bytes + g_bytes + l_bytes) : nullptr;
  a.M = M;
  a.P = P;
  a.Gp = Gp;
  a.K = K;
  a.Kp = Kp;
  a.lane = lane;
  a.group_size = gs;
  a.order = W0.bits == 4 ? k.order4 : 0;

  const int threads = pool.threads();
  const int qtasks = M >= 8 ? (M < threads * 4 ? M : threads * 4) : 1;
  pool.parallel_for(qtasks, [&](int t) {
    const int m0 = (int)((int64_t)M * t / qtasks), m1 = (int)((int64_t)M * (t + 1) / qtasks);
    k.quantize(x, K, m0, m1, a);
  });

  // Decode: a few rows of x, split the weight rows finely; prefill: blocks of 16 weight rows
  // that stay in L1 while every row of x passes over them.
  int nb = 16;
  if (M <= 4) {
    nb = (N + threads * 8 - 1) / (threads * 8);
    nb = nb < 16 ? 16 : (nb + 15) / 16 * 16;
  }
  int first[9] = {0}, col[9] = {0};  // each weight's first task and first output column
  int tasks = 0;
  for (int i = 0; i < nw; ++i) {
    first[i] = tasks;
    col[i + 1] = col[i] + ws[i].N;
    tasks += (ws[i].N + nb - 1) / nb;
  }
  first[nw] = tasks;
  pool.parallel_for(tasks, [&](int t) {
    int i = 0;
    while (t >= first[i + 1]) ++i;
    const QWeight& W = ws[i];
    const int n0 = (t - first[i]) * nb, n1 = n0 + nb < W.N ? n0 + nb : W.N;
    k.qmm(W, a, 0, M, n0, n1, y + col[i], N, bias ? bias + col[i] : nullptr, res ? res + col[i] : nullptr, N);
  });
}

namespace {

class QuantizedMatmul : public mx::UnaryPrimitive {
 public:
  QuantizedMatmul(mx::Stream stream, int group_size, int bits, bool has_bias, bool has_res, bool precise)
      : mx::UnaryPrimitive(stream),
        group_size_(group_size),
        bits_(bits),
        has_bias_(has_bias),
        has_res_(has_res),
        precise_(precise) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    const auto& w = inputs[1];
    const auto& scales = inputs[2];
    const auto& biases = inputs[3];
    int i = 4;
    const mx::array* bias = has_bias_ ? &inputs[i++] : nullptr;
    const mx::array* res = has_res_ ? &inputs[i++] : nullptr;
    for (const auto* a : {&w, &scales, &biases}) {
      if (!a->flags().row_contiguous) throw std::runtime_error("squish_native: quantized weights must be row-contiguous");
    }
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = mx::cpu::get_command_encoder(stream());
    enc.set_input_array(x);
    enc.set_output_array(out);
    QWeight W{w.data<uint32_t>(), scales.data<void>(), biases.data<void>(), scale_type(scales.dtype()),
              (int)w.shape(0), (int)x.shape(-1), bits_, group_size_};
    const int M = (int)(x.size() / x.shape(-1));
    enc.dispatch([W, x, M, precise = precise_, y = out.data<float>(), bias_arr = bias ? std::optional<mx::array>(*bias) : std::nullopt,
                  res_arr = res ? std::optional<mx::array>(*res) : std::nullopt]() {
      const Kernels& k = kernels();
      const float* xr = rows_of(x, copy_scratch);
      const float* b = bias_arr ? bias_arr->data<float>() : nullptr;
      const float* r = res_arr ? rows_of(*res_arr, act_scratch_res()) : nullptr;
      ProfScope ps(kPhMatmul);
      run_qmm(k, &W, 1, xr, M, y, b, r, precise);
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("squish_native: QuantizedMatmul has no GPU kernel");
  }

  const char* name() const override {
    return "SquishQuantizedMatmul";
  }

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const QuantizedMatmul&>(other);
    return group_size_ == o.group_size_ && bits_ == o.bits_ && has_bias_ == o.has_bias_ && has_res_ == o.has_res_ &&
        precise_ == o.precise_;
  }

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    auto shape = inputs[0].shape();
    shape.back() = inputs[1].shape(0);
    return {shape};
  }

 private:
  static Scratch& act_scratch_res() {
    thread_local Scratch s;
    return s;
  }
  int group_size_, bits_;
  bool has_bias_, has_res_, precise_;
};

}  // namespace

mx::array quantized_matmul(const mx::array& x, const mx::array& w, const mx::array& scales,
                           const mx::array& biases, int group_size, int bits,
                           const std::optional<mx::array>& bias, const std::optional<mx::array>& residual,
                           bool precise, mx::StreamOrDevice s) {
  if (bits != 4 && bits != 8) fail("bits must be 4 or 8, got " + std::to_string(bits));
  if (group_size != 32 && group_size != 64 && group_size != 128)
    fail("group_size must be 32, 64 or 128, got " + std::to_string(group_size));
  if (x.dtype() != mx::float32) fail("x must be float32");
  if (x.ndim() < 1) fail("x must have at least one dimension");
  const int K = x.shape(-1);
  if (K % group_size != 0) fail("the last axis of x (" + std::to_string(K) + ") must be a multiple of group_size");
  if (w.dtype() != mx::uint32 || w.ndim() != 2 || w.shape(1) * 32 != K * bits)
    fail("w must be uint32 of shape (N, " + std::to_string(K * bits / 32) + "), got " + shape_str(w.shape()));
  const int N = w.shape(0);
  const mx::Shape group_shape{N, K / group_size};
  if (scales.shape() != group_shape || biases.shape() != group_shape)
    fail("scales and biases must have shape " + shape_str(group_shape));
  if (scales.dtype() != biases.dtype() || scale_type(scales.dtype()) < 0)
    fail("scales and biases must share one dtype among float32, float16, bfloat16");
  auto out_shape = x.shape();
  out_shape.back() = N;
  std::vector<mx::array> inputs{x, w, scales, biases};
  if (bias) {
    if (bias->dtype() != mx::float32 || bias->shape() != mx::Shape{N}) fail("bias must be float32 of shape (N,)");
    inputs.push_back(*bias);
  }
  if (residual) {
    if (residual->dtype() != mx::float32 || residual->shape() != out_shape)
      fail("residual must be float32 of shape " + shape_str(out_shape));
    inputs.push_back(*residual);
  }
  auto stream = mx::to_stream(s);
  if (stream.device != mx::Device::cpu) fail("native kernels run on the CPU stream only");
  return mx::array(out_shape, mx::float32,
                   std::make_shared<QuantizedMatmul>(stream, group_size, bits, bias.has_value(), residual.has_value(), precise),
                   std::move(inputs));
}

}  // namespace sqn
