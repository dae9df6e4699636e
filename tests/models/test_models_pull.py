"""Hub downloads into the Hugging Face cache against the local fake hub: plan, disk refusal, progress,
resume, retries, verification, errors, and models another tool put in the cache."""

import hashlib
import json
import threading
from pathlib import Path

import pytest
from fake_hub import (  # noqa: F401 (fixtures)
    CHUNK,
    COMMIT,
    HUGE_REPO,
    TINY_REPO,
    WIDE_REPO,
    closed_port_url,
    fake_hub,
    hf_cache_of,
    listing,
    tiny_repo_files,
    wide_repo_files,
)

from squish.engine.ref import ModelRef
from squish.errors import EngineFailure, ModelError, ModelNotFound, UserError
from squish.models import cache, hardware, inventory, pull, store, transfer

SHARD = "model-00001-of-00002.safetensors"


def plan_for(fake_hub, home, name=TINY_REPO):
    return pull.fetch_plan(name, home=home, endpoint=fake_hub.url, hf_cache=hf_cache_of(home))


def pulled(fake_hub, home, name=TINY_REPO, **kwargs) -> Path:
    return pull.download(plan_for(fake_hub, home, name), endpoint=fake_hub.url, **kwargs)


def resolve(name, home):
    return store.resolve(name, home, hf_cache_of(home))


def local_names(home) -> list[str]:
    return [m.name for m in inventory.local_models(home, hf_cache_of(home))]


def incomplete(home, repo, name, files) -> Path:
    digest = hashlib.sha256(files[name]).hexdigest()
    return hf_cache_of(home) / cache.repo_folder(repo) / "blobs" / f"{digest}.incomplete"


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
    [shard] = [f for f in plan.files if f.name == SHARD]
    assert shard.etag == shard.sha256 == hashlib.sha256(tiny_repo_files[SHARD]).hexdigest()
    [config] = [f for f in plan.files if f.name == "config.json"]
    assert config.sha256 is None and config.etag == fake_hub.repos[TINY_REPO].git_oid("config.json")
    assert plan.target == hf_cache_of(tmp_path) / "models--test-org--tiny-llama" / "snapshots" / COMMIT
    assert listing(tmp_path) == []  # planning writes nothing
    assert [r[0] for r in fake_hub.requests] == ["GET", "GET"]  # model info, then config.json in memory


def test_download_fills_the_hugging_face_cache_with_a_verified_model(fake_hub, tiny_repo_files, tmp_path):
    plan = plan_for(fake_hub, tmp_path)
    reports = []
    target = pull.download(plan, progress=reports.append, endpoint=fake_hub.url)
    assert target == plan.target
    etags = {f.name: f.etag for f in plan.files}
    for name in (SHARD, "tokenizer.json", "config.json"):
        assert (target / name).read_bytes() == tiny_repo_files[name]
        assert cache.blob_name(target / name) == etags[name]  # a link to the blob named by its hash
    repo_dir = plan.repo_dir
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    assert not list(repo_dir.glob("blobs/*.incomplete"))
    assert sorted(p.name for p in (repo_dir / "blobs").iterdir()) == sorted(f.etag for f in plan.files)
    marker = cache.read_marker(store.hf_records(tmp_path), target)
    assert marker["pulled"] and marker["revision"] == COMMIT and set(marker["files"]) == {f.name for f in plan.files}
    assert cache.read_state(store.hf_records(tmp_path), TINY_REPO) == {}  # the pull's record is gone
    downloads = [r for r in reports if r.phase == "download"]
    assert [r.done_bytes for r in downloads] == sorted(r.done_bytes for r in downloads)
    assert downloads[-1].done_bytes == plan.total_bytes and downloads[-1].speed_bps > 0
    assert [r.phase for r in reports[-2:]] == ["verify", "done"]
    assert resolve(TINY_REPO, tmp_path) == ModelRef(TINY_REPO, target)
    [row] = [m for m in inventory.local_models(tmp_path, hf_cache_of(tmp_path)) if m.name == TINY_REPO]
    assert row.source == "squish" and row.verified and row.path == str(target)


def test_the_pulled_model_is_where_huggingface_hub_and_mlx_lm_look(fake_hub, tmp_path):
    """mlx_lm loads through snapshot_download: offline it finds squish's pull by refs/main."""
    from huggingface_hub import snapshot_download

    target = pulled(fake_hub, tmp_path)
    found = snapshot_download(TINY_REPO, cache_dir=hf_cache_of(tmp_path), local_files_only=True)
    assert Path(found) == target


def test_a_present_model_is_not_downloaded_again(fake_hub, tmp_path):
    plan = plan_for(fake_hub, tmp_path)
    pull.download(plan, endpoint=fake_hub.url)
    asked = len(fake_hub.requests)
    assert pull.ready_dir(TINY_REPO, tmp_path, hf_cache_of(tmp_path)) == plan.target
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


def test_cancelled_download_resumes_with_a_range_request(fake_hub, wide_repo_files, tmp_path):
    plan = plan_for(fake_hub, tmp_path, WIDE_REPO)
    cancel = threading.Event()

    small = sum(f.size for f in plan.files if not f.name.endswith(".safetensors"))  # fetched before the shards

    def stop_midway(report):
        if report.file == SHARD and report.done_bytes >= small + CHUNK:
            cancel.set()  # the first 10 MiB chunk of the shard is in: the next update raises

    fake_hub.throttle_s = 0.002  # about 8 MB/s: progress is reported after every chunk
    with pytest.raises(pull.Cancelled):
        pull.download(plan, progress=stop_midway, cancel=cancel, endpoint=fake_hub.url)
    fake_hub.throttle_s = 0.0
    part = incomplete(tmp_path, WIDE_REPO, SHARD, wide_repo_files)
    assert part.stat().st_size == CHUNK < len(wide_repo_files[SHARD])
    with pytest.raises(ModelNotFound):
        resolve(WIDE_REPO, tmp_path)  # a partial download is never ready
    assert local_names(tmp_path) == ["smollm2:135m"]
    [partial] = inventory.partial_downloads(tmp_path, hf_cache_of(tmp_path))
    assert partial.name == WIDE_REPO and partial.present_bytes == small + CHUNK

    again = plan_for(fake_hub, tmp_path, WIDE_REPO)
    assert again.present_bytes == partial.present_bytes
    reports = []
    target = pull.download(again, progress=reports.append, endpoint=fake_hub.url)
    assert fake_hub.range_requests(SHARD) == [f"bytes={CHUNK}-"]
    assert min(r.done_bytes for r in reports) >= again.present_bytes  # counted on from what was kept
    assert (target / SHARD).read_bytes() == wide_repo_files[SHARD]
    assert inventory.partial_downloads(tmp_path, hf_cache_of(tmp_path)) == []


def test_a_dropped_connection_is_resumed_within_the_pull(fake_hub, wide_repo_files, tmp_path):
    fake_hub.drop_after[SHARD] = CHUNK + 100_000
    target = pulled(fake_hub, tmp_path, WIDE_REPO)
    assert fake_hub.range_requests(SHARD) == [f"bytes={CHUNK}-"]
    assert (target / SHARD).read_bytes() == wide_repo_files[SHARD]


def test_a_5xx_answer_during_a_pull_is_retried(fake_hub, tiny_repo_files, tmp_path):
    fake_hub.fail_with[SHARD] = [503]
    fake_hub.fail_with["tokenizer.json"] = [502]  # a file huggingface_hub itself downloads
    target = pulled(fake_hub, tmp_path)
    assert (target / SHARD).read_bytes() == tiny_repo_files[SHARD]
    assert (target / "tokenizer.json").read_bytes() == tiny_repo_files["tokenizer.json"]
    assert fake_hub.fail_with == {SHARD: [], "tokenizer.json": []}


def test_a_hub_that_keeps_answering_5xx_is_a_network_error_and_keeps_what_arrived(fake_hub, tmp_path):
    fake_hub.fail_with[SHARD] = [503] * transfer.RETRIES
    again = f"failed at {SHARD}: HTTP 503 .*run `squish pull {TINY_REPO}` again"
    with pytest.raises(EngineFailure, match=again) as caught:
        pulled(fake_hub, tmp_path)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    before = len(fake_hub.requests)
    target = pulled(fake_hub, tmp_path)  # the hub is back: the files that arrived are not asked for again
    assert fake_hub.files_requested(before) == {"config.json", SHARD, "model-00002-of-00002.safetensors"}
    assert cache.read_marker(store.hf_records(tmp_path), target) is not None


def test_a_hub_that_keeps_failing_is_a_network_error_and_keeps_the_partial(fake_hub, tmp_path, wide_repo_files):
    fake_hub.broken_at[SHARD] = CHUNK + 100_000  # every attempt, resumed or not, dies there
    with pytest.raises(EngineFailure, match=f"failed at {SHARD}.*run `squish pull {WIDE_REPO}` again") as caught:
        pulled(fake_hub, tmp_path, WIDE_REPO)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    assert incomplete(tmp_path, WIDE_REPO, SHARD, wide_repo_files).stat().st_size == CHUNK
    with pytest.raises(ModelNotFound):
        resolve(WIDE_REPO, tmp_path)
    assert fake_hub.range_requests(SHARD) == [f"bytes={CHUNK}-"] * 5  # huggingface_hub's retries, resumed
    del fake_hub.broken_at[SHARD]  # the network is back: the next pull resumes at the chunk kept
    pulled(fake_hub, tmp_path, WIDE_REPO)
    assert fake_hub.range_requests(SHARD)[-1] == f"bytes={CHUNK}-"


def test_corrupt_bytes_are_caught_by_the_hash_and_deleted(fake_hub, tiny_repo_files, tmp_path):
    good = tiny_repo_files[SHARD]
    fake_hub.repos[TINY_REPO].served_content[SHARD] = good[:-64] + bytes(64)  # same size, other bytes
    with pytest.raises(ModelError, match="sha256") as caught:
        pulled(fake_hub, tmp_path)
    assert caught.value.exit_code == 2
    assert not incomplete(tmp_path, TINY_REPO, SHARD, tiny_repo_files).exists()
    with pytest.raises(ModelNotFound):
        resolve(TINY_REPO, tmp_path)
    del fake_hub.repos[TINY_REPO].served_content[SHARD]  # the hub is fixed: only that file is fetched again
    before = len(fake_hub.requests)
    target = pulled(fake_hub, tmp_path)
    assert (target / SHARD).read_bytes() == good
    assert fake_hub.files_requested(before) == {"config.json", SHARD, "model-00002-of-00002.safetensors"}


def test_a_damaged_non_lfs_file_is_caught_by_its_git_hash(fake_hub, tiny_repo_files, tmp_path):
    fake_hub.repos[TINY_REPO].served_content["tokenizer.json"] = tiny_repo_files["tokenizer.json"][:-1] + b" "
    with pytest.raises(ModelError, match="tokenizer.json does not match the hub's size and hash"):
        pulled(fake_hub, tmp_path)
    assert not (plan_for(fake_hub, tmp_path).target / "tokenizer.json").exists()


def test_a_corrupt_safetensors_header_on_the_hub_fails_verification(fake_hub, tiny_repo_files, tmp_path):
    repo = fake_hub.repos[TINY_REPO]
    repo.files[SHARD] = b"\xff" * 8 + tiny_repo_files[SHARD][8:]  # header length past the end
    repo.is_lfs = lambda name: False  # a plain git file: the hub gives no sha256, its git blob id is checked
    plan = plan_for(fake_hub, tmp_path)
    assert all(f.sha256 is None and f.blob_id for f in plan.files)
    with pytest.raises(ModelError, match="as the hub has it.*header length"):
        pull.download(plan, endpoint=fake_hub.url)
    with pytest.raises(ModelNotFound):
        resolve(TINY_REPO, tmp_path)


def test_a_missing_shard_named_by_the_index_fails_verification(fake_hub, tmp_path):
    del fake_hub.repos[TINY_REPO].files["model-00002-of-00002.safetensors"]
    with pytest.raises(ModelError, match="missing shards"):
        pulled(fake_hub, tmp_path)


def test_unreachable_hub(tmp_path):
    endpoint = closed_port_url()
    with pytest.raises(EngineFailure, match=f"cannot reach the hub at {endpoint}") as caught:
        pull.fetch_plan(TINY_REPO, home=tmp_path, endpoint=endpoint, hf_cache=hf_cache_of(tmp_path))
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


def test_a_changed_repo_keeps_the_partial_bytes_of_unchanged_files_only(fake_hub, tiny_repo_files, tmp_path):
    records, plan = store.hf_records(tmp_path), plan_for(fake_hub, tmp_path)
    stale = plan.repo_dir / "blobs" / f"{'0' * 64}.incomplete"  # a file of the old commit that changed since
    kept = incomplete(tmp_path, TINY_REPO, SHARD, tiny_repo_files)  # a file the new commit still has
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"bytes of a file the repo no longer has")
    kept.write_bytes(tiny_repo_files[SHARD][:1000])
    files = [["model.safetensors", 5000, "0" * 64], [SHARD, len(tiny_repo_files[SHARD]), kept.name.split(".")[0]]]
    cache.write_state(records, TINY_REPO, {"repo": TINY_REPO, "name": TINY_REPO, "revision": "1" * 40, "files": files})
    target = pull.download(plan_for(fake_hub, tmp_path), endpoint=fake_hub.url)
    assert not stale.exists() and fake_hub.range_requests(SHARD) == ["bytes=1000-"]
    assert (target / SHARD).read_bytes() == tiny_repo_files[SHARD]


def test_two_pulls_of_one_model_never_share_files(fake_hub, tmp_path):
    plan = plan_for(fake_hub, tmp_path)
    with pull.pull_lock(pull.lock_path(plan), plan.name):
        with pytest.raises(UserError, match=f"another squish pull of {TINY_REPO} is running"):
            pull.download(plan, endpoint=fake_hub.url)
    assert pull.download(plan, endpoint=fake_hub.url) == plan.target
    assert not pull.lock_path(plan).exists()


def test_a_model_another_tool_cached_is_listed_verified_on_first_use_and_not_owned(fake_hub, tmp_path):
    """What mlx_lm.load does for a repo it has not seen: snapshot_download into the cache."""
    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download(TINY_REPO, cache_dir=hf_cache_of(tmp_path), endpoint=fake_hub.url))
    ref = resolve(TINY_REPO, tmp_path)
    assert ref == ModelRef(TINY_REPO, snapshot)
    [row] = [m for m in inventory.local_models(tmp_path, hf_cache_of(tmp_path)) if m.repo == TINY_REPO]
    assert row.source == "hf-cache" and not row.verified
    assert not store.verified(ref, tmp_path)
    store.verify(ref, tmp_path)  # every file against the hash its blob is named by: no network
    assert store.verified(ref, tmp_path) and not cache.owned(store.hf_records(tmp_path), snapshot)
    removal = store.removal(TINY_REPO, tmp_path, hf_cache_of(tmp_path))
    assert removal.pulled == [] and removal.others == [COMMIT] and not removal.deletes(with_others=False)
    asked = len(fake_hub.requests)
    assert pull.ready_dir(TINY_REPO, tmp_path, hf_cache_of(tmp_path)) == snapshot
    assert len(fake_hub.requests) == asked


def test_the_picker_offers_a_model_another_tool_cached_ready_to_load(fake_hub, tmp_path):
    from huggingface_hub import snapshot_download

    machine = hardware.Hardware("CPU", "test machine", 8.0, 6.0, 100.0)

    def row():
        [found] = [r for r in inventory.picker_rows(tmp_path, machine, hf_cache_of(tmp_path)) if r.name == TINY_REPO]
        return found

    snapshot_download(TINY_REPO, cache_dir=hf_cache_of(tmp_path), endpoint=fake_hub.url)
    first = row()
    assert first.ready and first.kind == "local" and first.target == TINY_REPO
    assert "in the Hugging Face cache" in first.detail and "checked on first load" in first.detail
    store.verify(resolve(first.target, tmp_path), tmp_path)  # what loading it does first
    assert "checked on first load" not in row().detail


def test_a_damaged_file_in_the_cache_is_refused_at_load_and_fetched_again(fake_hub, tiny_repo_files, tmp_path):
    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download(TINY_REPO, cache_dir=hf_cache_of(tmp_path), endpoint=fake_hub.url))
    blob = (snapshot / SHARD).resolve()
    blob.write_bytes(tiny_repo_files[SHARD][:-64] + bytes(64))  # bit rot: same size, other bytes
    with pytest.raises(ModelError, match=f"{SHARD} does not match its hash"):
        store.verify(resolve(TINY_REPO, tmp_path), tmp_path)
    assert pull.ready_dir(TINY_REPO, tmp_path, hf_cache_of(tmp_path)) is None
    before = len(fake_hub.requests)
    assert pulled(fake_hub, tmp_path) == snapshot
    assert fake_hub.files_requested(before) == {"config.json", SHARD}  # the plan's config.json, then the damaged file
    assert (snapshot / SHARD).read_bytes() == tiny_repo_files[SHARD]


def test_a_pytorch_layout_repo_in_the_cache_is_not_listed(fake_hub, tiny_repo_files, tmp_path):
    from huggingface_hub import snapshot_download
    from safetensors.numpy import load, save

    repo = fake_hub.repos[TINY_REPO]
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        repo.files[name] = save(load(repo.files[name]), metadata={"format": "pt"})
    snapshot_download(TINY_REPO, cache_dir=hf_cache_of(tmp_path), endpoint=fake_hub.url)
    assert local_names(tmp_path) == ["smollm2:135m"]
    with pytest.raises(ModelNotFound, match="not downloaded"):
        resolve(TINY_REPO, tmp_path)


def test_the_fake_hub_serves_huggingface_hub_itself(fake_hub, tiny_repo_files, tmp_path):
    """huggingface_hub's own HEAD + redirect + download path accepts the fake hub's answers."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(TINY_REPO, SHARD, endpoint=fake_hub.url, cache_dir=str(tmp_path))
    assert Path(path).read_bytes() == tiny_repo_files[SHARD]
    assert ("HEAD", f"/{TINY_REPO}/resolve/main/{SHARD}", None) in fake_hub.requests


def test_marker_records_stay_beside_the_cache_not_in_it(fake_hub, tmp_path):
    target = pulled(fake_hub, tmp_path)
    in_cache = {p.name for p in target.iterdir()}
    assert in_cache == {f.name for f in plan_for(fake_hub, tmp_path).files}  # nothing of squish's in the snapshot
    marker = json.loads(cache.marker_path(store.hf_records(tmp_path), target).read_text())
    assert marker["snapshot"] == str(target)
