"""The same chats from the command line, through subprocesses on real models: `squish -p` saves a
chat and its KV cache, `-c`/`--chat` continue it prefilling only the new message, `--no-save`,
`squish chats [--json]`, `squish chats export`, and the failure cases: no space for the cache,
a corrupt cache, the chat's model removed, a 512-token context overflowing, thinking models."""

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import ANSWER, SQUISH, THOUGHT, squish_env


def squish(home, *args, limit_bytes: int | None = None):
    def limit():  # a file size limit stands in for a full disk: writes past it fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [*SQUISH, *args],
        capture_output=True,
        env=squish_env(home),
        timeout=110,
        preexec_fn=limit if limit_bytes else None,
    )


def run_json(home, *args, **kwargs) -> dict:
    proc = squish(home, "--json", "--temp", "0", *args, **kwargs)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


@pytest.fixture
def chat_home(tmp_path, home) -> Path:
    """An empty squish home (no chats, no config) that shares the suite's imported models."""
    fresh = tmp_path / "home"
    fresh.mkdir()
    (fresh / "models").symlink_to(home / "models")
    return fresh


def kv_file(home: Path, chat_id: int) -> Path:
    return home / "kv" / f"chat-{chat_id}.safetensors"


def test_a_one_shot_answer_is_a_chat_that_continue_resumes_from_its_saved_cache(chat_home, tmp_path):
    first = run_json(chat_home, "-p", "What is the capital of France?", "--max-tokens", "12")
    chat_id = first["chat"]
    assert first["stats"]["cached_tokens"] == 0 and kv_file(chat_home, chat_id).exists()
    second = run_json(chat_home, "-c", "-p", "And of Italy?", "--max-tokens", "12")
    assert second["chat"] == chat_id and "Rome" in second["text"]
    # A new process: the whole first turn came from the saved KV cache.
    assert second["stats"]["cached_tokens"] == first["stats"]["prompt_tokens"] + first["stats"]["generation_tokens"] + 1

    listed = json.loads(squish(chat_home, "chats", "--json").stdout)["chats"]
    assert [(c["id"], c["messages"], c["title"]) for c in listed] == [(chat_id, 4, "What is the capital of France?")]
    assert listed[0]["kv_cache_bytes"] == sum(
        p.stat().st_size for p in (kv_file(chat_home, chat_id), kv_file(chat_home, chat_id).with_suffix(".json"))
    )
    table = squish(chat_home, "chats").stdout.decode()
    assert "KV CACHE" in table and "What is the capital of France?" in table

    markdown = squish(chat_home, "chats", "export", str(chat_id)).stdout.decode()
    assert markdown.index("What is the capital of France?") < markdown.index("And of Italy?") < markdown.index("Rome")
    out = tmp_path / "chat.json"
    assert squish(chat_home, "chats", "export", str(chat_id), "--json", "-o", str(out)).returncode == 0
    exported = json.loads(out.read_text())
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant", "user", "assistant"]
    again = squish(chat_home, "chats", "export", str(chat_id), "-o", str(out))
    assert again.returncode == 1 and b"exists; not overwritten" in again.stderr

    # --chat ID with --no-save answers from the chat and its cache, and writes nothing.
    stamp = kv_file(chat_home, chat_id).stat().st_mtime_ns
    third = run_json(chat_home, "--chat", str(chat_id), "--no-save", "-p", "And of Spain?", "--max-tokens", "12")
    assert third["chat"] is None
    assert third["stats"]["cached_tokens"] == second["stats"]["prompt_tokens"] + second["stats"]["generation_tokens"] + 1
    assert json.loads(squish(chat_home, "chats", "--json").stdout)["chats"][0]["messages"] == 4
    assert kv_file(chat_home, chat_id).stat().st_mtime_ns == stamp


def test_no_space_for_the_cache_is_a_warning_and_the_chat_still_continues(chat_home, tiny_model):
    prompt = "Tell me about the rivers, hills and towns of the north. " * 25  # a KV cache of about 200 kB
    proc = squish(chat_home, "-p", prompt, "--model", str(tiny_model), "--max-tokens", "4", limit_bytes=150_000)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr.decode()
    err = proc.stderr.decode()
    assert "squish: warning: cannot save the KV cache" in err and "the chat is saved" in err
    assert not list((chat_home / "kv").iterdir())  # no partial or temporary file left
    resumed = run_json(chat_home, "-c", "-p", "Again.", "--max-tokens", "4")
    assert resumed["stats"]["cached_tokens"] == 0 and resumed["notices"] == []


def test_a_corrupt_cache_is_a_note_and_the_history_is_prefilled(chat_home, tiny_model):
    first = run_json(chat_home, "-p", "hello", "--model", str(tiny_model), "--max-tokens", "4")
    path = kv_file(chat_home, first["chat"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    proc = squish(chat_home, "-c", "-p", "more", "--temp", "0", "--max-tokens", "4")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "note: the saved KV cache is corrupt (checksum mismatch): the history is prefilled instead" in proc.stderr.decode()


def test_a_chat_whose_model_was_removed_continues_on_the_default_model(chat_home, tiny_model, tmp_path):
    model = tmp_path / "gone-model"
    shutil.copytree(tiny_model, model)
    first = run_json(chat_home, "-p", "hello", "--model", str(model), "--max-tokens", "4")
    shutil.rmtree(model)
    proc = squish(chat_home, "--json", "-c", "-p", "Say hi.", "--temp", "0", "--max-tokens", "4")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "warning: this chat's model is not available" in proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["chat"] == first["chat"] and out["model"] == "smollm2:135m"
    assert out["stats"]["cached_tokens"] == 0
    assert out["notices"][0] == "the saved KV cache was made by another model: the history is prefilled instead"


def test_a_512_token_context_overflowing_leaves_out_the_oldest_turns_and_says_so(chat_home, tiny_model):
    long = "Tell me about the rivers, hills and towns of the north. " * 25
    first = run_json(chat_home, "-p", long, "--model", str(tiny_model), "--max-tokens", "8")
    assert first["stats"]["prompt_tokens"] > 300
    proc = squish(chat_home, "-c", "-p", long, "--ctx", "512", "--temp", "0", "--max-tokens", "8")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "note: 2 earlier messages are left out to fit the context of 512 tokens" in proc.stderr.decode()
    assert "context " in proc.stderr.decode() and "/512" in proc.stderr.decode()
    listed = json.loads(squish(chat_home, "chats", "--json").stdout)["chats"]
    assert listed[0]["messages"] == 4  # nothing of the saved history is deleted


def test_thinking_goes_to_stderr_the_answer_alone_to_stdout(chat_home, thinking_model):
    proc = squish(chat_home, "-p", "Say hello", "--model", str(thinking_model), "--think", "on", "--temp", "0")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == ANSWER + "\n"
    assert THOUGHT in proc.stderr.decode()
    quiet = squish(chat_home, "--quiet", "--no-save", "-p", "Say hello", "--model", str(thinking_model), "--think", "on")
    assert quiet.stdout.decode() == ANSWER + "\n" and quiet.stderr == b""
    out = run_json(chat_home, "-c", "-p", "Say hello", "--think", "on")
    assert out["thinking"] == THOUGHT and out["text"] == ANSWER and out["stats"]["thinking_tokens"] == 8
    # Saved apart: the answer is the message, its thinking beside it, out of later turns' context.
    exported = json.loads(squish(chat_home, "chats", "export", str(out["chat"]), "--json").stdout)
    answers = [m for m in exported["messages"] if m["role"] == "assistant"]
    assert [(m["content"], m["thinking"]) for m in answers] == [(ANSWER, THOUGHT)] * 2


def test_think_on_a_template_without_the_switch_is_a_note(chat_home, tiny_model):
    proc = squish(chat_home, "--no-save", "-p", "hi", "--model", str(tiny_model), "--think", "off", "--max-tokens", "2")
    assert proc.returncode == 0 and "has no thinking switch; --think is ignored" in proc.stderr.decode()


@pytest.mark.parametrize(
    "args, message",
    [
        (["-c", "-p", "hi"], "no saved chat to continue"),
        (["--chat", "7", "-p", "hi"], "no chat 7"),
        (["-c", "--chat", "7", "-p", "hi"], "--continue and --chat both pick a chat"),
        (["--no-save"], "--no-save applies to -p"),
        (["--chat", "7"], "no chat 7"),  # the app, on a chat that is not there
        (["-c", "--chat", "7"], "--continue and --chat both pick a chat"),
        (["--no-save", "-p", "hi", "--ctx", "8"], "at least 64"),
        (["chats", "export", "7"], "no chat 7"),
        (["chats", "export"], "the following arguments are required: id"),
    ],
)
def test_chat_usage_errors_exit_1_with_one_line_and_load_no_model(chat_home, args, message):
    proc = squish(chat_home, *args)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.startswith("squish: error: ") and err.count("\n") == 1, err
    assert message in err and proc.stdout == b""


def test_no_chats_yet_is_said_plainly(chat_home):
    proc = squish(chat_home, "chats")
    assert proc.returncode == 0 and proc.stdout.decode().startswith("no saved chats yet")
    assert json.loads(squish(chat_home, "chats", "--json").stdout) == {"chats": []}
    assert not os.path.exists(chat_home / "kv")
