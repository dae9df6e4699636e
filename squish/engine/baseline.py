"""The other engines `squish bench` measures, each in a process of its own: mlx_lm and llama.cpp.

Run as a script, never imported at run time by squish (the llama.cpp side runs in its own
environment, outside squish's lock, so this file needs nothing but the standard library until a
backend is chosen):

    python baseline.py mlx_lm MODEL_DIR
    python baseline.py llama.cpp GGUF_FILE THREADS

It prints {"ready": ...} once the model is loaded, then answers one JSON line on stdout for each
request line on stdin:

    {"op": "render", "messages": [...]}  ->  {"tokens": [...]}   the chat template (mlx_lm only)
    {"op": "generate", "tokens": [...], "max_tokens": N}
        ->  {"ttft_ms", "prefill_tps", "decode_tps", "tokens": [...], "text", "peak_memory_gb"}

Greedy decoding from the given prompt token ids, stopping at EOS or after N tokens; a fresh KV
cache for every request. Times are taken as squish takes them: TTFT from the call to the first
token, prefill tok/s as prompt tokens over that time, decode tok/s as (tokens - 1) over the time
from the first token to the last. Errors answer {"error": "..."} and the process goes on.
"""

import json
import sys
import time

GB = 1e9  # squish.engine.memory.GB: this file runs outside squish and cannot import it


def timed(tokens, max_tokens, first, step) -> dict:
    """Run `first(tokens) -> token` then `step(token) -> token` until EOS (None) or max_tokens."""
    start = time.perf_counter()
    token = first(tokens)
    t_first = t_last = time.perf_counter()
    out = []
    while token is not None:
        out.append(token)
        if len(out) >= max_tokens:
            break
        token = step(token)
        t_last = time.perf_counter()
    prefill_s = t_first - start
    decode_s = t_last - t_first
    return {
        "ttft_ms": prefill_s * 1000,
        "prefill_tps": len(tokens) / prefill_s if prefill_s > 0 else 0.0,
        "decode_tps": (len(out) - 1) / decode_s if len(out) > 1 and decode_s > 0 else 0.0,
        "tokens": out,
    }


class MlxLm:
    """mlx_lm as its users call it: load() and stream_generate() with a greedy sampler."""

    def __init__(self, model_dir: str):
        import mlx.core as mx
        import mlx_lm

        self.mx = mx
        self.model, self.tokenizer = mlx_lm.load(model_dir)
        self.eos = set(self.tokenizer.eos_token_ids)
        self.version = mlx_lm.__version__

    def render(self, messages: list[dict]) -> list[int]:
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def generate(self, tokens: list[int], max_tokens: int) -> dict:
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        mx = self.mx
        mx.reset_peak_memory()
        stream = stream_generate(
            self.model, self.tokenizer, mx.array(tokens), max_tokens=max_tokens, sampler=make_sampler(temp=0.0)
        )

        def next_token(_):
            response = next(stream, None)
            if response is None or response.finish_reason == "stop" and response.token in self.eos:
                return None
            return response.token

        result = timed(tokens, max_tokens, next_token, next_token)
        for _ in stream:  # let stream_generate finish its own bookkeeping
            pass
        result["text"] = self.tokenizer.decode(result["tokens"])
        result["peak_memory_gb"] = mx.get_peak_memory() / GB
        return result


class LlamaCpp:
    """llama.cpp through llama-cpp-python: eval() the prompt, then one token at a time, greedy."""

    def __init__(self, gguf: str, threads: str):
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=gguf,
            n_ctx=4096,
            n_batch=512,
            n_threads=int(threads),
            n_threads_batch=int(threads),
            verbose=False,
        )
        self.version = llama_cpp.__version__
        self.eos = self.llm.token_eos()

    def render(self, messages):
        raise ValueError("the llama.cpp side takes token ids: render the prompt with mlx_lm's template")

    def generate(self, tokens: list[int], max_tokens: int) -> dict:
        import resource

        llm = self.llm

        def sample():
            token = llm.sample(temp=0.0, repeat_penalty=1.0)
            return None if token == self.eos else token

        def first(prompt):
            llm.reset()  # forget the previous request: the prompt is evaluated in full
            llm.eval(prompt)
            return sample()

        def step(token):
            llm.eval([token])
            return sample()

        result = timed(tokens, max_tokens, first, step)
        result["text"] = llm.detokenize(result["tokens"]).decode("utf-8", errors="replace")
        result["peak_memory_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
        return result


BACKENDS = {"mlx_lm": MlxLm, "llama.cpp": LlamaCpp}


def serve(backend, lines, write) -> None:
    """Answer each request line with one JSON line (the protocol in the module docstring)."""
    for line in lines:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if request.get("op") == "render":
                answer = {"tokens": backend.render(request["messages"])}
            elif request.get("op") == "generate":
                answer = backend.generate([int(t) for t in request["tokens"]], int(request["max_tokens"]))
            else:
                answer = {"error": f"unknown op {request.get('op')!r}"}
        except Exception as exc:  # one bad request must not end the worker
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        write(json.dumps(answer))


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in BACKENDS:
        print(f"usage: baseline.py {{{'|'.join(BACKENDS)}}} MODEL [THREADS]", file=sys.stderr)
        return 2
    # The protocol owns stdout: anything a library prints goes to stderr instead.
    out = sys.stdout
    sys.stdout = sys.stderr
    started = time.perf_counter()

    def write(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    try:
        backend = BACKENDS[argv[0]](*argv[1:])
    except Exception as exc:
        write(json.dumps({"error": f"cannot load {argv[1]}: {type(exc).__name__}: {exc}"}))
        return 2
    write(json.dumps({"ready": True, "version": backend.version, "load_s": time.perf_counter() - started}))
    serve(backend, sys.stdin, write)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
