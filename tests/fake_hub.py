"""Fixtures for the model tests: a tiny random-weight model repo and a fake Hugging Face hub.

The fake hub is a real HTTP server on 127.0.0.1 that answers the way huggingface.co does for
the calls squish and huggingface_hub make:
- GET  /api/models/{repo}[/revision/{rev}]?blobs=true: id, sha, siblings with size, blobId, lfs;
- GET  /api/models/{repo}/tree/{rev}: the file list snapshot_download (and so mlx_lm) reads;
- HEAD and GET /{repo}/resolve/{rev}/{file}: X-Repo-Commit, ETag, Content-Length,
  Accept-Ranges; LFS files answer 302 with X-Linked-Size / X-Linked-Etag to /cdn/{sha256}, like
  the hub's redirect to its CDN; Range requests get 206 (or 416 past the end);
- unknown repos and files: 404 with X-Error-Code RepoNotFound / EntryNotFound.
Faults for the tests: throttling, a connection dropped after N bytes, a pause in the middle of a
body, 5xx answers, bytes that differ from the advertised hash, and sizes claimed larger than the files.
WIDE_REPO is the tiny model with a wide MLP (12.7 MB shards): huggingface_hub reads bodies in
10 MiB chunks, so only a file past 10 MiB can stop, and resume, in its middle.
Import the fixtures into a test module with `from fake_hub import ...`.
"""

import hashlib
import json
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from helpers import SQUISH, hf_cache_of, squish_env  # noqa: F401 (hf_cache_of: for the tests)

TINY_REPO = "test-org/tiny-llama"
HUGE_REPO = "test-org/huge-llama"
WIDE_REPO = "test-org/wide-llama"
CHUNK = 10 * 1024 * 1024  # huggingface_hub's download chunk: bytes reach the file 10 MiB at a time
COMMIT = "3b1c0f7e9a2d4c6b8e0f1a3c5e7b9d1f2a4c6e8b"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The capital of France is Paris.",
    "Hello! How can I help you today?",
    "Models answer questions, write code and explain ideas in plain words.",
    "squish runs small language models on your own machine.",
]


def build_tokenizer() -> tuple[str, dict, int]:
    """(tokenizer.json text, tokenizer_config.json, vocab size): a byte-level BPE with ChatML tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 8, trainer)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 512,
        "chat_template": CHAT_TEMPLATE,
    }
    return tokenizer.to_str(), config, tokenizer.get_vocab_size()


def build_tiny_repo(seed: int = 0, inter: int = 256) -> dict[str, bytes]:
    """The files of a 2-layer llama with random float16 weights in two shards, as a hub repo holds them
    (`inter`, the MLP width: 16384 makes each shard 12.7 MB, a file to stop in the middle of)."""
    from safetensors.numpy import save

    tokenizer_json, tokenizer_config, vocab = build_tokenizer()
    hidden, layers, heads, kv_heads = 128, 2, 4, 2
    head_dim = hidden // heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "max_position_embeddings": 512,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "torch_dtype": "float16",
    }
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float16)

    shards: list[dict] = [{"model.embed_tokens.weight": rand(vocab, hidden)}, {}]
    for i in range(layers):
        prefix, shard = f"model.layers.{i}.", shards[i]
        shard[prefix + "self_attn.q_proj.weight"] = rand(heads * head_dim, hidden)
        shard[prefix + "self_attn.k_proj.weight"] = rand(kv_heads * head_dim, hidden)
        shard[prefix + "self_attn.v_proj.weight"] = rand(kv_heads * head_dim, hidden)
        shard[prefix + "self_attn.o_proj.weight"] = rand(hidden, heads * head_dim)
        shard[prefix + "mlp.gate_proj.weight"] = rand(inter, hidden)
        shard[prefix + "mlp.up_proj.weight"] = rand(inter, hidden)
        shard[prefix + "mlp.down_proj.weight"] = rand(hidden, inter)
        shard[prefix + "input_layernorm.weight"] = np.ones(hidden, np.float16)
        shard[prefix + "post_attention_layernorm.weight"] = np.ones(hidden, np.float16)
    shards[1]["model.norm.weight"] = np.ones(hidden, np.float16)
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = {
        "metadata": {"total_size": sum(a.nbytes for s in shards for a in s.values())},
        "weight_map": {key: name for name, shard in zip(names, shards) for key in shard},
    }
    files = {name: save(shard, metadata={"format": "mlx"}) for name, shard in zip(names, shards)}
    files.update(
        {
            "config.json": json.dumps(config, indent=2).encode(),
            "model.safetensors.index.json": json.dumps(index, indent=2).encode(),
            "tokenizer.json": tokenizer_json.encode(),
            "tokenizer_config.json": json.dumps(tokenizer_config, indent=2).encode(),
            "README.md": b"# tiny-llama\nRandom weights for squish's tests.\n",
            ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        }
    )
    return files


@dataclass
class Repo:
    files: dict[str, bytes]
    sha: str = COMMIT
    claimed_sizes: dict[str, int] = field(default_factory=dict)  # model info lies about these sizes
    served_content: dict[str, bytes] = field(default_factory=dict)  # bytes served instead of `files`

    def is_lfs(self, name: str) -> bool:
        return name.endswith(".safetensors")

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()

    def git_oid(self, name: str) -> str:
        data = self.files[name]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """A hub on 127.0.0.1 with a request log and fault injection; `url` is its HF_ENDPOINT."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        # Body bytes sent per file name, counted after each write: a client can have its bytes
        # before the count moves, so wait for it or use files_requested.
        self.served: dict[str, int] = {}
        self.throttle_s = 0.0  # pause between 16 kB chunks
        self.drop_after: dict[str, int] = {}  # file name -> close the connection after this many bytes, once
        self.broken_at: dict[str, int] = {}  # file name -> every response stops at this offset of the file
        # file name -> (offset, seconds or an Event to wait for, 30 s at most): the body stalls there, once
        self.pause_at: dict[str, tuple[int, float | threading.Event]] = {}
        self.fail_with: dict[str, list[int]] = {}  # file name -> statuses answered, one per GET of it, before its bytes
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files_requested(self, since: int = 0) -> set[str]:
        """Names of the files whose bytes were asked for in requests[since:] (logged before any
        answer is sent, so this is complete as soon as the client has its answer, unlike `served`)."""
        with self.lock:
            paths = [p for m, p, _ in self.requests[since:] if m == "GET" and ("/resolve/" in p or p.startswith("/cdn/"))]
        return {p.rpartition("/")[2] for p in paths}

    def range_requests(self, name: str) -> list[str]:
        """Range headers of the GETs that fetched an LFS file's bytes (from the CDN, after the redirect)."""
        return [r for m, p, r in self.requests if m == "GET" and r and p.startswith("/cdn/") and p.endswith(name)]

    def handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self.answer(head=True)

            def do_GET(self) -> None:
                self.answer(head=False)

            def reply(self, status: int, headers: dict, body: bytes = b"", head: bool = False) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, str(value))
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)

            def not_found(self, code: str, head: bool) -> None:
                body = json.dumps({"error": f"{code}: {self.path}"}).encode()
                self.reply(404, {"X-Error-Code": code, "Content-Type": "application/json"}, body, head)

            def answer(self, head: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                with hub.lock:
                    hub.requests.append((self.command, path, self.headers.get("Range")))
                if path.startswith("/api/models/"):
                    return self.model_info(path[len("/api/models/") :], head)
                with hub.lock:
                    statuses = hub.fail_with.get(path.rpartition("/")[2]) if self.command == "GET" else None
                    status = statuses.pop(0) if statuses else None
                if status is not None:
                    return self.reply(status, {"Content-Type": "application/json"}, b'{"error": "unavailable"}')
                if path.startswith("/cdn/"):
                    return self.cdn(path[len("/cdn/") :], head)
                if "/resolve/" in path:
                    return self.resolve(path, head)
                self.not_found("RepoNotFound", head)

            def model_info(self, rest: str, head: bool) -> None:
                if "/tree/" in rest:
                    return self.tree(rest.split("/tree/")[0], head)
                repo_id = rest.split("/revision/")[0]
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self.not_found("RepoNotFound", head)
                siblings = []
                for name, data in sorted(repo.files.items()):
                    size = repo.claimed_sizes.get(name, len(data))
                    entry = {"rfilename": name, "size": size, "blobId": repo.git_oid(name)}
                    if repo.is_lfs(name):
                        entry["lfs"] = {"sha256": repo.sha256(name), "size": size, "pointerSize": 134}
                    siblings.append(entry)
                body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": repo.sha, "siblings": siblings})
                self.reply(200, {"Content-Type": "application/json"}, body.encode(), head)

            def tree(self, repo_id: str, head: bool) -> None:
                """The file list snapshot_download reads (what mlx_lm.load pulls with)."""
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self.not_found("RepoNotFound", head)
                entries = []
                for name, data in sorted(repo.files.items()):
                    entry = {"type": "file", "path": name, "size": len(data), "oid": repo.git_oid(name)}
                    if repo.is_lfs(name):
                        entry["lfs"] = {"oid": repo.sha256(name), "size": len(data), "pointerSize": 134}
                    entries.append(entry)
                self.reply(200, {"Content-Type": "application/json"}, json.dumps(entries).encode(), head)

            def resolve(self, path: str, head: bool) -> None:
                repo_id, _, rest = path.lstrip("/").partition("/resolve/")
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self.not_found("RepoNotFound", head)
                _revision, _, name = rest.partition("/")
                if name not in repo.files:
                    return self.not_found("EntryNotFound", head)
                size = len(repo.files[name])
                if repo.is_lfs(name):
                    headers = {
                        "X-Repo-Commit": repo.sha,
                        "X-Linked-Etag": f'"{repo.sha256(name)}"',
                        "X-Linked-Size": size,
                        "ETag": f'"{repo.git_oid(name)}"',
                        # another host, as the hub's CDN is: huggingface_hub stops following there
                        "Location": f"http://localhost:{hub.server.server_port}/cdn/{repo_id}/{name}",
                        "Content-Length": 0,
                    }
                    return self.reply(302, headers, head=True)
                self.send_file(repo, name, head, {"X-Repo-Commit": repo.sha, "ETag": f'"{repo.git_oid(name)}"'})

            def cdn(self, rest: str, head: bool) -> None:
                repo_id, _, name = rest.rpartition("/")
                repo = hub.repos.get(repo_id)
                if repo is None or name not in repo.files:
                    return self.not_found("EntryNotFound", head)
                self.send_file(repo, name, head, {"ETag": f'"{repo.sha256(name)}"'})

            def send_file(self, repo: Repo, name: str, head: bool, headers: dict) -> None:
                data = repo.served_content.get(name, repo.files[name])
                start, status = 0, 200
                if (wanted := self.headers.get("Range")) is not None:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        return self.reply(416, {"Content-Range": f"bytes */{len(data)}"}, head=head)
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                headers.update({"Content-Length": len(body), "Accept-Ranges": "bytes"})
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, str(value))
                self.end_headers()
                if head:
                    return
                with hub.lock:
                    limit = hub.drop_after.pop(name, None)
                if name in hub.broken_at:
                    limit = max(0, hub.broken_at[name] - start)
                with hub.lock:
                    pause = hub.pause_at.pop(name, None)
                sent = 0
                if limit == 0:
                    self.close_connection = True
                    return
                for offset in range(0, len(body), 16384):
                    chunk = body[offset : offset + 16384]
                    if limit is not None and sent + len(chunk) > limit:
                        chunk = chunk[: limit - sent]
                    try:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    except OSError:
                        return
                    sent += len(chunk)
                    with hub.lock:
                        hub.served[name] = hub.served.get(name, 0) + len(chunk)
                    if limit is not None and sent >= limit:
                        self.close_connection = True
                        return
                    if pause is not None and start + sent >= pause[0]:
                        pause[1].wait(30) if isinstance(pause[1], threading.Event) else time.sleep(pause[1])
                        pause = None
                    if hub.throttle_s:
                        time.sleep(hub.throttle_s)

        return Handler


@pytest.fixture(scope="session")
def tiny_repo_files() -> dict[str, bytes]:
    return build_tiny_repo()


@pytest.fixture(scope="session")
def wide_repo_files() -> dict[str, bytes]:
    return build_tiny_repo(inter=16384)


@pytest.fixture
def fake_hub(tiny_repo_files, wide_repo_files):
    """A fresh hub serving the tiny model, the wide one, and a huge one whose weights cannot fit any disk."""
    with FakeHub() as hub:
        hub.repos[TINY_REPO] = Repo(dict(tiny_repo_files))
        hub.repos[WIDE_REPO] = Repo(dict(wide_repo_files))
        hub.repos[HUGE_REPO] = Repo(dict(tiny_repo_files), claimed_sizes={"model-00001-of-00002.safetensors": 10**16})
        yield hub


def closed_port_url() -> str:
    """An endpoint where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def squish(home: Path, *args: str, endpoint: str | None = None, timeout: float = 110, **extra: str):
    return subprocess.run(
        [*SQUISH, *args], capture_output=True, text=True, env=squish_env(home, endpoint, **extra), timeout=timeout
    )


def listing(root: Path) -> list[str]:
    """Every path under `root`, relative: what a command left on disk."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
