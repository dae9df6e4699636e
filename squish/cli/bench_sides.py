"""The engines `squish bench` measures: squish in this process, mlx_lm and llama.cpp in their own.

Each baseline is a process running squish/engine/baseline.py (its JSON-lines protocol is in that
file's docstring), so every side holds only its own model in memory and its peak-memory reading
is its own, and the bench can alternate the sides run by run. llama.cpp runs in an environment
of its own, outside squish's lock (the project overrides llama-cpp-python away): `uv run
--no-project --with llama-cpp-python==0.3.36`, or the interpreter in $SQUISH_LLAMA_CPP_PYTHON.
"""

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import EngineFailure, UserError

BASELINE = Path(__file__).resolve().parent.parent / "engine" / "baseline.py"
LLAMA_CPP_PACKAGE = "llama-cpp-python==0.3.36"
# llama-cpp-python ships only an sdist, built from source on first use (~12 minutes on 2 cores).
# GGML_NATIVE=ON dies with "Illegal instruction" on VMs that advertise AMX they cannot run, so
# the default build names its instruction sets: AVX-512 with VNNI/VBMI/BF16, AMX off. On a CPU
# without AVX-512 set CMAKE_ARGS yourself (e.g. -DGGML_NATIVE=ON); benchmarks/README.md has more.
LLAMA_CPP_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON "
    "-DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF "
    "-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF"
)
LOAD_TIMEOUT_S = 1800.0  # a first llama.cpp start may build llama-cpp-python
REQUEST_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Sample:
    """One greedy generation as one side measured it."""

    ttft_ms: float
    prefill_tps: float
    decode_tps: float
    prompt_tokens: int
    generated_tokens: int
    text: str
    peak_memory_gb: float
    draft_tokens: int = 0  # squish's prompt-lookup drafts checked, and accepted (0 for the baselines)
    accepted_tokens: int = 0


class Worker:
    """A baseline process: one JSON request line in, one JSON answer line out."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict | None = None,
        cwd: str | None = None,
        load_timeout_s: float = LOAD_TIMEOUT_S,
    ):
        self.name = name
        self._stderr = tempfile.TemporaryFile(mode="w+")
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                env=env,
                cwd=cwd,
            )
        except OSError as exc:
            raise EngineFailure(f"cannot start {name}: {exc}") from None
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, name=f"bench-{name}", daemon=True).start()
        ready = self._answer(load_timeout_s)
        self.version = ready.get("version", "")

    def _pump(self) -> None:
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _last_error_line(self) -> str:
        self._stderr.seek(0)
        lines = [line.strip() for line in self._stderr.read().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {self._proc.poll()}"

    def _answer(self, timeout_s: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            self.close()
            raise EngineFailure(f"{self.name} did not answer within {timeout_s:g} s") from None
        if line is None:
            raise EngineFailure(f"{self.name} stopped: {self._last_error_line()}")
        answer = json.loads(line)
        if "error" in answer:
            raise EngineFailure(f"{self.name}: {answer['error']}")
        return answer

    def request(self, payload: dict, timeout_s: float = REQUEST_TIMEOUT_S) -> dict:
        try:
            self._proc.stdin.write(json.dumps(payload) + "\n")
            self._proc.stdin.flush()
        except OSError:
            raise EngineFailure(f"{self.name} stopped: {self._last_error_line()}") from None
        return self._answer(timeout_s)

    def render(self, messages: list[dict]) -> list[int]:
        return self.request({"op": "render", "messages": messages})["tokens"]

    def generate(self, tokens: list[int], max_tokens: int) -> Sample:
        answer = self.request({"op": "generate", "tokens": tokens, "max_tokens": max_tokens})
        return Sample(
            ttft_ms=answer["ttft_ms"],
            prefill_tps=answer["prefill_tps"],
            decode_tps=answer["decode_tps"],
            prompt_tokens=len(tokens),
            generated_tokens=len(answer["tokens"]),
            text=answer["text"],
            peak_memory_gb=answer["peak_memory_gb"],
        )

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()


def mlx_lm_worker(model_dir: str) -> Worker:
    return Worker("mlx_lm", [sys.executable, str(BASELINE), "mlx_lm", model_dir])


def llama_cpp_command(environ: dict) -> tuple[list[str], dict]:
    """How to start a Python that has llama_cpp, and its environment: $SQUISH_LLAMA_CPP_PYTHON,
    else an environment of uv's own, outside squish's project and lock."""
    env = {k: v for k, v in environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    venv = environ.get("VIRTUAL_ENV")
    if venv and "PATH" in env:
        # uv would take the project's interpreter from PATH and build llama-cpp-python anew for it.
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(venv))
    python = environ.get("SQUISH_LLAMA_CPP_PYTHON")
    if python:
        return [python], env
    uv = shutil.which("uv", path=env.get("PATH"))
    if uv is None:
        raise UserError(
            "the llama.cpp anchor needs uv on PATH (or SQUISH_LLAMA_CPP_PYTHON set to a Python with llama_cpp)"
        )
    env.setdefault("CMAKE_ARGS", LLAMA_CPP_CMAKE_ARGS)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return [uv, "run", "--no-project", "--python", version, "--with", LLAMA_CPP_PACKAGE, "python"], env


def llama_cpp_worker(gguf: Path, threads: int) -> Worker:
    command, env = llama_cpp_command(dict(os.environ))
    # From squish's checkout uv would pick the checkout's .venv as the interpreter (as it would
    # from PATH, see llama_cpp_command) and build llama-cpp-python anew for it; from a neutral
    # directory it takes a base interpreter, for which its cache holds the build.
    argv = [*command, str(BASELINE), "llama.cpp", str(Path(gguf).resolve()), str(threads)]
    return Worker("llama.cpp", argv, env=env, cwd=tempfile.gettempdir())


class SquishSide:
    """squish's engine in this process, on the same model directory the baselines load."""

    def __init__(self, model: str | None):
        from ..engine.engine import Engine
        from ..models import store

        self.engine = Engine()
        loaded = store.load(self.engine, model).collect()
        if loaded.error:
            self.engine.shutdown()
            raise EngineFailure(loaded.error.message)
        self.info = loaded.loaded

    def request(self, messages: list[dict], max_tokens: int, session: str | None = None, draft: bool = True):
        from ..engine.engine import ChatRequest

        result = self.engine.generate(
            ChatRequest(messages, session=session, max_tokens=max_tokens, temperature=0.0, seed=0, draft=draft)
        ).collect()
        if result.error:
            raise EngineFailure(result.error.message)
        return result

    def generate(self, messages: list[dict], max_tokens: int, draft: bool = True) -> Sample:
        """One greedy answer; `draft=False` decodes without prompt-lookup drafts (the plain rows)."""
        result = self.request(messages, max_tokens, draft=draft)
        stats = result.stats
        return Sample(
            ttft_ms=stats.ttft_ms,
            prefill_tps=stats.prefill_tps,
            decode_tps=stats.decode_tps,
            prompt_tokens=stats.prompt_tokens,
            generated_tokens=stats.generation_tokens,
            text=result.text,
            peak_memory_gb=stats.peak_memory_gb,
            draft_tokens=stats.draft_tokens,
            accepted_tokens=stats.accepted_tokens,
        )

    def close(self) -> None:
        self.engine.unload().collect()
        self.engine.shutdown()
