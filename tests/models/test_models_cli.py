"""`squish models`, `squish pull`, `squish rm` and `--model` through subprocesses, against the fake hub."""

import json
import signal
import subprocess
import sys
import time

import pytest
from fake_hub import (  # noqa: F401
    CHUNK,
    HUGE_REPO,
    TINY_REPO,
    WIDE_REPO,
    closed_port_url,
    fake_hub,
    hf_cache_of,
    listing,
    squish,
    tiny_repo_files,
    wide_repo_files,
)
from helpers import SQUISH, squish_env

SHARD = "model-00001-of-00002.safetensors"


def one_error_line(proc) -> str:
    assert proc.stderr.startswith("squish: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_models_lists_the_embedded_model_and_what_fits_offline(tmp_path):
    proc = squish(tmp_path, "models", "--json", HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["hardware"]["backend"] in ("Metal", "CUDA", "CPU")
    assert [m["name"] for m in out["local"]] == ["smollm2:135m"] and out["local"][0]["embedded"]
    assert out["default_model"] == "smollm2:135m" and out["partial"] == []
    ids = [row["id"] for row in out["catalog"]]
    assert {"qwen2.5:1.5b", "qwen3:8b", "llama3.2:1b", "smollm2:135m"} <= set(ids)
    assert all(row["fit"] in ("yes", "tight", "no") and row["ram_bytes"] > 0 for row in out["catalog"])
    assert out["recommended"] is None or out["recommended"] in ids
    every = json.loads(squish(tmp_path, "models", "--json", "--all").stdout)["catalog"]
    assert any(row["experimental"] and row["id"].endswith("-3bit") for row in every)
    text = squish(tmp_path, "models").stdout
    assert "this machine:" in text and "smollm2:135m (embedded)" in text and "FITS" in text


def test_dry_run_prints_the_estimate_and_writes_nothing(fake_hub, tiny_repo_files, tmp_path):
    proc = squish(tmp_path, "pull", TINY_REPO, "--dry-run", endpoint=fake_hub.url)
    assert proc.returncode == 0, proc.stderr
    assert "download: 696.5 kB in 6 files" in proc.stdout
    assert "disk: needs" in proc.stdout and ": ok" in proc.stdout
    assert "RAM: ~0.30 GB (weights 0.00 + KV cache 0.00 at 512 tokens" in proc.stdout
    assert listing(tmp_path) == []
    plan = json.loads(squish(tmp_path, "pull", TINY_REPO, "--dry-run", "--json", endpoint=fake_hub.url).stdout)
    assert plan["download_bytes"] == sum(
        len(d) for n, d in tiny_repo_files.items() if n not in ("README.md", ".gitattributes")
    )
    assert plan["disk_ok"] and plan["ram_fit"] == "yes" and plan["ram"]["context"] == 512


def test_a_pull_that_cannot_fit_is_refused_before_any_byte_is_written(fake_hub, tmp_path):
    for extra in ((), ("--dry-run",)):
        proc = squish(tmp_path, "pull", HUGE_REPO, *extra, endpoint=fake_hub.url)
        assert proc.returncode == 1
        assert "not enough disk for test-org/huge-llama" in one_error_line(proc)
        assert "NOT ENOUGH" in proc.stdout
    assert listing(tmp_path) == []
    assert fake_hub.files_requested() == {"config.json"}  # read into memory by the plan, never written


def test_unreachable_hub_is_exit_2_with_one_clear_line(tmp_path):
    endpoint = closed_port_url()
    proc = squish(tmp_path, "pull", "qwen2.5:0.5b", endpoint=endpoint)
    assert proc.returncode == 2
    assert one_error_line(proc).startswith(f"squish: error: cannot reach the hub at {endpoint}")
    assert proc.stdout == "" and listing(tmp_path) == []


def test_offline_pull_is_refused_clearly(fake_hub, tmp_path):
    proc = squish(tmp_path, "pull", TINY_REPO, endpoint=fake_hub.url, HF_HUB_OFFLINE="1")
    assert proc.returncode == 2
    assert "offline (HF_HUB_OFFLINE is set)" in one_error_line(proc)
    assert fake_hub.requests == [] and listing(tmp_path) == []


def test_unknown_models(fake_hub, tmp_path):
    proc = squish(tmp_path, "pull", "test-org/nothing-here", endpoint=fake_hub.url)
    assert proc.returncode == 1 and "not found on the hub" in one_error_line(proc)
    proc = squish(tmp_path, "pull", "qwen9:1b", endpoint=fake_hub.url)
    assert proc.returncode == 1 and "the catalog has qwen3:0.6b" in one_error_line(proc)
    proc = squish(tmp_path, "-p", "hi", "--model", "qwen2.5:1.5b")
    assert proc.returncode == 1 and "run `squish pull qwen2.5:1.5b`" in one_error_line(proc)
    proc = squish(tmp_path, "rm", "qwen2.5:1.5b")
    assert proc.returncode == 1 and "not downloaded" in one_error_line(proc)


def test_pull_answer_default_offline_and_rm(fake_hub, tmp_path):
    proc = squish(tmp_path, "pull", TINY_REPO, endpoint=fake_hub.url)
    assert proc.returncode == 0, proc.stderr
    assert f"pulling {SHARD}" in proc.stderr and "verifying test-org/tiny-llama" in proc.stderr
    assert "ready: test-org/tiny-llama" in proc.stdout

    answer = squish(tmp_path, "--json", "-p", "Hello", "--model", TINY_REPO, "--max-tokens", "4", "--seed", "1")
    assert answer.returncode == 0, answer.stderr
    out = json.loads(answer.stdout)
    assert out["model"] == TINY_REPO and out["stats"]["generation_tokens"] >= 1

    offline = {"endpoint": closed_port_url(), "HF_HUB_OFFLINE": "1"}
    again = squish(tmp_path, "pull", TINY_REPO, **offline)
    assert again.returncode == 0 and "already downloaded" in again.stdout  # reused, no network
    local = json.loads(squish(tmp_path, "models", "--json", **offline).stdout)["local"]
    assert [m["name"] for m in local] == ["smollm2:135m", TINY_REPO]
    assert local[1]["quantization"] == "float16" and local[1]["last_used"] is not None

    assert squish(tmp_path, "models", "--set-default", TINY_REPO).returncode == 0
    answer = squish(tmp_path, "--json", "-p", "Hello", "--max-tokens", "2", **offline)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["model"] == TINY_REPO  # the remembered default, offline

    removed = squish(tmp_path, "rm", TINY_REPO)
    assert removed.returncode == 0 and "the default model is smollm2:135m again" in removed.stdout
    assert json.loads(squish(tmp_path, "models", "--json").stdout)["default_model"] == "smollm2:135m"
    assert not (hf_cache_of(tmp_path) / "models--test-org--tiny-llama").exists()
    assert squish(tmp_path, "rm", TINY_REPO).returncode == 1
    assert squish(tmp_path, "rm", "smollm2:135m").returncode == 1


def test_ctrl_c_stops_cleanly_and_the_next_pull_resumes(fake_hub, wide_repo_files, tmp_path):
    import hashlib

    fake_hub.pause_at[SHARD] = (CHUNK + 100_000, 30.0)  # the first 10 MiB chunk is written, then the hub stalls
    part = hf_cache_of(tmp_path) / "models--test-org--wide-llama" / "blobs"
    part = part / f"{hashlib.sha256(wide_repo_files[SHARD]).hexdigest()}.incomplete"
    puller = subprocess.Popen(
        [*SQUISH, "pull", WIDE_REPO],
        env=squish_env(tmp_path, fake_hub.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: (part.is_file() and part.stat().st_size >= CHUNK) or puller.poll() is not None)
    puller.send_signal(signal.SIGINT)
    _, stderr = puller.communicate(timeout=60)
    assert puller.returncode == 130, stderr
    assert "pull stopped" in stderr and f"run `squish pull {WIDE_REPO}` to resume" in stderr
    assert "Traceback" not in stderr
    assert part.stat().st_size == CHUNK

    listed = json.loads(squish(tmp_path, "models", "--json").stdout)
    assert [m["name"] for m in listed["local"]] == ["smollm2:135m"]
    assert [p["name"] for p in listed["partial"]] == [WIDE_REPO]
    refused = squish(tmp_path, "-p", "hi", "--model", WIDE_REPO)
    assert refused.returncode == 1 and "not downloaded" in refused.stderr

    proc = squish(tmp_path, "pull", WIDE_REPO, endpoint=fake_hub.url)
    assert proc.returncode == 0, proc.stderr
    assert "already here from an interrupted pull" in proc.stdout
    assert fake_hub.range_requests(SHARD) == [f"bytes={CHUNK}-"]
    repo_dir = hf_cache_of(tmp_path) / "models--test-org--wide-llama"
    assert not list(repo_dir.glob("blobs/*.incomplete"))
    [snapshot] = (repo_dir / "snapshots").iterdir()
    marker = json.loads((tmp_path / "models" / ".hf" / repo_dir.name / f"{snapshot.name}.json").read_text())
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(marker["files"]) and marker["pulled"]


def test_a_read_time_out_during_a_pull_is_resumed(fake_hub, wide_repo_files, tmp_path):
    fake_hub.pause_at[SHARD] = (CHUNK + 100_000, 3.0)  # the hub goes quiet for longer than the read time-out
    proc = squish(tmp_path, "pull", WIDE_REPO, endpoint=fake_hub.url, HF_HUB_DOWNLOAD_TIMEOUT="1")
    assert proc.returncode == 0, proc.stderr
    assert fake_hub.range_requests(SHARD) == [f"bytes={CHUNK}-"]  # huggingface_hub resumed after the chunk kept
    assert "resume" not in proc.stderr.lower()  # its retry warnings stay off the user's terminal
    assert "ready: test-org/wide-llama" in proc.stdout


def test_a_model_mlx_lm_cached_runs_with_no_download_and_rm_asks_first(fake_hub, tmp_path):
    from huggingface_hub import snapshot_download

    snapshot_download(TINY_REPO, cache_dir=hf_cache_of(tmp_path), endpoint=fake_hub.url)  # as mlx_lm.load does
    asked = len(fake_hub.requests)
    local = json.loads(squish(tmp_path, "models", "--json", HF_HUB_OFFLINE="1").stdout)["local"]
    assert [(m["name"], m["source"], m["verified"]) for m in local[1:]] == [(TINY_REPO, "hf-cache", False)]
    answer = squish(tmp_path, "-p", "Hello", "--model", TINY_REPO, "--max-tokens", "2", HF_HUB_OFFLINE="1")
    assert answer.returncode == 0, answer.stderr
    assert len(fake_hub.requests) == asked  # found in the cache: nothing downloaded
    assert json.loads(squish(tmp_path, "models", "--json").stdout)["local"][1]["verified"]

    refused = squish(tmp_path, "rm", TINY_REPO)  # no terminal to ask on: another tool's files stay
    assert refused.returncode == 1 and "squish rm --yes deletes them" in refused.stdout
    dry = squish(tmp_path, "rm", "--dry-run", "--yes", TINY_REPO)
    assert dry.returncode == 0 and "would remove" in dry.stdout and "the whole cache entry" in dry.stdout
    assert (hf_cache_of(tmp_path) / "models--test-org--tiny-llama").is_dir()
    removed = squish(tmp_path, "rm", "--yes", TINY_REPO)
    assert removed.returncode == 0, removed.stderr
    assert not (hf_cache_of(tmp_path) / "models--test-org--tiny-llama").exists()


def test_rm_keeps_what_another_revision_still_links_to(fake_hub, tiny_repo_files, tmp_path):
    from huggingface_hub import snapshot_download

    assert squish(tmp_path, "pull", TINY_REPO, endpoint=fake_hub.url).returncode == 0
    repo = fake_hub.repos[TINY_REPO]
    repo.sha = "4" * 40  # a new commit that changed only the tokenizer config; another tool fetches it
    repo.files["tokenizer_config.json"] = repo.files["tokenizer_config.json"].replace(b"512", b"256")
    other = snapshot_download(TINY_REPO, cache_dir=hf_cache_of(tmp_path), endpoint=fake_hub.url)
    removed = squish(tmp_path, "rm", TINY_REPO)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "they stay" in removed.stdout and "(a snapshot)" in removed.stdout
    assert "1 blobs" in removed.stdout  # the old tokenizer config: the shards stay, the new revision links to them
    repo_dir = hf_cache_of(tmp_path) / "models--test-org--tiny-llama"
    assert [p.name for p in (repo_dir / "snapshots").iterdir()] == ["4" * 40]
    assert (repo_dir / "snapshots" / ("4" * 40) / SHARD).read_bytes() == tiny_repo_files[SHARD]
    assert json.loads(squish(tmp_path, "models", "--json").stdout)["local"][1]["path"] == other


def test_a_corrupt_download_is_exit_2_and_never_ready(fake_hub, tiny_repo_files, tmp_path):
    good = tiny_repo_files[SHARD]
    fake_hub.repos[TINY_REPO].served_content[SHARD] = good[:-64] + bytes(64)
    proc = squish(tmp_path, "pull", TINY_REPO, endpoint=fake_hub.url)
    assert proc.returncode == 2
    assert "does not match the hub's sha256" in proc.stderr.splitlines()[-1]
    listed = json.loads(squish(tmp_path, "models", "--json").stdout)
    assert [m["name"] for m in listed["local"]] == ["smollm2:135m"]


def test_model_commands_keep_startup_light(tmp_path):
    code = (
        "import sys\n"
        "from squish.cli import main\n"
        "for argv in (['models', '--help'], ['pull', '--help'], ['rm', '--help'], ['--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('mlx', 'textual', 'huggingface_hub') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=squish_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["models", "pull", "rm"])
def test_help_has_examples(command, tmp_path):
    proc = squish(tmp_path, command, "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout


SECOND = "model-00002-of-00002.safetensors"  # fetched after SHARD: files go config first, then by name


def test_a_hub_answering_503_is_exit_2_with_one_line_and_the_next_pull_keeps_what_arrived(fake_hub, tmp_path):
    fake_hub.fail_with[SECOND] = [503] * 3  # every attempt: squish retries a 5xx twice, then gives up
    proc = squish(tmp_path, "pull", "-q", TINY_REPO, endpoint=fake_hub.url)
    assert proc.returncode == 2 and f"failed at {SECOND}: HTTP 503" in one_error_line(proc)
    assert proc.stdout == "" and fake_hub.fail_with[SECOND] == []  # the hub is back
    asked = len(fake_hub.requests)
    proc = squish(tmp_path, "pull", "-q", TINY_REPO, endpoint=fake_hub.url)
    assert proc.returncode == 0, proc.stderr
    fetched = fake_hub.files_requested(since=asked)
    assert SECOND in fetched and SHARD not in fetched  # the shard that had arrived was kept
