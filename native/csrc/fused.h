// Fused CPU primitives (fused.cpp): float32 in, float32 out.
#pragma once

#include <vector>

#include "mlx/array.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

namespace sqn {

namespace mx = mlx::core;

// x * weight / sqrt(mean(x^2) + eps) over the last axis.
mx::array rms_norm(const mx::array& x, const mx::array& weight, float eps, mx::StreamOrDevice s = {});

// mx.fast.rope for x (..., T, head_dim): positions offset + t along axis -2.
mx::array rope(const mx::array& x, int dims, bool traditional, float base, float scale, int offset,
               mx::StreamOrDevice s = {});

// Causal attention of q (1, H, T, D) over the first kv_len positions of keys/values
// (1, KV, S, D), H a multiple of KV; query t sits at position kv_len - T + t.
mx::array attention(const mx::array& q, const mx::array& keys, const mx::array& values, int kv_len, float scale,
                    mx::StreamOrDevice s = {});

// silu(gate) * up
mx::array swiglu(const mx::array& gate, const mx::array& up, mx::StreamOrDevice s = {});

// A llama-family decoder layer (pre-norm attention with GQA and RoPE, then a SwiGLU MLP).
struct LayerSpec {
  int dims = 0, heads = 0, kv_heads = 0, head_dim = 0, hidden = 0;
  int rope_dims = 0;
  bool rope_traditional = false;
  float rope_base = 10000.0f, rope_scale = 1.0f;
  float eps = 1e-5f, attn_scale = 1.0f;
  bool qk_norm = false, qkv_bias = false, precise = true;
  int qkv_bits = 4, qkv_group = 64, o_bits = 4, o_group = 64, gu_bits = 4, gu_group = 64, down_bits = 4,
      down_group = 64;
};

// (x', keys', values') for x (1, T, dims) at cache position `offset`. weights, in order, each
// projection as the (w, scales, biases) of its QuantizedLinear, as loaded (nothing merged):
// input norm, q, k, v [, q|k|v bias] [, q_norm, k_norm], o, post-attention norm, gate, up, down.
// The caches are (1, KV, capacity, head_dim); the outputs grow the capacity in steps of 256
// when the new tokens do not fit, and share the input buffers when nothing else holds them.
std::vector<mx::array> decoder_layer(const mx::array& x, const std::vector<mx::array>& weights,
                                     const mx::array& k_cache, const mx::array& v_cache, int offset,
                                     const LayerSpec& spec, mx::StreamOrDevice s = {});

// How many times decoder_layer wrote its caches into new buffers instead of in place (growth,
// or an input still held elsewhere); tests use it to check that decode steps write in place.
long cache_copies();

}  // namespace sqn
