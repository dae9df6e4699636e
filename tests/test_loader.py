"""Verified loading: broken model directories give one clear error, never a traceback."""

import json
import shutil

import pytest

from helpers import build_tiny_model
from squish.engine.engine import Engine
from squish.engine.errors import ModelError
from squish.engine.loader import verify_dir


@pytest.fixture
def model_copy(tmp_path, tiny_model):
    return shutil.copytree(tiny_model, tmp_path / "model")


def test_missing_directory(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        verify_dir(tmp_path / "absent")


def test_missing_config(model_copy):
    (model_copy / "config.json").unlink()
    with pytest.raises(ModelError, match="config.json is missing"):
        verify_dir(model_copy)


def test_corrupt_config(model_copy):
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        verify_dir(model_copy)


def test_insane_config(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["num_hidden_layers"] = 0
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="num_hidden_layers must be a positive integer"):
        verify_dir(model_copy)


def test_truncated_weights(model_copy):
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        verify_dir(model_copy)


def test_garbage_weights(model_copy):
    (model_copy / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError, match="corrupt"):
        verify_dir(model_copy)


def test_no_weights(model_copy):
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no .safetensors"):
        verify_dir(model_copy)


def test_no_tokenizer(model_copy):
    (model_copy / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="no tokenizer"):
        verify_dir(model_copy)


def test_nan_weights_refused_at_load_and_engine_survives(tmp_path, home, tiny_model):
    import mlx.core as mx

    model_dir = build_tiny_model(tmp_path / "nan", home)
    weights = mx.load(str(model_dir / "model.safetensors"))
    name = "model.layers.1.mlp.up_proj.weight"
    weights[name] = mx.where(mx.arange(weights[name].size).reshape(weights[name].shape) == 3, mx.nan, weights[name])
    mx.save_safetensors(str(model_dir / "model.safetensors"), weights)
    eng = Engine()
    try:
        result = eng.load(str(model_dir)).collect()
        assert "NaN or Inf" in result.error.message and name in result.error.message
        assert eng.load(str(tiny_model)).collect().error is None
    finally:
        eng.shutdown()


def test_weights_that_do_not_fit_the_config(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["hidden_size"] = 96
    (model_copy / "config.json").write_text(json.dumps(config))
    eng = Engine()
    try:
        result = eng.load(str(model_copy)).collect()
        assert result.error.message.startswith("cannot load model:")
        assert "\n" not in result.error.message
    finally:
        eng.shutdown()
