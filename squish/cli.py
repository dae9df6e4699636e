"""Command line: argument parsing, the one-shot answer, and the bench command.

Nothing here imports mlx or textual at module level: `squish --help` stays fast.
Exit codes: 0 ok, 1 user or input error, 2 runtime or system error.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__

EXAMPLES = """\
examples:
  squish                                   open the chat app
  squish --continue                        reopen the last chat in the app
  squish -p "What is the capital of France?"
  echo "Summarize: ..." | squish --quiet -p -
  squish --json -p "Name a color" --temp 0 --max-tokens 16
  squish bench --quick                     squish against mlx_lm on this machine
  squish models                            local models, and catalog models that fit this machine
  squish pull qwen2.5:1.5b                 download a model, then: squish --model qwen2.5:1.5b
  squish --agent -p "Which files are in this folder?"
  squish -p "Weather in Paris?" --tools weather.json --no-exec --json
"""

BENCH_EXAMPLES = """\
examples:
  squish bench --quick          under a minute on the embedded model
  squish bench --json --model PATH
"""


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 1."""

    def error(self, message: str):
        raise UsageError(message)


def fail(message: str, code: int) -> int:
    print(f"squish: error: {message}", file=sys.stderr)
    return code


def main_parser() -> Parser:
    parser = Parser(
        prog="squish",
        description="Chat with a local LLM in the terminal, run in-process with MLX.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-p", "--prompt", help='answer PROMPT and exit ("-" reads standard input)')
    parser.add_argument(
        "--continue", dest="continue_chat", action="store_true", help="reopen the last chat in the chat app"
    )
    parser.add_argument(
        "-m", "--model", help="catalog id, hub repo id or path (default: the configured default, else smollm2:135m)"
    )
    parser.add_argument("--system", help="system prompt for this request")
    parser.add_argument("--max-tokens", type=int, default=512, help="most tokens to generate (default 512)")
    parser.add_argument("--temp", type=float, default=0.2, help="sampling temperature, 0 is greedy (default 0.2)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    parser.add_argument("--seed", type=int, help="random seed (default: a new one, reported in the stats)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before the request is stopped")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the answer")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the answer and stats")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine details to stderr")
    parser.add_argument("--version", action="version", version=f"squish {__version__}")
    agent = parser.add_argument_group("agent mode (docs/agent.md)")
    agent.add_argument("--agent", action="store_true", help="let the model call tools to do the task")
    agent.add_argument("--tools", metavar="FILE", help="more tools: OpenAI-style function schemas (JSON)")
    agent.add_argument("--no-exec", action="store_true", help="print the validated tool calls, run nothing")
    agent.add_argument("--yes", action="store_true", help="allow risky tools (write, edit, shell) without asking")
    agent.add_argument("--max-steps", type=int, help="most tool steps before the agent stops (default 8)")
    agent.add_argument("--workspace", metavar="DIR", help="folder the tools work in (default: the current one)")
    parser.epilog = EXAMPLES + (
        "\ncommands:\n  bench    benchmark squish against mlx_lm (squish bench --help)\n"
        "  models   list local and catalog models (squish models --help)\n"
        "  pull     download a model from the Hugging Face hub (squish pull --help)\n"
        "  rm       delete a downloaded model\n"
    )
    return parser


def bench_parser() -> Parser:
    parser = Parser(
        prog="squish bench",
        description="Measure the squish engine against mlx_lm.stream_generate on the same model and prompts.",
        epilog=BENCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-m", "--model", help="model name or path (default: the embedded smollm2:135m)")
    parser.add_argument("--quick", action="store_true", help="few short runs: under a minute on the embedded model")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--runs", type=int, help="measured runs per side")
    parser.add_argument("--warmup", type=int, help="discarded warm-up runs per side (at least 5)")
    parser.add_argument("--max-tokens", type=int, help="tokens per measured run")
    parser.add_argument("--turns", type=int, help="turns of the multi-turn TTFT curve (at most 10)")
    parser.add_argument("--results-dir", default="benchmarks/results", help="where result files are appended")
    return parser


def read_prompt(arg: str) -> str:
    if arg != "-":
        return arg
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"standard input is not valid UTF-8 (byte {exc.start})") from None


def one_shot(args) -> int:
    from .engine.engine import ChatRequest, Engine, validate
    from .engine.events import Done, Error, Loaded, Stats, Status, Token

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
    loaded = engine.load(args.model)
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
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()
    if error is not None:
        return fail(error.message, error.exit_code)
    if chatty and stats is not None:
        print(
            f"[{info.name} {info.quantization} {info.backend} · TTFT {stats.ttft_ms:.0f} ms · "
            f"prefill {stats.prefill_tps:.1f} tok/s · decode {stats.decode_tps:.1f} tok/s · "
            f"{stats.generation_tokens} tokens · peak {stats.peak_memory_gb:.2f} GB · "
            f"seed {stats.seed} · {finish}]",
            file=sys.stderr,
        )
    if finish in ("repetition", "nan"):
        print(f"squish: warning: generation stopped early ({finish})", file=sys.stderr)
    return 0


def bench(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    if args.warmup is not None and args.warmup < 5:
        raise UsageError("--warmup must be at least 5")
    if args.turns is not None and not 2 <= args.turns <= 10:
        raise UsageError("--turns must be between 2 and 10")
    for name in ("runs", "max_tokens"):
        value = getattr(args, name)
        if value is not None and value < 2:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 2")
    from .engine import bench as benchmark

    def progress(text: str) -> None:
        if sys.stderr.isatty():
            print(f"\r\033[2K{text}", end="", file=sys.stderr, flush=True)

    result = benchmark.run(
        args.model,
        args.quick,
        progress,
        runs=args.runs,
        warmup=args.warmup,
        max_tokens=args.max_tokens,
        turns=args.turns,
    )
    if sys.stderr.isatty():
        print("\r\033[2K", end="", file=sys.stderr, flush=True)
    path = benchmark.save(result, Path(args.results_dir), f"bench-{result['name']}")
    if args.json:
        print(json.dumps(benchmark.summary(result)))
    else:
        print(benchmark.table(result))
        print(f"saved {path}")
    return 0


def models_command(argv: list[str]) -> int:
    from .cli_models import models

    return models(argv)


def pull_command(argv: list[str]) -> int:
    from .cli_models import pull

    return pull(argv)


def rm_command(argv: list[str]) -> int:
    from .cli_models import rm

    return rm(argv)


COMMANDS = {"bench": bench, "models": models_command, "pull": pull_command, "rm": rm_command}


def run(argv: list[str]) -> int:
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    args = main_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    if args.model is None:
        from .cli_models import configured_default

        args.model = configured_default()
    if any((args.agent, args.tools, args.no_exec, args.yes, args.workspace, args.max_steps is not None)):
        if args.prompt is None:
            raise UsageError("agent mode needs -p PROMPT (in the chat app, use /agent)")
        from .agent.oneshot import run_agent

        return run_agent(args, read_prompt, UsageError, fail)
    if args.prompt is None:
        from .tui.app import run_app

        return run_app(
            model=args.model,
            continue_last=args.continue_chat,
            system_prompt=args.system,
            max_tokens=args.max_tokens,
            temperature=args.temp,
        )
    if args.continue_chat:
        raise UsageError("--continue reopens a chat in the chat app; it does not combine with -p")
    return one_shot(args)


def main(argv: list[str] | None = None) -> int:
    from .engine.errors import SquishError

    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        return fail(str(exc), 1)
    except SquishError as exc:
        return fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("squish: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        return fail(str(exc), 2)
