"""Shared fixtures: a squish home in a temp dir, the real embedded model on one engine, tiny random
models, and a scripted thinking model (tests/helpers.py: build_thinking_model)."""

from pathlib import Path

import pytest
from helpers import build_thinking_model, build_tiny_model, import_embedded

from squish.models import store


@pytest.fixture(scope="session")
def home(tmp_path_factory) -> Path:
    """A squish home with the embedded model imported once for the whole run."""
    path = tmp_path_factory.mktemp("squish-home")
    import_embedded(path)
    return path


@pytest.fixture(scope="session")
def engine(home):
    """One engine thread with the real embedded model, shared by the integration tests."""
    from squish.engine.engine import Engine

    eng = Engine()
    result = store.load(eng, None, home).collect()
    assert result.error is None, result.error
    yield eng
    eng.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, home) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", home)


def engine_with(model: Path):
    from squish.engine.engine import Engine

    eng = Engine()
    result = store.load(eng, str(model)).collect()
    assert result.error is None, result.error
    yield eng
    eng.shutdown()


@pytest.fixture(scope="session")
def tiny_engine(tiny_model):
    yield from engine_with(tiny_model)


@pytest.fixture(scope="session")
def thinking_model(tmp_path_factory, home) -> Path:
    return build_thinking_model(tmp_path_factory.mktemp("scripted") / "thinker", home)


@pytest.fixture(scope="session")
def thinking_engine(thinking_model):
    yield from engine_with(thinking_model)
