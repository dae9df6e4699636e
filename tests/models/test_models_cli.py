"""`squish models`, `squish pull`, `squish rm` and `--model` through subprocesses, against the fake hub."""

import json
import signal
import subprocess
import sys
import time

import pytest
from fake_hub import (  # noqa: F401
    HUGE_REPO,
    TINY_REPO,
    closed_port_url,
    fake_hub,
    listing,
    squish,
    tiny_repo_files,
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
    assert not (tmp_path / "models" / "test-org--tiny-llama").exists()
    assert squish(tmp_path, "rm", TINY_REPO).returncode == 1
    assert squish(tmp_path, "rm", "smollm2:135m").returncode == 1


def test_ctrl_c_stops_cleanly_and_the_next_pull_resumes(fake_hub, tmp_path):
    fake_hub.throttle_s = 0.1  # about 160 kB/s
    puller = subprocess.Popen(
        [*SQUISH, "pull", TINY_REPO],
        env=squish_env(tmp_path, fake_hub.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: fake_hub.served.get(SHARD, 0) > 0 or puller.poll() is not None)
    puller.send_signal(signal.SIGINT)
    _, stderr = puller.communicate(timeout=60)
    assert puller.returncode == 130, stderr
    assert "pull stopped" in stderr and f"run `squish pull {TINY_REPO}` to resume" in stderr
    assert "Traceback" not in stderr
    part = tmp_path / "models" / ".test-org--tiny-llama.partial" / f"{SHARD}.part"
    kept = part.stat().st_size
    assert kept > 0

    listed = json.loads(squish(tmp_path, "models", "--json").stdout)
    assert [m["name"] for m in listed["local"]] == ["smollm2:135m"]
    assert [p["name"] for p in listed["partial"]] == [TINY_REPO]
    refused = squish(tmp_path, "-p", "hi", "--model", TINY_REPO)
    assert refused.returncode == 1 and "not downloaded" in refused.stderr

    fake_hub.throttle_s = 0.0
    proc = squish(tmp_path, "pull", TINY_REPO, endpoint=fake_hub.url)
    assert proc.returncode == 0, proc.stderr
    assert "already here from an interrupted pull" in proc.stdout
    assert fake_hub.range_requests(SHARD) == [f"bytes={kept}-"]
    assert listing(tmp_path / "models") == sorted(
        ["test-org--tiny-llama"]
        + [
            f"test-org--tiny-llama/{n}"
            for n in json.loads((tmp_path / "models" / "test-org--tiny-llama" / "squish.json").read_text())["files"]
        ]
        + ["test-org--tiny-llama/squish.json"]
    )


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
    fake_hub.failing[SECOND] = 503
    proc = squish(tmp_path, "pull", "-q", TINY_REPO, endpoint=fake_hub.url)
    assert proc.returncode == 2 and "503" in one_error_line(proc)
    assert proc.stdout == ""
    del fake_hub.failing[SECOND]  # the hub is back
    asked = len(fake_hub.requests)
    proc = squish(tmp_path, "pull", "-q", TINY_REPO, endpoint=fake_hub.url)
    assert proc.returncode == 0, proc.stderr
    fetched = fake_hub.files_requested(since=asked)
    assert SECOND in fetched and SHARD not in fetched  # the shard that had arrived was kept


def test_a_read_time_out_mid_file_is_exit_2_and_the_next_pull_resumes_from_the_bytes_kept(fake_hub, tmp_path):
    fake_hub.stalled_at[SHARD] = 20000  # the hub goes quiet after 20000 bytes of the shard
    proc = squish(tmp_path, "pull", "-q", TINY_REPO, endpoint=fake_hub.url, HF_HUB_DOWNLOAD_TIMEOUT="1")
    assert proc.returncode == 2, proc.stderr
    assert f"squish pull {TINY_REPO}" in one_error_line(proc) and "Traceback" not in proc.stderr
    del fake_hub.stalled_at[SHARD]
    proc = squish(tmp_path, "pull", "-q", TINY_REPO, endpoint=fake_hub.url)
    assert proc.returncode == 0, proc.stderr
    assert fake_hub.range_requests(SHARD)[-1] == "bytes=20000-"  # resumed, not started over
