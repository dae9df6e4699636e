"""Catalog ids, size and RAM estimates, hardware fit and recommendation, config, and name resolution."""

import json

import pytest

from squish.engine.ref import ModelRef
from squish.errors import ModelNotFound, UserError
from squish.models import catalog, hardware, inventory, settings, store

GB = 1e9


def machine(backend="Metal", total=16.0, available=10.0, disk=200.0, gpu=None) -> hardware.Hardware:
    return hardware.Hardware(backend, "test chip", total, available, disk, gpu)


@pytest.mark.parametrize(
    "name, repo, bits, experimental",
    [
        ("qwen2.5:1.5b", "mlx-community/Qwen2.5-1.5B-Instruct-4bit", 4, False),
        ("qwen2.5:1.5b-4bit", "mlx-community/Qwen2.5-1.5B-Instruct-4bit", 4, False),
        ("qwen2.5:1.5b-8bit", "mlx-community/Qwen2.5-1.5B-Instruct-8bit", 8, False),
        ("qwen3:8b-3bit", "mlx-community/Qwen3-8B-3bit", 3, True),
        ("Llama3.2:3B", "mlx-community/Llama-3.2-3B-Instruct-4bit", 4, False),
        ("smollm2:1.7b", "mlx-community/SmolLM2-1.7B-Instruct-4bit", 4, False),
    ],
)
def test_catalog_ids_map_to_mlx_community_builds(name, repo, bits, experimental):
    model = catalog.find(name)
    assert model.repo == repo and model.bits == bits and model.experimental is experimental
    assert ("experimental" in model.label) is experimental
    assert catalog.by_repo(repo) == model


@pytest.mark.parametrize("name", ["qwen2.5:99b", "qwen2.5:1.5b-5bit", "mistral:7b", "qwen2.5", "owner/repo", ""])
def test_names_outside_the_catalog(name):
    assert catalog.find(name) is None


def test_the_embedded_model_is_in_the_catalog_without_a_download():
    model = catalog.find("smollm2:135m")
    assert model.embedded and model.label == "embedded"
    assert not catalog.find("smollm2:135m-8bit").embedded


def test_size_estimates_match_the_published_mlx_community_builds():
    # Published sizes: Qwen2.5-1.5B-Instruct-4bit 0.87 GB, Qwen2.5-7B-Instruct-4bit 4.28 GB.
    assert catalog.find("qwen2.5:1.5b").size_bytes / GB == pytest.approx(0.87, rel=0.03)
    assert catalog.find("qwen2.5:7b").size_bytes / GB == pytest.approx(4.28, rel=0.03)
    four, eight, three = (catalog.find(f"qwen3:4b-{b}bit").size_bytes for b in (4, 8, 3))
    assert three < four < eight


def test_kv_cache_and_ram_estimate_written_out():
    # qwen3:8b: 36 layers x 8 KV heads x 128 dims, keys and values, float16, 4096 tokens.
    ram = catalog.find("qwen3:8b").ram()
    assert ram.kv_bytes == 2 * 36 * 8 * 128 * 2 * 4096
    assert ram.total_bytes == ram.weights_bytes + ram.kv_bytes + catalog.RUNTIME_OVERHEAD_BYTES
    assert ram.total_bytes / GB < 6.0  # the upstream contract: qwen3:8b INT4 under 6 GB


def test_estimate_from_config_caps_context_and_reads_text_config():
    config = {
        "text_config": {
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "hidden_size": 128,
            "max_position_embeddings": 512,
        }
    }
    ram = catalog.estimate_from_config(config, weights_bytes=1000)
    assert ram.context == 512
    assert ram.kv_bytes == 2 * 2 * 2 * 32 * 2 * 512
    assert "512 tokens" in ram.describe()


def test_fit_levels():
    hw = machine(total=16, available=6)
    assert hw.memory_budget_gb == 6.0
    assert hardware.fit(int(4 * GB), hw) == "yes"
    assert hardware.fit(int(8 * GB), hw) == "tight"  # fits the machine once memory is freed
    assert hardware.fit(int(12 * GB), hw) == "no"  # over two thirds of 16 GB


def test_cuda_fit_uses_the_gpu_memory():
    hw = machine(backend="CUDA", total=64, available=60, gpu=8.0)
    assert hardware.fit(int(6 * GB), hw) == "no"
    assert hardware.fit(int(4 * GB), hw) == "yes"


def test_recommendation_on_an_m3_with_16_gb_is_qwen3_8b():
    assert hardware.recommend(machine(total=16, available=10)).id == "qwen3:8b"


def test_recommendation_shrinks_with_memory_and_disk():
    assert hardware.recommend(machine(total=8, available=4)).id == "qwen3:4b"
    assert hardware.recommend(machine(total=16, available=10, disk=2.0)).id == "qwen3:1.7b"
    assert hardware.recommend(machine(total=2, available=0.5)) is None  # stay on the embedded model


def test_cpu_backend_recommends_only_small_models():
    model = hardware.recommend(machine(backend="CPU", total=64, available=60))
    assert model.base.params_b <= hardware.CPU_MAX_PARAMS_B


def test_disk_margin():
    assert hardware.disk_margin_bytes(1000) == hardware.DISK_MARGIN_BYTES
    assert hardware.disk_margin_bytes(int(100 * GB)) == int(5 * GB)
    assert hardware.disk_fits(int(1 * GB), int(2 * GB))
    assert not hardware.disk_fits(int(1 * GB), int(1.2 * GB))


def test_detect_reads_this_machine(tmp_path):
    hw = hardware.detect(tmp_path / "home")
    assert hw.backend in ("Metal", "CUDA", "CPU")
    assert 0 < hw.available_ram_gb <= hw.total_ram_gb
    assert hw.free_disk_gb > 0
    assert set(hw.as_dict()) >= {"backend", "total_ram_gb", "memory_budget_gb"}


def test_config_round_trip_and_corrupt_file(tmp_path):
    assert settings.load(tmp_path) == {} and settings.default_model(tmp_path) is None
    settings.set_default_model("qwen3:4b", tmp_path)
    settings.record_first_run("pull", "qwen3:4b", tmp_path)
    assert settings.default_model(tmp_path) == "qwen3:4b"
    assert settings.first_run_choice(tmp_path)["choice"] == "pull"
    settings.set_default_model(None, tmp_path)
    assert settings.default_model(tmp_path) is None and settings.first_run_choice(tmp_path) is not None
    settings.config_path(tmp_path).write_text("{not json")
    assert settings.load(tmp_path) == {}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp files left


def fake_ready_model(home, repo: str, name: str):
    path = store.model_dir_for(repo, home)
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64})
    )
    (path / "model.safetensors").write_bytes(b"x" * 1000)
    store.write_manifest(path, name=name, repo=repo)
    return path


def test_resolve_catalog_ids_repo_ids_and_paths(tmp_path):
    path = fake_ready_model(tmp_path, "mlx-community/Qwen3-4B-4bit", "qwen3:4b")
    assert store.resolve("qwen3:4b", tmp_path, tmp_path / "hf") == ModelRef("qwen3:4b", path)
    assert store.resolve("mlx-community/Qwen3-4B-4bit", tmp_path, tmp_path / "hf") == ModelRef("qwen3:4b", path)
    assert store.resolve(str(path), tmp_path) == ModelRef(path.name, path)
    with pytest.raises(ModelNotFound, match="squish pull qwen3:8b"):
        store.resolve("qwen3:8b", tmp_path, tmp_path / "hf")
    with pytest.raises(ModelNotFound, match="squish pull someone/model"):
        store.resolve("someone/model", tmp_path, tmp_path / "hf")
    with pytest.raises(ModelNotFound, match="the catalog has"):
        store.resolve("mistral:7b", tmp_path, tmp_path / "hf")


def test_a_partial_download_is_never_resolved_or_listed(tmp_path):
    staging = store.staging_dir_for("mlx-community/Qwen3-4B-4bit", tmp_path)
    staging.mkdir(parents=True)
    (staging / "config.json").write_text("{}")
    (staging / store.PULL_STATE).write_text(json.dumps({"name": "qwen3:4b", "total_bytes": 2000}))
    target = store.model_dir_for("mlx-community/Qwen3-4B-4bit", tmp_path)
    target.mkdir()  # a directory without its manifest is not ready either
    with pytest.raises(ModelNotFound):
        store.resolve("qwen3:4b", tmp_path, tmp_path / "hf")
    assert [m.name for m in inventory.local_models(tmp_path, tmp_path / "hf")] == ["smollm2:135m"]
    [partial] = inventory.partial_downloads(tmp_path, tmp_path / "hf")
    assert partial.name == "qwen3:4b" and partial.total_bytes == 2000


def test_remove_a_model_pulled_before_the_hugging_face_cache(tmp_path):
    path = fake_ready_model(tmp_path, "mlx-community/Qwen3-4B-4bit", "qwen3:4b")
    staging = store.staging_dir_for("mlx-community/Qwen3-4B-4bit", tmp_path)
    staging.mkdir()
    removal = store.removal("qwen3:4b", tmp_path, tmp_path / "hf")
    assert removal.own == [path, staging] and removal.pulled == removal.others == [] and removal.deletes(False)
    assert [line.split(" (")[0] for line in removal.describe(False)] == [str(path), str(staging)]
    removal.execute(False)
    assert not path.exists() and not staging.exists()
    with pytest.raises(ModelNotFound):
        store.removal("qwen3:4b", tmp_path, tmp_path / "hf")
    with pytest.raises(UserError, match="embedded"):
        store.removal("smollm2:135m", tmp_path)
    with pytest.raises(UserError, match="local directories"):
        store.removal("./some/dir/", tmp_path)


def test_picker_rows_list_local_then_catalog_with_fit(tmp_path):
    fake_ready_model(tmp_path, "mlx-community/Qwen3-4B-4bit", "qwen3:4b")
    rows = inventory.picker_rows(tmp_path, machine(total=16, available=10), tmp_path / "hf")
    names = [r.name for r in rows]
    assert names[0] == "smollm2:135m" and rows[0].kind == "embedded" and rows[0].ready
    assert "qwen3:4b" in names and names.count("qwen3:4b") == 1  # downloaded: listed once, as local
    local = rows[names.index("qwen3:4b")]
    assert local.kind == "local" and local.ready and local.target == "qwen3:4b"
    found = store.resolve(local.target, tmp_path, tmp_path / "hf").path
    assert found == store.model_dir_for("mlx-community/Qwen3-4B-4bit", tmp_path)
    big = rows[names.index("qwen3:8b")]
    assert big.kind == "catalog" and not big.ready and big.fit == "yes" and big.size_bytes > 4 * GB
    assert big.target == "qwen3:8b" and big.detail.startswith("download ~4.61 GB · 4-bit")
    assert all(r.fit in ("yes", "tight", "no") for r in rows)


def test_picker_row_targets_a_directory_its_name_does_not_lead_to(tmp_path):
    path = fake_ready_model(tmp_path, "someone/odd", "a name of its own")
    [row] = [r for r in inventory.picker_rows(tmp_path, machine(), tmp_path / "hf") if r.name == "a name of its own"]
    assert row.target == str(path) and store.resolve(row.target, tmp_path, tmp_path / "hf").path == path
