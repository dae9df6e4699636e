"""Model directory checks before a load: broken directories give one clear error, never a traceback."""

import json
import shutil

import pytest

from squish.errors import ModelError
from squish.models.verify import verify_dir


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
