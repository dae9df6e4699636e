"""Loading on the engine thread: what only MLX can check fails as one clear error event."""

import json
import shutil

import pytest
from helpers import build_tiny_model

from squish.engine.engine import Engine
from squish.models import store


@pytest.fixture
def model_copy(tmp_path, tiny_model):
    return shutil.copytree(tiny_model, tmp_path / "model")


def test_nan_weights_refused_at_load_and_engine_survives(tmp_path, home, tiny_model):
    import mlx.core as mx

    model_dir = build_tiny_model(tmp_path / "nan", home)
    weights = mx.load(str(model_dir / "model.safetensors"))
    name = "model.layers.1.mlp.up_proj.weight"
    weights[name] = mx.where(mx.arange(weights[name].size).reshape(weights[name].shape) == 3, mx.nan, weights[name])
    mx.save_safetensors(str(model_dir / "model.safetensors"), weights)
    eng = Engine()
    try:
        result = store.load(eng, str(model_dir)).collect()
        assert "NaN or Inf" in result.error.message and name in result.error.message
        assert store.load(eng, str(tiny_model)).collect().error is None
    finally:
        eng.shutdown()


def test_weights_that_do_not_fit_the_config(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["hidden_size"] = 96
    (model_copy / "config.json").write_text(json.dumps(config))
    eng = Engine()
    try:
        result = store.load(eng, str(model_copy)).collect()
        assert result.error.message.startswith("cannot load model:")
        assert "\n" not in result.error.message
    finally:
        eng.shutdown()
