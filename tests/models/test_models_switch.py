"""Switching models on one real engine: the old model's memory is freed on the engine thread."""

import pytest
from fake_hub import TINY_REPO, hf_cache_of, tiny_repo_files  # noqa: F401
from helpers import import_embedded

from squish.engine.engine import ChatRequest, Engine
from squish.errors import ModelNotFound
from squish.models import store


@pytest.fixture(scope="module")
def installed(tmp_path_factory, tiny_repo_files):
    """A squish home with the embedded model imported and the tiny model installed as squish pulled
    models before the Hugging Face cache (still loaded as it was)."""
    home = tmp_path_factory.mktemp("switch-home")
    import_embedded(home)
    target = store.model_dir_for(TINY_REPO, home)
    target.mkdir(parents=True)
    for name, data in tiny_repo_files.items():
        (target / name).write_bytes(data)
    store.write_manifest(target, name=TINY_REPO, repo=TINY_REPO)
    return home


@pytest.fixture(scope="module")
def engine(installed):
    eng = Engine()
    yield eng
    eng.shutdown()


def active_gb(engine) -> float:
    return engine.memory().collect().memory.active_gb


def test_switching_frees_the_old_model_and_keeps_it_on_a_bad_name(engine, installed):
    loaded = store.load(engine, None, installed).collect()
    assert loaded.error is None and loaded.loaded.name == "smollm2:135m"
    embedded_gb = active_gb(engine)
    # MLX memory is per process and other tests' engines may hold models: compare differences.
    weights_gb = sum(p.stat().st_size for p in import_embedded(installed).glob("*.safetensors")) / 1e9

    switched = store.load(engine, TINY_REPO, installed).collect()
    assert switched.error is None and switched.loaded.name == TINY_REPO
    tiny_gb = active_gb(engine)
    assert embedded_gb - tiny_gb > 0.9 * weights_gb  # the embedded weights (~0.1 GB) were freed
    answer = engine.generate(ChatRequest([{"role": "user", "content": "Hi"}], max_tokens=3, seed=0)).collect()
    assert answer.error is None and answer.stats.generation_tokens >= 1

    with pytest.raises(ModelNotFound, match="squish pull qwen3:8b"):
        store.load(engine, "qwen3:8b", installed, hf_cache_of(installed))
    still = engine.generate(ChatRequest([{"role": "user", "content": "Hi"}], max_tokens=2, seed=0)).collect()
    assert still.error is None  # a name that is not there keeps the current model loaded

    back = store.load(engine, "smollm2:135m", installed).collect()
    assert back.error is None and back.loaded.name == "smollm2:135m"
    assert active_gb(engine) - tiny_gb == pytest.approx(embedded_gb - tiny_gb, rel=0.1)
