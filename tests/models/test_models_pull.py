"""Hub downloads against the local fake hub: plan, disk refusal, progress, resume, verification, errors."""

import hashlib
import json
import threading
from pathlib import Path

import pytest
from fake_hub import (  # noqa: F401 (fixtures)
    COMMIT,
    HUGE_REPO,
    TINY_REPO,
    closed_port_url,
    fake_hub,
    listing,
    tiny_repo_files,
)

from squish.engine.ref import ModelRef
from squish.errors import EngineFailure, ModelError, ModelNotFound, UserError
from squish.models import inventory, pull, store

SHARD = "model-00001-of-00002.safetensors"


def plan_for(fake_hub, home, name=TINY_REPO):
    return pull.fetch_plan(name, home=home, endpoint=fake_hub.url)


def test_plan_reads_real_sizes_and_estimates_ram(fake_hub, tiny_repo_files, tmp_path):
    plan = plan_for(fake_hub, tmp_path)
    wanted = {n: len(d) for n, d in tiny_repo_files.items() if n not in ("README.md", ".gitattributes")}
    assert {f.name: f.size for f in plan.files} == wanted
    assert plan.total_bytes == sum(wanted.values()) and plan.present_bytes == 0
    assert plan.revision == COMMIT
    weights = len(tiny_repo_files[SHARD]) + len(tiny_repo_files["model-00002-of-00002.safetensors"])
    assert plan.ram.weights_bytes == weights
    assert plan.ram.context == 512  # the model's window is below the default context
    assert plan.ram.kv_bytes == 2 * 2 * 2 * 32 * 2 * 512  # layers, KV heads, head dim from config.json
    assert plan.disk_ok and plan.as_dict()["ram_bytes"] == plan.ram.total_bytes
    assert [f.sha256 for f in plan.files if f.name == SHARD] == [hashlib.sha256(tiny_repo_files[SHARD]).hexdigest()]
    assert listing(tmp_path) == []  # planning writes nothing
    assert [r[0] for r in fake_hub.requests] == ["GET", "GET"]  # model info, then config.json in memory


def test_download_reports_progress_and_installs_a_verified_model(fake_hub, tiny_repo_files, tmp_path):
    plan = plan_for(fake_hub, tmp_path)
    reports = []
    target = pull.download(plan, progress=reports.append, endpoint=fake_hub.url)
    assert target == store.model_dir_for(TINY_REPO, tmp_path)
    assert store.read_manifest(target)["revision"] == COMMIT
    for name in (SHARD, "tokenizer.json", "config.json"):
        assert (target / name).read_bytes() == tiny_repo_files[name]
    assert not list(target.glob("*.part")) and not (target / store.PULL_STATE).exists()
    assert [p.name for p in store.models_dir(tmp_path).iterdir()] == [target.name]  # no staging, no lock left
    downloads = [r for r in reports if r.phase == "download"]
    assert [r.done_bytes for r in downloads] == sorted(r.done_bytes for r in downloads)
    assert downloads[-1].done_bytes == plan.total_bytes and downloads[-1].speed_bps > 0
    assert [r.phase for r in reports[-2:]] == ["verify", "done"]
    assert store.resolve(TINY_REPO, tmp_path) == ModelRef(TINY_REPO, target)
    assert TINY_REPO in [m.name for m in inventory.local_models(tmp_path)]


def test_a_present_model_is_not_downloaded_again(fake_hub, tmp_path):
    plan = plan_for(fake_hub, tmp_path)
    pull.download(plan, endpoint=fake_hub.url)
    asked = len(fake_hub.requests)
    assert pull.ready_dir(TINY_REPO, tmp_path) == plan.target
    assert pull.download(plan, endpoint=fake_hub.url) == plan.target
    assert len(fake_hub.requests) == asked  # not one request to the hub


def test_insufficient_disk_is_refused_before_any_byte_is_written(fake_hub, tmp_path):
    plan = plan_for(fake_hub, tmp_path, HUGE_REPO)
    assert plan.total_bytes > 10**16 and not plan.disk_ok
    with pytest.raises(pull.InsufficientDisk, match="not enough disk") as caught:
        pull.download(plan, endpoint=fake_hub.url)
    assert caught.value.exit_code == 1
    assert listing(tmp_path) == []
    assert fake_hub.files_requested() == {"config.json"}  # read into memory by the plan, never written


def test_cancelled_download_resumes_with_a_range_request(fake_hub, tiny_repo_files, tmp_path):
    plan = plan_for(fake_hub, tmp_path)
    cancel = threading.Event()

    def stop_midway(report):
        if report.file == SHARD:
            cancel.set()

    fake_hub.throttle_s = 0.02
    with pytest.raises(pull.Cancelled):
        pull.download(plan, progress=stop_midway, cancel=cancel, endpoint=fake_hub.url)
    part = plan.staging / f"{SHARD}.part"
    kept = part.stat().st_size
    assert 0 < kept < len(tiny_repo_files[SHARD])
    with pytest.raises(ModelNotFound):
        store.resolve(TINY_REPO, tmp_path)  # a partial download is never ready
    assert [m.name for m in inventory.local_models(tmp_path)] == ["smollm2:135m"]

    fake_hub.throttle_s = 0.0
    again = plan_for(fake_hub, tmp_path)
    assert (
        again.present_bytes
        == plan.total_bytes
        - len(tiny_repo_files[SHARD])
        - len(tiny_repo_files["model-00002-of-00002.safetensors"])
        + kept
    )
    reports = []
    target = pull.download(again, progress=reports.append, endpoint=fake_hub.url)
    assert fake_hub.range_requests(SHARD) == [f"bytes={kept}-"]
    assert min(r.done_bytes for r in reports) > again.present_bytes  # counted on from what was kept
    assert (target / SHARD).read_bytes() == tiny_repo_files[SHARD]


def test_a_dropped_connection_is_resumed_within_the_pull(fake_hub, tiny_repo_files, tmp_path):
    fake_hub.drop_after[SHARD] = 100_000
    target = pull.download(plan_for(fake_hub, tmp_path), endpoint=fake_hub.url)
    assert fake_hub.range_requests(SHARD) == ["bytes=100000-"]
    assert (target / SHARD).read_bytes() == tiny_repo_files[SHARD]


def test_a_hub_that_keeps_failing_is_a_network_error_and_keeps_the_partial(fake_hub, tmp_path):
    plan = plan_for(fake_hub, tmp_path)
    fake_hub.broken_at[SHARD] = 100_000  # every attempt, resumed or not, dies there

    with pytest.raises(EngineFailure, match=f"failed at {SHARD}.*run `squish pull {TINY_REPO}` again") as caught:
        pull.download(plan, endpoint=fake_hub.url)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    assert (plan.staging / f"{SHARD}.part").stat().st_size == 100_000
    with pytest.raises(ModelNotFound):
        store.resolve(TINY_REPO, tmp_path)
    assert not plan.target.exists()
    assert fake_hub.range_requests(SHARD) == ["bytes=100000-"] * (pull.RETRIES)
    del fake_hub.broken_at[SHARD]  # the network is back: the next pull resumes at byte 100000
    pull.download(plan_for(fake_hub, tmp_path), endpoint=fake_hub.url)
    assert fake_hub.range_requests(SHARD)[-1] == "bytes=100000-"


def test_corrupt_bytes_are_caught_by_the_hash_and_deleted(fake_hub, tiny_repo_files, tmp_path):
    good = tiny_repo_files[SHARD]
    fake_hub.repos[TINY_REPO].served_content[SHARD] = good[:-64] + bytes(64)  # same size, other bytes
    plan = plan_for(fake_hub, tmp_path)
    with pytest.raises(ModelError, match="sha256") as caught:
        pull.download(plan, endpoint=fake_hub.url)
    assert caught.value.exit_code == 2
    assert not (plan.staging / SHARD).exists() and not plan.target.exists()
    with pytest.raises(ModelNotFound):
        store.resolve(TINY_REPO, tmp_path)
    del fake_hub.repos[TINY_REPO].served_content[SHARD]  # the hub is fixed: only that file is fetched again
    asked = len(fake_hub.requests)
    target = pull.download(plan_for(fake_hub, tmp_path), endpoint=fake_hub.url)
    assert (target / SHARD).read_bytes() == good
    assert fake_hub.files_requested(since=asked) == {"config.json", SHARD}  # the plan reads config.json


def test_a_corrupt_safetensors_header_is_caught_without_a_hash(fake_hub, tiny_repo_files, tmp_path):
    repo = fake_hub.repos[TINY_REPO]
    repo.files[SHARD] = b"\xff" * 8 + tiny_repo_files[SHARD][8:]  # header length past the end
    repo.is_lfs = lambda name: False  # a plain git file: the hub gives no sha256
    plan = plan_for(fake_hub, tmp_path)
    assert all(f.sha256 is None for f in plan.files)
    with pytest.raises(ModelError, match="header"):
        pull.download(plan, endpoint=fake_hub.url)
    assert not (plan.staging / SHARD).exists() and not plan.target.exists()


def test_a_missing_shard_named_by_the_index_fails_verification(fake_hub, tmp_path):
    del fake_hub.repos[TINY_REPO].files["model-00002-of-00002.safetensors"]
    with pytest.raises(ModelError, match="missing shards"):
        pull.download(plan_for(fake_hub, tmp_path), endpoint=fake_hub.url)


def test_unreachable_hub(tmp_path):
    endpoint = closed_port_url()
    with pytest.raises(EngineFailure, match=f"cannot reach the hub at {endpoint}") as caught:
        pull.fetch_plan(TINY_REPO, home=tmp_path, endpoint=endpoint)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    assert listing(tmp_path) == []


def test_unknown_repo_and_names(fake_hub, tmp_path):
    with pytest.raises(ModelNotFound, match="not found on the hub"):
        plan_for(fake_hub, tmp_path, "test-org/nothing-here")
    with pytest.raises(UserError, match="embedded"):
        pull.identify("smollm2:135m")
    with pytest.raises(ModelNotFound, match="the catalog has"):
        pull.identify("qwen9:1b")
    with pytest.raises(UserError, match="local directory"):
        pull.identify(str(tmp_path))
    assert pull.identify("mlx-community/Qwen3-8B-4bit") == ("qwen3:8b", "mlx-community/Qwen3-8B-4bit")


def test_a_repo_without_safetensors_is_refused(fake_hub, tiny_repo_files, tmp_path):
    repo = fake_hub.repos[TINY_REPO]
    for name in list(repo.files):
        if name.endswith(".safetensors"):
            repo.files[name.replace(".safetensors", ".bin")] = repo.files.pop(name)
    with pytest.raises(UserError, match="no .safetensors"):
        plan_for(fake_hub, tmp_path)


def test_a_changed_repo_restarts_the_partial_download(fake_hub, tmp_path):
    plan = plan_for(fake_hub, tmp_path)
    plan.staging.mkdir(parents=True)
    (plan.staging / store.PULL_STATE).write_text(json.dumps({"revision": "0" * 40}))
    (plan.staging / f"{SHARD}.part").write_bytes(b"stale bytes of another commit")
    assert plan_for(fake_hub, tmp_path).present_bytes == 0
    target = pull.download(plan, endpoint=fake_hub.url)
    assert not fake_hub.range_requests(SHARD)
    assert store.read_manifest(target) is not None


def test_two_pulls_of_one_model_never_share_files(fake_hub, tmp_path):
    plan = plan_for(fake_hub, tmp_path)
    with pull.pull_lock(plan.staging, plan.name):
        with pytest.raises(UserError, match=f"another squish pull of {TINY_REPO} is running"):
            pull.download(plan, endpoint=fake_hub.url)
    assert pull.download(plan, endpoint=fake_hub.url) == plan.target
    assert not plan.staging.with_name(plan.staging.name + ".lock").exists()


def test_the_fake_hub_serves_huggingface_hub_itself(fake_hub, tiny_repo_files, tmp_path):
    """huggingface_hub's own HEAD + redirect + download path accepts the fake hub's answers."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(TINY_REPO, SHARD, endpoint=fake_hub.url, cache_dir=str(tmp_path))
    assert Path(path).read_bytes() == tiny_repo_files[SHARD]
    assert ("HEAD", f"/{TINY_REPO}/resolve/main/{SHARD}", None) in fake_hub.requests
