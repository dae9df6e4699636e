"""The embedded GGUF import: names, config, tokenizer, and the cached directory."""

import json

import pytest
from helpers import import_embedded

from squish.engine.gguf import mlx_name
from squish.errors import ModelError, ModelNotFound
from squish.models import store


def test_tensor_names_map_to_mlx_lm_llama_layout():
    assert mlx_name("blk.3.attn_q.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert mlx_name("blk.0.ffn_down.scales") == "model.layers.0.mlp.down_proj.scales"
    assert mlx_name("blk.12.ffn_norm.weight") == "model.layers.12.post_attention_layernorm.weight"
    assert mlx_name("token_embd.biases") == "model.embed_tokens.biases"
    assert mlx_name("output_norm.weight") == "model.norm.weight"


def test_unknown_tensor_is_refused():
    with pytest.raises(ModelError, match="unsupported"):
        mlx_name("blk.0.attn_qkv.weight")


def test_imported_config(home):
    model_dir = import_embedded(home)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["rope_traditional"] is True
    assert config["tie_word_embeddings"] is True
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_key_value_heads"]) == (30, 576, 3)
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32
    assert config["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    assert store.read_manifest(model_dir)["name"] == store.EMBEDDED_NAME


def test_import_happens_once(home):
    model_dir = import_embedded(home)
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert import_embedded(home) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_tokenizer_round_trip_and_digits(home):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(import_embedded(home) / "tokenizer.json"))
    text = "Héllo wörld 2024 — ünïcode ✓ <|im_end|>"
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert 2 in ids  # <|im_end|> is one special token, not split
    digits = tokenizer.encode("12345").tokens
    assert digits == ["1", "2", "3", "4", "5"]


def test_unknown_model_name(tmp_path):
    with pytest.raises(ModelNotFound, match="unknown model 'nope:1b'"):
        store.resolve("nope:1b", tmp_path)


def test_partial_import_is_not_ready(tmp_path):
    partial = store.models_dir(tmp_path) / "half"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound):
        store.resolve("half", tmp_path)
