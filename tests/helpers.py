"""Helpers shared by test modules (import them with `from helpers import ...`)."""

import json
import os
import sys
import threading
import time
from pathlib import Path

from squish.models import store


def import_embedded(home: Path | None = None) -> Path:
    """The embedded model's directory in `home`, imported first if needed (MLX on this thread)."""
    from squish.engine.gguf import import_model

    ref = store.resolve(None, home)
    if ref.gguf is not None:
        import_model(ref)
    return ref.path


TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "rope_theta": 10000.0,
}
# A hybrid model (mlx-lm's lfm2): its first layer is a short convolution whose cache is an
# ArraysCache (no `offset`), the second is attention with a KVCache.
TINY_HYBRID = {
    "model_type": "lfm2",
    "vocab_size": 49152,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
    "norm_eps": 1e-5,
    "conv_bias": False,
    "conv_L_cache": 3,
    "block_dim": 64,
    "block_ff_dim": 128,
    "block_multiple_of": 32,
    "block_ffn_dim_multiplier": 1.0,
    "block_auto_adjust_ff_dim": False,
    "layer_types": ["conv", "full_attention"],
    "tie_embedding": True,
}


def build_tiny_model(
    path: Path, home: Path, seed: int = 0, scale: float = 1.0, dtype: str = "float32", config: dict = TINY_LLAMA
) -> Path:
    """A 2-layer model with random weights and the embedded model's tokenizer: fast and real."""
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    arch = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(seed)
    model = arch.Model(arch.ModelArgs.from_dict(config))
    weights = {k: (v * scale).astype(getattr(mx, dtype)) for k, v in tree_flatten(model.parameters())}
    path.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(path / "model.safetensors"), weights)
    (path / "config.json").write_text(json.dumps(config))
    embedded = import_embedded(home)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (path / name).write_bytes((embedded / name).read_bytes())
    return path


def hf_cache_of(home: Path) -> Path:
    """The Hugging Face cache of a test's squish home: subprocesses get it through HF_HOME and
    HF_HUB_CACHE, in-process calls as `hf_cache=`, so no test reads or writes the user's own."""
    return home / "hf" / "hub"


def squish_env(home: Path, endpoint: str | None = None, **extra: str) -> dict:
    """The environment for a squish subprocess: its own home and Hugging Face cache, UTF-8, and the
    hub at `endpoint`."""
    env = {**os.environ, "SQUISH_HOME": str(home), "PYTHONIOENCODING": "utf-8", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.update({"HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(hf_cache_of(home))})
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT"):
        env.pop(name, None)
    if endpoint is not None:
        env["HF_ENDPOINT"] = endpoint
    env.update(extra)
    return env


SQUISH = [str(Path(sys.executable).with_name("squish"))]  # the installed entry point, squish.cli:main

SCRIPTED_ANSWER = (
    "Here is a function that adds two numbers:\n\n"
    "```python\ndef add(a, b):\n    return a + b\n```\n\n"
    "It **returns** the sum of `a` and `b`."
)
HANG = object()  # a script entry: the reply streams until the request is cancelled


class ScriptedEngine:
    """The Engine's caller-side methods, answering from a script through real EventStreams.

    Only for structural tests (layout snapshots, agent-loop branches, app wiring): every
    behaviour test drives the real Engine. Each `generate` takes the next script entry: the
    reply text, (text, finish_reason), a function of the ChatRequest returning either, HANG, an
    Error, or a list of engine events streamed as they are (then Done); once the script is used
    up, `answer`. A reply streams as word tokens after two Progress events, with fixed Stats.
    Every request is recorded, and every save_session as (session, path).
    """

    def __init__(
        self, *replies, answer: str = SCRIPTED_ANSWER, model_path: str | Path = "/scripted", scores=None
    ) -> None:
        from squish.engine.events import ModelInfo

        self.replies = list(replies)
        self.scores = scores  # scores(ScoreRequest) -> one log-likelihood per continuation (the router's)
        self.score_requests = []
        self.answer = answer
        self.info = ModelInfo("scripted:1m", str(model_path), "llama", "Q4 g32", 8192, 2, 0.001, "CPU")
        self.requests = []
        self.dropped = []
        self.saved = []
        self.lock = threading.Lock()

    @staticmethod
    def _stream(*events):
        from squish.engine.events import EventStream

        stream = EventStream()
        for event in events:
            stream.put(event)
        return stream

    def load(self, ref):
        from squish.engine.events import Done, Loaded, Status

        return self._stream(Status("loading scripted:1m"), Loaded(self.info), Done("ok"))

    def score(self, request):
        from squish.engine.events import Done, Error
        from squish.engine.scoring import Scores

        self.score_requests.append(request)
        if self.scores is None:
            return self._stream(Error("this scripted engine has no scores", 2), Done("error"))
        values = tuple(self.scores(request))
        return self._stream(Scores(values, (1,) * len(values), 10, 0, 1.0, "scripted"), Done("ok"))

    def memory(self):
        from squish.engine.events import Done, Memory

        return self._stream(Memory(0.125, 0.25, 0.0, 0.5, 12.0), Done("ok"))

    def generate(self, request):
        from squish.engine.events import Done, Error, EventStream, Progress, Stats, Token

        with self.lock:
            self.requests.append(request)
            reply = self.replies.pop(0) if self.replies else self.answer
        seed = request.seed if request.seed is not None else 7
        if reply is HANG:
            stream = EventStream()
            threading.Thread(target=self._hang, args=(stream, seed), daemon=True).start()
            return stream
        if callable(reply):
            reply = reply(request)
        if isinstance(reply, Error):
            return self._stream(reply, Done("error"))
        if isinstance(reply, list):
            finish = next((e.finish_reason for e in reply if isinstance(e, Stats)), "stop")
            return self._stream(*reply, Done(finish))
        text, finish = reply if isinstance(reply, tuple) else (reply, "stop")
        words = text.split(" ")
        tokens = [Token(word if i == 0 else " " + word, i) for i, word in enumerate(words)]
        stats = Stats(120.0, 300.0, 42.0, 30, 0, len(tokens), 0.25, 0.125, 0.5, finish, seed)
        return self._stream(Progress(0, 30), Progress(30, 30), *tokens, stats, Done(finish))

    @staticmethod
    def _hang(stream, seed: int) -> None:
        """A generation that goes on until cancelled, like a long reply."""
        from squish.engine.events import Done, Stats, Token

        while not stream.cancelled:
            stream.put(Token("…", 0))
            time.sleep(0.01)
        stream.put(Stats(120.0, 300.0, 42.0, 30, 0, 1, 0.25, 0.125, 0.5, "cancelled", seed))
        stream.put(Done("cancelled"))

    def drop_session(self, key):
        from squish.engine.events import Done

        self.dropped.append(key)
        return self._stream(Done("ok"))

    def unload(self):
        from squish.engine.events import Done

        return self._stream(Done("ok"))

    def save_session(self, session, path, limit_bytes):
        from squish.engine.events import Done, Notice

        self.saved.append((session, path))
        return self._stream(Notice("no KV cache to save for this chat"), Done("none"))

    def shutdown(self, timeout: float = 10.0) -> bool:
        return True


def call(name: str, **arguments) -> str:
    """A reply in SmolLM2's format calling one tool."""
    return f"<tool_call>{json.dumps([{'name': name, 'arguments': arguments}])}</tool_call>"


NO_CALL = "<tool_call>[]</tool_call>"


THINKING_TEMPLATE = (
    "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think></think>' -}}"
    "{%- else -%}{{- '<think>\\n' -}}{%- endif -%}{%- endif -%}"
)
THOUGHT, ANSWER = "Greeting first.", "Hello there"


def build_thinking_model(path: Path, home: Path, template: str = THINKING_TEMPLATE, scripts=None) -> Path:
    """A real one-layer llama that, greedily, always writes the same text after the same prompt end.

    Its attention and MLP weights are zero, so each logit depends on the current token only: a
    bigram table, written into the embedding and the output matrix. `scripts` maps the template
    arguments of a prompt to the text the model writes after it (then <|im_end|>). By default, with
    the thinking template: thinking on writes THOUGHT + "</think>" + ANSWER (the template opened the
    block), thinking off writes ANSWER. The vocabulary has no <think> token, so mlx-lm renders the
    template with enable_thinking=False unless the request says otherwise. Real weights, tokenizer, template and decode loop: only
    the weights are chosen instead of trained.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.models import llama
    from mlx_lm.utils import load_tokenizer

    scripts = scripts or [({"enable_thinking": True}, THOUGHT + "</think>" + ANSWER), ({"enable_thinking": False}, ANSWER)]
    embedded = import_embedded(home)
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.json").write_bytes((embedded / "tokenizer.json").read_bytes())
    tokenizer_config = json.loads((embedded / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "chat_template": template}))
    tokenizer = load_tokenizer(path)
    eos = tokenizer.eos_token_id
    successor: dict[int, int] = {}
    for args, text in scripts:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, **args)
        chain = [prompt[-1], *tokenizer.encode(text, add_special_tokens=False), eos]
        for current, following in zip(chain, chain[1:]):
            if successor.setdefault(current, following) != following:
                raise ValueError(f"token {current} would need two successors: the scripts are not a bigram chain")
    dims = {token: i for i, token in enumerate(sorted(successor))}
    hidden = 16 * ((len(dims) + 16) // 16)
    config = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": 1,
        "intermediate_size": hidden,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-5,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": False,
        "rope_theta": 10000.0,
    }
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.update(tree_map(lambda p: mx.zeros_like(p), model.parameters()))
    embed = [[0.0] * hidden for _ in range(config["vocab_size"])]
    head = [[0.0] * hidden for _ in range(config["vocab_size"])]
    for token, following in successor.items():
        embed[token][dims[token]] = 1.0
        head[following][dims[token]] = 20.0
    weights = dict(tree_flatten(model.parameters()))
    for name in weights:
        if name.endswith("norm.weight"):
            weights[name] = mx.ones_like(weights[name])
    weights["model.embed_tokens.weight"] = mx.array(embed, dtype=mx.float32)
    weights["lm_head.weight"] = mx.array(head, dtype=mx.float32)
    mx.save_safetensors(str(path / "model.safetensors"), weights)
    (path / "config.json").write_text(json.dumps(config))
    return path


def read_pid(path: Path, within: float = 30.0) -> int:
    """The pid a test process wrote to `path`, once it has."""
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} was never written")


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process `pid` has ended (or is a zombie waiting to be reaped) within `within` seconds."""
    import time

    import psutil

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


async def submit_line(pilot, text: str) -> None:
    """`text` put in the chat prompt at its cursor, then Enter pressed. Each pressed key costs
    ~70 ms of Pilot's idle waits; the tests of typing itself press every key."""
    pilot.app.chat_screen.prompt.insert(text)
    await pilot.press("enter")
