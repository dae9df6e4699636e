"""Import a llama-architecture GGUF file into an MLX model directory.

`mx.load` reads GGUF Q4_0/Q4_1/Q8_0 tensors straight into MLX's affine
quantized layout (weight, scales, biases), so the import is a rename plus a
config and a tokenizer built from the GGUF metadata. The result loads with
mlx-lm like any converted model and is memory-mapped on later starts.
"""

import json
import os
import re
import shutil
import time
from pathlib import Path

import mlx.core as mx

from ..errors import ModelError
from .ref import MANIFEST, ModelRef

LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

# llama.cpp's "smollm"/"gpt2"-family pre-tokenizer: single digits, then the GPT-2 split.
DIGITS_THEN_BYTELEVEL = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}


def mlx_name(gguf_name: str) -> str:
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|scales|biases)", gguf_name)
    if match:
        layer, part, kind = match.groups()
        if part not in LAYER_NAMES:
            raise ModelError(f"unsupported GGUF tensor {gguf_name!r}")
        return f"model.layers.{layer}.{LAYER_NAMES[part]}.{kind}"
    base, _, kind = gguf_name.rpartition(".")
    if base not in TOP_NAMES:
        raise ModelError(f"unsupported GGUF tensor {gguf_name!r}")
    return f"{TOP_NAMES[base]}.{kind}"


def _scalar(meta: dict, key: str):
    if key not in meta:
        raise ModelError(f"GGUF metadata lacks {key!r}")
    return meta[key].item()


def _bits(weights: dict, name: str, in_features: int) -> int:
    packed = weights[f"{name}.weight"]
    return packed.shape[-1] * 32 // in_features


def build_config(meta: dict, weights: dict) -> dict:
    arch = str(meta.get("general.architecture", ""))
    if arch != "llama":
        raise ModelError(f"GGUF architecture {arch!r} is not supported (only llama)")
    hidden = int(_scalar(meta, "llama.embedding_length"))
    heads = int(_scalar(meta, "llama.attention.head_count"))
    config = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(_scalar(meta, "llama.block_count")),
        "intermediate_size": int(_scalar(meta, "llama.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_scalar(meta, "llama.attention.head_count_kv")),
        "rms_norm_eps": float(_scalar(meta, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_scalar(meta, "llama.rope.freq_base")),
        # GGUF stores q/k rows permuted for interleaved (GPT-J style) rotary embeddings.
        "rope_traditional": True,
        "max_position_embeddings": int(_scalar(meta, "llama.context_length")),
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "tie_word_embeddings": "output.weight" not in weights,
        "bos_token_id": int(_scalar(meta, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_scalar(meta, "tokenizer.ggml.eos_token_id")),
    }
    if "blk.0.attn_q.scales" in weights:
        group_size = hidden // weights["blk.0.attn_q.scales"].shape[-1]
        quantization = {"group_size": group_size, "bits": _bits(weights, "blk.0.attn_q", hidden)}
        if "token_embd.scales" in weights:
            embed_bits = _bits(weights, "token_embd", hidden)
            if embed_bits != quantization["bits"]:
                quantization["model.embed_tokens"] = {"group_size": group_size, "bits": embed_bits}
        config["quantization"] = quantization
    return config


def build_tokenizer(meta: dict) -> tuple[dict, dict]:
    """Return (tokenizer.json, tokenizer_config.json) for a GGUF byte-level BPE vocabulary."""
    if str(meta.get("tokenizer.ggml.model", "")) != "gpt2":
        raise ModelError("only byte-level BPE (gpt2) GGUF tokenizers are supported")
    tokens = list(meta["tokenizer.ggml.tokens"])
    token_types = meta["tokenizer.ggml.token_type"].tolist()
    control = [i for i, kind in enumerate(token_types) if kind == 3]
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": tokens[i],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i in control
        ],
        "normalizer": None,
        "pre_tokenizer": DIGITS_THEN_BYTELEVEL,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {token: i for i, token in enumerate(tokens)},
            "merges": [merge.split(" ", 1) for merge in meta["tokenizer.ggml.merges"]],
        },
    }
    special = lambda key: tokens[int(_scalar(meta, key))]  # noqa: E731
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": special("tokenizer.ggml.bos_token_id"),
        "eos_token": special("tokenizer.ggml.eos_token_id"),
        "unk_token": special("tokenizer.ggml.unknown_token_id"),
        "pad_token": special("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(meta["tokenizer.ggml.add_bos_token"].item())
        if "tokenizer.ggml.add_bos_token" in meta
        else False,
        "model_max_length": int(_scalar(meta, "llama.context_length")),
        "chat_template": str(meta["tokenizer.chat_template"]),
        "clean_up_tokenization_spaces": False,
    }
    return tokenizer_json, tokenizer_config


def import_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Write config.json, model.safetensors and tokenizer files for `gguf_path` into `out_dir`."""
    try:
        weights, meta = mx.load(str(gguf_path), return_metadata=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot read GGUF file {gguf_path}: {exc}") from exc
    config = build_config(meta, weights)
    tokenizer_json, tokenizer_config = build_tokenizer(meta)
    renamed = {mlx_name(name): array for name, array in weights.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out_dir / "model.safetensors"), renamed, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))


def import_model(ref: ModelRef) -> None:
    """Import `ref.gguf` into the model directory `ref.path`, all or nothing.

    The files and the manifest are written into a staging directory that is then renamed into
    place, so `ref.path` either holds its manifest and is complete, or is not a model yet. Another process finishing the same
    import first is fine: its directory is kept.
    """
    target = ref.path
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        import_gguf(ref.gguf, staging)
        (staging / MANIFEST).write_text(json.dumps({"created": time.time(), **ref.manifest}, indent=2))
        shutil.rmtree(target, ignore_errors=True)  # a stale directory without a manifest
        staging.rename(target)
    except OSError as exc:
        if (target / MANIFEST).is_file():  # another process finished the same import first
            return
        raise ModelError(f"cannot import {ref.name} into {target}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
