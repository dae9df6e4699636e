"""`squish -p PROMPT`: one answer, streamed to stdout, stats on stderr (or one JSON object)."""

import json
import sys

from .parser import UsageError, fail


def read_prompt(arg: str) -> str:
    if arg != "-":
        return arg
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"standard input is not valid UTF-8 (byte {exc.start})") from None


def one_shot(args) -> int:
    from ..engine.engine import ChatRequest, Engine, validate
    from ..engine.events import Done, Error, Loaded, Stats, Status, Token
    from ..models import store

    prompt = read_prompt(args.prompt)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": prompt})
    request = ChatRequest(
        messages,
        max_tokens=args.max_tokens,
        temperature=args.temp,
        top_p=args.top_p,
        seed=args.seed,
        timeout_s=args.timeout,
    )
    validate(request)  # bad input fails here, before a model is loaded (UserError: exit 1)

    chatty = not (args.quiet or args.json)
    engine = Engine()
    loaded = store.load(engine, args.model)
    info = None
    for event in loaded:
        if isinstance(event, Status) and chatty and sys.stderr.isatty():
            print(f"\r\033[2K{event.text}…", end="", file=sys.stderr, flush=True)
        elif isinstance(event, Error):
            return fail(event.message, event.exit_code)
        elif isinstance(event, Loaded):
            info = event.info
    if chatty and sys.stderr.isatty():
        print("\r\033[2K", end="", file=sys.stderr, flush=True)

    stream = engine.generate(request)
    text, stats, error, finish = [], None, None, ""
    try:
        for event in stream:
            if isinstance(event, Token):
                text.append(event.text)
                if not args.json:
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
            elif isinstance(event, Stats):
                stats = event
            elif isinstance(event, Error):
                error = event
            elif isinstance(event, Done):
                finish = event.finish_reason
    except KeyboardInterrupt:
        stream.cancel()
        for event in stream:
            if isinstance(event, Token) and not args.json:
                sys.stdout.write(event.text)
        if not args.json:
            sys.stdout.write("\n")
        print("squish: stopped", file=sys.stderr)
        return 130
    if args.json:
        if error is None:
            print(
                json.dumps(
                    {
                        "text": "".join(text),
                        "model": info.name,
                        "finish_reason": stats.finish_reason,
                        "stats": stats.public(),
                    }
                )
            )
    elif text:  # end the answer's line; an answer that never started leaves stdout empty
        sys.stdout.write("\n")
        sys.stdout.flush()
    if error is not None:
        return fail(error.message, error.exit_code)
    if chatty and stats is not None:
        print(
            f"[{info.name} {info.quantization} {info.kernels} · TTFT {stats.ttft_ms:.0f} ms · "
            f"prefill {stats.prefill_tps:.1f} tok/s · decode {stats.decode_tps:.1f} tok/s · "
            f"{stats.generation_tokens} tokens · peak {stats.peak_memory_gb:.2f} GB · "
            f"seed {stats.seed} · {finish}]",
            file=sys.stderr,
        )
    if finish in ("repetition", "nan"):
        print(f"squish: warning: generation stopped early ({finish})", file=sys.stderr)
    return 0
