// Fused CPU primitives: RMSNorm, RoPE, causal attention over a KV cache (GQA), SwiGLU, and one
// primitive for a whole llama-family decoder layer (docs/native.md).
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu.h"
#include "fused.h"
#include "ops.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "pool.h"
#include "prof.h"

namespace sqn {

void run_qmm(const Kernels& k, const QWeight* ws, int nw, const float* x, int M, float* y, const float* bias,
             const float* res, bool precise);

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("squish_native: " + what);
}

// A primitive whose CPU evaluation is a function; `key` holds its parameters for equivalence.
class Fused : public mx::Primitive {
 public:
  using Eval = std::function<void(const std::vector<mx::array>&, std::vector<mx::array>&, mx::Stream)>;
  Fused(mx::Stream stream, const char* name, std::string key, Eval eval)
      : mx::Primitive(stream), name_(name), key_(std::move(key)), eval_(std::move(eval)) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    eval_(inputs, outputs, stream());
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string("squish_native: ") + name_ + " has no GPU kernel");
  }
  const char* name() const override {
    return name_;
  }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const Fused&>(other);
    return name_ == o.name_ && key_ == o.key_;
  }

 private:
  const char* name_;
  std::string key_;
  Eval eval_;
};

mx::Stream cpu_stream(mx::StreamOrDevice s) {
  auto stream = mx::to_stream(s);
  if (stream.device != mx::Device::cpu) fail("native kernels run on the CPU stream only");
  return stream;
}

void need_f32(const mx::array& a, const char* what) {
  if (a.dtype() != mx::float32) fail(std::string(what) + " must be float32");
}

void need_contiguous(const mx::array& a, const char* what) {
  if (!a.flags().row_contiguous) throw std::runtime_error(std::string("squish_native: ") + what + " must be row-contiguous");
}

void alloc(mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
}

// A growing per-thread float buffer for intermediate activations.
float* scratch(std::vector<float>& buf, size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// cos/sin of theta_i = (pos * scale) * base^(-i / half), computed as MLX's fallback does.
void rope_tables(int pos, int dims, float base, float scale, float* c, float* s) {
  const int half = dims / 2;
  const float lb = std::log(base) / (float)half;
  const float p = (float)pos * scale;
  for (int i = 0; i < half; ++i) {
    const float theta = p * std::exp(-(float)i * lb);
    c[i] = std::cos(theta);
    s[i] = std::sin(theta);
  }
}

// The private descriptor of an mlx::core::array, to count the arrays that share it (MLX's
// is_donatable() demands exactly one, which a multi-output primitive's inputs never have).
struct DescTag {};
template <auto Member>
struct DescAccess {
  friend auto desc_member(DescTag) {
    return Member;
  }
};
template struct DescAccess<&mx::array::array_desc_>;
auto desc_member(DescTag);

long desc_refs(const mx::array& a) {
  return (a.*desc_member(DescTag{})).use_count();
}

std::atomic<long> cache_copies_{0};

}  // namespace

long cache_copies() {
  return cache_copies_.load();
}

// ---------------------------------------------------------------------------------------
// Standalone ops

mx::array rms_norm(const mx::array& x, const mx::array& weight, float eps, mx::StreamOrDevice s) {
  need_f32(x, "x");
  need_f32(weight, "weight");
  if (x.ndim() < 1 || weight.ndim() != 1 || weight.shape(0) != x.shape(-1))
    fail("weight must have shape (x.shape[-1],)");
  auto eval = [eps](const std::vector<mx::array>& in, std::vector<mx::array>& out, mx::Stream st) {
    need_contiguous(in[1], "weight");
    alloc(out[0]);
    const int D = in[0].shape(-1), rows = (int)(in[0].size() / D);
    mx::cpu::get_command_encoder(st).dispatch(
        [xa = in[0], w = in[1].data<float>(), y = out[0].data<float>(), D, rows, eps] {
          const Kernels& k = kernels();
          thread_local std::vector<float> copy;
          const float* x = xa.data<float>();
          if (!xa.flags().row_contiguous) {
            copy.resize(xa.size());
            copy_strided(xa, copy.data());
            x = copy.data();
          }
          const int tasks = rows >= 16 ? 16 : 1;
          Pool::get().parallel_for(tasks, [&](int t) {
            for (int r = rows * t / tasks; r < rows * (t + 1) / tasks; ++r)
              k.rms_norm(x + (int64_t)r * D, w, eps, D, y + (int64_t)r * D);
          });
        });
  };
  auto st = cpu_stream(s);
  return mx::array(x.shape(), mx::float32,
                   std::make_shared<Fused>(st, "SquishRMSNorm", std::to_string(eps), eval), {x, weight});
}

mx::array rope(const mx::array& x, int dims, bool traditional, float base, float scale, int offset,
               mx::StreamOrDevice s) {
  need_f32(x, "x");
  if (x.ndim() < 2) fail("x must be (..., T, head_dim)");
  const int hd = x.shape(-1);
  if (dims <= 0 || dims % 2 || dims > hd) fail("dims must be even and at most head_dim");
  if (offset < 0) fail("offset must be non-negative");
  auto eval = [=](const std::vector<mx::array>& in, std::vector<mx::array>& out, mx::Stream st) {
    need_contiguous(in[0], "x");
    alloc(out[0]);
    const int T = in[0].shape(-2), rows = (int)(in[0].size() / hd);
    mx::cpu::get_command_encoder(st).dispatch([x = in[0].data<float>(), y = out[0].data<float>(), T, rows, hd,
                                               dims, traditional, base, scale, offset] {
      const Kernels& k = kernels();
      std::memcpy(y, x, (size_t)rows * hd * sizeof(float));
      std::vector<float> c(dims / 2), sn(dims / 2);
      for (int r = 0; r < rows; ++r) {
        rope_tables(offset + r % T, dims, base, scale, c.data(), sn.data());
        k.rope(y + (int64_t)r * hd, c.data(), sn.data(), dims, traditional);
      }
    });
  };
  auto st = cpu_stream(s);
  std::string key = std::to_string(dims) + "," + std::to_string(traditional) + "," + std::to_string(base) + "," +
      std::to_string(scale) + "," + std::to_string(offset);
  return mx::array(x.shape(), mx::float32, std::make_shared<Fused>(st, "SquishRoPE", key, eval), {x});
}

namespace {

// out[t, h] = attention of query (t, h) over positions [0, L - T + t] of kv head h / (H / KV).
// q at q + (t * qs_t + h * qs_h), out at o + (t * os_t + h * os_h); caches (KV, cap, hd).
struct AttnJob {
  const float* q;
  int64_t qs_t, qs_h;
  const float* k;
  const float* v;
  int64_t cap;
  float* o;
  int64_t os_t, os_h;
  int T, H, KV, hd, L;
  float scale;
};

// Tasks are heads x blocks of up to 16 queries: a decode step or a checked draft is one task per
// head, each block of keys read once for all its queries.
void run_attention(const Kernels& k, const AttnJob& j) {
  const int group = j.H / j.KV;
  const int tblock = j.T <= 16 ? j.T : 16;
  const int tb = (j.T + tblock - 1) / tblock;
  Pool::get().parallel_for(j.H * tb, [&](int task) {
    thread_local std::vector<float> scores;
    const int h = task / tb, g = h / group;
    const int t0 = (task % tb) * tblock, nq = tblock < j.T - t0 ? tblock : j.T - t0;
    const int len0 = j.L - j.T + t0 + 1;
    const size_t need = (size_t)nq * (len0 + nq);
    if (scores.size() < need) scores.resize(need);
    const float* kg = j.k + (int64_t)g * j.cap * j.hd;
    const float* vg = j.v + (int64_t)g * j.cap * j.hd;
    k.attend(j.q + t0 * j.qs_t + h * j.qs_h, j.qs_t, nq, len0, kg, vg, j.hd, j.scale, j.o + t0 * j.os_t + h * j.os_h,
             j.os_t, scores.data());
  });
}

}  // namespace

mx::array attention(const mx::array& q, const mx::array& keys, const mx::array& values, int kv_len, float scale,
                    mx::StreamOrDevice s) {
  need_f32(q, "q");
  need_f32(keys, "keys");
  need_f32(values, "values");
  if (q.ndim() != 4 || keys.ndim() != 4 || values.shape() != keys.shape() || q.shape(0) != 1 || keys.shape(0) != 1)
    fail("q must be (1, H, T, D) and keys, values (1, KV, S, D)");
  const int H = q.shape(1), T = q.shape(2), hd = q.shape(3), KV = keys.shape(1), S = keys.shape(2);
  if (keys.shape(3) != hd || H % KV) fail("head sizes differ, or H is not a multiple of KV");
  if (kv_len < T || kv_len > S) fail("kv_len must be in [T, keys.shape[2]]");
  auto eval = [=](const std::vector<mx::array>& in, std::vector<mx::array>& out, mx::Stream st) {
    for (int i = 0; i < 3; ++i) need_contiguous(in[i], "q, keys and values");
    alloc(out[0]);
    mx::cpu::get_command_encoder(st).dispatch([qp = in[0].data<float>(), kp = in[1].data<float>(),
                                               vp = in[2].data<float>(), op = out[0].data<float>(), H, T, hd, KV,
                                               S, kv_len, scale] {
      AttnJob j{qp, hd, (int64_t)T * hd, kp, vp, S, op, hd, (int64_t)T * hd, T, H, KV, hd, kv_len, scale};
      run_attention(kernels(), j);
    });
  };
  auto st = cpu_stream(s);
  std::string key = std::to_string(kv_len) + "," + std::to_string(scale);
  return mx::array(q.shape(), mx::float32, std::make_shared<Fused>(st, "SquishAttention", key, eval),
                   {q, keys, values});
}

mx::array swiglu(const mx::array& gate, const mx::array& up, mx::StreamOrDevice s) {
  need_f32(gate, "gate");
  need_f32(up, "up");
  if (gate.shape() != up.shape()) fail("gate and up must have one shape");
  auto eval = [](const std::vector<mx::array>& in, std::vector<mx::array>& out, mx::Stream st) {
    need_contiguous(in[0], "gate");
    need_contiguous(in[1], "up");
    alloc(out[0]);
    mx::cpu::get_command_encoder(st).dispatch(
        [g = in[0].data<float>(), u = in[1].data<float>(), y = out[0].data<float>(), n = (int64_t)in[0].size()] {
          kernels().swiglu(g, u, (int)n, y);
        });
  };
  auto st = cpu_stream(s);
  return mx::array(gate.shape(), mx::float32, std::make_shared<Fused>(st, "SquishSwiGLU", "", eval), {gate, up});
}

// ---------------------------------------------------------------------------------------
// One decoder layer

namespace {

struct Proj {
  int bits, gs;
  QWeight w(const mx::array& wq, const mx::array& sc, const mx::array& bi) const {
    int st = sc.dtype() == mx::float32 ? kF32 : (sc.dtype() == mx::float16 ? kF16 : kBF16);
    return QWeight{wq.data<uint32_t>(), sc.data<void>(), bi.data<void>(), st, (int)wq.shape(0),
                   (int)(wq.shape(1) * 32 / bits), bits, gs};
  }
};

}  // namespace

std::vector<mx::array> decoder_layer(const mx::array& x, const std::vector<mx::array>& weights,
                                     const mx::array& k_cache, const mx::array& v_cache, int offset,
                                     const LayerSpec& spec, mx::StreamOrDevice s) {
  const int D = spec.dims, H = spec.heads, KV = spec.kv_heads, hd = spec.head_dim, I = spec.hidden;
  need_f32(x, "x");
  if (x.ndim() != 3 || x.shape(0) != 1 || x.shape(2) != D) fail("x must be (1, T, dims)");
  const int T = x.shape(1);
  const size_t n_weights = 23 + (spec.qkv_bias ? 1 : 0) + (spec.qk_norm ? 2 : 0);
  if (weights.size() != n_weights) fail("decoder_layer expects " + std::to_string(n_weights) + " weight arrays");
  if (H % KV || spec.rope_dims > hd || spec.rope_dims % 2) fail("bad head configuration");
  const mx::Shape cache_in{1, KV, k_cache.shape(2), hd};
  if (k_cache.shape() != cache_in || v_cache.shape() != cache_in || k_cache.dtype() != mx::float32 ||
      v_cache.dtype() != mx::float32)
    fail("caches must be float32 of shape (1, kv_heads, capacity, head_dim)");
  if (offset < 0 || offset > k_cache.shape(2)) fail("offset is past the cache");
  const int cap_in = k_cache.shape(2);
  const int cap = offset + T <= cap_in ? cap_in : (offset + T + 255) / 256 * 256;

  std::vector<mx::array> inputs{x};
  inputs.insert(inputs.end(), weights.begin(), weights.end());
  inputs.push_back(k_cache);
  inputs.push_back(v_cache);

  auto eval = [spec, offset, T, cap, cap_in](const std::vector<mx::array>& in, std::vector<mx::array>& out,
                                             mx::Stream st) {
    const int D = spec.dims, H = spec.heads, KV = spec.kv_heads, hd = spec.head_dim, I = spec.hidden;
    size_t i = 1;
    const mx::array& n1 = in[i++];
    const size_t iq = i;  // q, k, v: (w, scales, biases) each
    i += 9;
    const mx::array* qkv_bias = spec.qkv_bias ? &in[i++] : nullptr;
    const mx::array* qn = spec.qk_norm ? &in[i++] : nullptr;
    const mx::array* kn = spec.qk_norm ? &in[i++] : nullptr;
    const mx::array &wo = in[i], &so = in[i + 1], &bo = in[i + 2];
    i += 3;
    const mx::array& n2 = in[i++];
    const size_t igu = i;  // gate, up
    i += 6;
    const mx::array &wd = in[i], &sd = in[i + 1], &bd = in[i + 2];
    i += 3;
    const mx::array& kc = in[i];
    const mx::array& vc = in[i + 1];
    for (const auto& a : in) need_contiguous(a, "decoder_layer inputs");

    alloc(out[0]);
    // Write the new keys and values in place when only this node holds the cache arrays
    // (the cache object has already been pointed at our outputs); otherwise copy.
    const long owners = (long)out.size();
    const bool in_place = cap == cap_in && desc_refs(kc) <= owners && desc_refs(vc) <= owners &&
        kc.data_size() == kc.size() && vc.data_size() == vc.size();
    if (in_place) {
      out[1].copy_shared_buffer(kc);
      out[2].copy_shared_buffer(vc);
    } else {
      alloc(out[1]);
      alloc(out[2]);
      cache_copies_.fetch_add(1);
    }
    const Proj pqkv{spec.qkv_bits, spec.qkv_group}, po{spec.o_bits, spec.o_group}, pgu{spec.gu_bits, spec.gu_group},
        pd{spec.down_bits, spec.down_group};
    const QWeight Wqkv[3] = {pqkv.w(in[iq], in[iq + 1], in[iq + 2]), pqkv.w(in[iq + 3], in[iq + 4], in[iq + 5]),
                             pqkv.w(in[iq + 6], in[iq + 7], in[iq + 8])};
    const QWeight Wgu[2] = {pgu.w(in[igu], in[igu + 1], in[igu + 2]), pgu.w(in[igu + 3], in[igu + 4], in[igu + 5])};
    const QWeight Wo = po.w(wo, so, bo), Wd = pd.w(wd, sd, bd);
    struct Ptrs {
      const float *x, *n1, *n2, *qkv_bias, *qn, *kn, *kin, *vin;
      float *y, *k, *v;
    } p{in[0].data<float>(), n1.data<float>(), n2.data<float>(), qkv_bias ? qkv_bias->data<float>() : nullptr,
        qn ? qn->data<float>() : nullptr, kn ? kn->data<float>() : nullptr, kc.data<float>(), vc.data<float>(),
        out[0].data<float>(), out[1].data<float>(), out[2].data<float>()};

    mx::cpu::get_command_encoder(st).dispatch([=] {
      const Kernels& k = kernels();
      Pool& pool = Pool::get();
      thread_local std::vector<float> b_h, b_qkv, b_att, b_x1, b_gu, b_a, b_rope;
      const int nq = H * hd, nkv = KV * hd, nqkv = nq + 2 * nkv;
      float* h = scratch(b_h, (size_t)T * D);
      float* qkv = scratch(b_qkv, (size_t)T * nqkv);
      float* att = scratch(b_att, (size_t)T * nq);
      float* x1 = scratch(b_x1, (size_t)T * D);
      float* gu = scratch(b_gu, (size_t)T * 2 * I);
      float* a = scratch(b_a, (size_t)T * I);
      float* tab = scratch(b_rope, (size_t)T * spec.rope_dims);

      if (!in_place && offset > 0) {  // the kept prefix of each head into the new buffers
        for (int g = 0; g < KV; ++g) {
          std::memcpy(p.k + (int64_t)g * cap * hd, p.kin + (int64_t)g * cap_in * hd, (size_t)offset * hd * 4);
          std::memcpy(p.v + (int64_t)g * cap * hd, p.vin + (int64_t)g * cap_in * hd, (size_t)offset * hd * 4);
        }
      }
      const int row_tasks = T >= 16 ? 16 : 1;
      auto rows = [&](auto&& f) {
        pool.parallel_for(row_tasks, [&](int task) {
          for (int t = T * task / row_tasks; t < T * (task + 1) / row_tasks; ++t) f(t);
        });
      };
      { ProfScope ps(kPhNorm); rows([&](int t) { k.rms_norm(p.x + (int64_t)t * D, p.n1, spec.eps, D, h + (int64_t)t * D); }); }
      { ProfScope ps(kPhQKV); run_qmm(k, Wqkv, 3, h, T, qkv, p.qkv_bias, nullptr, spec.precise); }
      { ProfScope ps(kPhRope); rows([&](int t) {
        float* row = qkv + (int64_t)t * nqkv;
        float* c = tab + (int64_t)t * spec.rope_dims;
        float* sn = c + spec.rope_dims / 2;
        rope_tables(offset + t, spec.rope_dims, spec.rope_base, spec.rope_scale, c, sn);
        for (int head = 0; head < H + KV; ++head) {
          float* v = row + head * hd;
          if (spec.qk_norm) k.rms_norm(v, head < H ? p.qn : p.kn, spec.eps, hd, v);
          k.rope(v, c, sn, spec.rope_dims, spec.rope_traditional);
        }
        for (int g = 0; g < KV; ++g) {
          const int64_t at = ((int64_t)g * cap + offset + t) * hd;
          std::memcpy(p.k + at, row + nq + g * hd, (size_t)hd * 4);
          std::memcpy(p.v + at, row + nq + nkv + g * hd, (size_t)hd * 4);
        }
      }); }
      AttnJob j{qkv, nqkv, hd, p.k, p.v, cap, att, nq, hd, T, H, KV, hd, offset + T, spec.attn_scale};
      { ProfScope ps(kPhAttn); run_attention(k, j); }
      { ProfScope ps(kPhO); run_qmm(k, &Wo, 1, att, T, x1, nullptr, p.x, spec.precise); }
      { ProfScope ps(kPhNorm); rows([&](int t) { k.rms_norm(x1 + (int64_t)t * D, p.n2, spec.eps, D, h + (int64_t)t * D); }); }
      { ProfScope ps(kPhGU); run_qmm(k, Wgu, 2, h, T, gu, nullptr, nullptr, spec.precise); }
      {
        ProfScope ps(kPhAct);
        const int chunks = T * I >= 4096 ? 16 : 1;
        pool.parallel_for(T * chunks, [&](int task) {
          const int t = task / chunks, c = task % chunks;
          const int i0 = I * c / chunks, i1 = I * (c + 1) / chunks;
          const float* row = gu + (int64_t)t * 2 * I;
          k.swiglu(row + i0, row + I + i0, i1 - i0, a + (int64_t)t * I + i0);
        });
      }
      { ProfScope ps(kPhDown); run_qmm(k, &Wd, 1, a, T, p.y, nullptr, x1, spec.precise); }
    });
  };
  auto st = cpu_stream(s);
  const mx::Shape cache_out{1, KV, cap, hd};
  return mx::array::make_arrays({x.shape(), cache_out, cache_out}, {mx::float32, mx::float32, mx::float32},
                                std::make_shared<Fused>(st, "SquishDecoderLayer", std::to_string(offset), eval),
                                inputs);
}

}  // namespace sqn
