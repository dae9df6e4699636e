"""Command line: `squish` dispatches to the chat app, a one-shot answer or a command.

Nothing here imports mlx or textual at module level: `squish --help` stays fast. One module per
command: chat (one-shot -p), agent, models (models, pull, rm), bench, tools (tools, undo);
parsers in parser.py.
Exit codes: 0 ok, 1 user or input error, 2 runtime or system error.
"""

import logging
import os
import sys
import warnings

from .parser import UsageError, fail, main_parser

# The libraries under squish, whose warnings are theirs to explain: squish says what went wrong once.
LIBRARIES = ("transformers", "huggingface_hub", "mlx_lm", "tokenizers", "httpx", "httpx2")


def quiet_libraries() -> None:
    """Keep library warnings (Python warnings and the libraries' loggers) off the user's streams.

    transformers and huggingface_hub set their own loggers' levels when they are first imported
    (later: a pull, the engine thread), from TRANSFORMERS_VERBOSITY and HF_HUB_VERBOSITY: so those
    variables, unless the user set them.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)


def bench_command(argv: list[str]) -> int:
    from .bench import bench

    return bench(argv)


def models_command(argv: list[str]) -> int:
    from .models import models

    return models(argv)


def pull_command(argv: list[str]) -> int:
    from .models import pull

    return pull(argv)


def rm_command(argv: list[str]) -> int:
    from .models import rm

    return rm(argv)


def chats_command(argv: list[str]) -> int:
    from .chats import chats

    return chats(argv)


def tools_command(argv: list[str]) -> int:
    from .tools import tools

    return tools(argv)


def undo_command(argv: list[str]) -> int:
    from .tools import undo

    return undo(argv)


COMMANDS = {
    "bench": bench_command,
    "chats": chats_command,
    "models": models_command,
    "pull": pull_command,
    "rm": rm_command,
    "tools": tools_command,
    "undo": undo_command,
}


def run(argv: list[str]) -> int:
    if argv and argv[0] in COMMANDS:
        quiet_libraries()
        return COMMANDS[argv[0]](argv[1:])
    args = main_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    if not args.verbose:
        quiet_libraries()
    from .models import configured_default

    default_model = configured_default()  # None: the embedded model
    if any((args.agent, args.tools, args.no_exec, args.yes, args.workspace, args.mcp, args.max_steps is not None)):
        if args.prompt is None:
            raise UsageError("agent mode needs -p PROMPT (in the chat app, use /agent)")
        from .agent import run_agent

        args.model = args.model or default_model
        return run_agent(args)
    if args.prompt is None:
        if args.no_save:
            raise UsageError("--no-save applies to -p: the chat app saves every chat")
        if args.continue_chat and args.chat is not None:
            raise UsageError("--continue and --chat both pick a chat: give one")
        from ..tui.app import run_app

        return run_app(
            model=args.model,  # only --model: a continued chat otherwise keeps its own model
            default_model=default_model,
            continue_last=args.continue_chat,
            system_prompt=args.system,
            max_tokens=args.max_tokens,
            temperature=args.temp,
            chat_id=args.chat,
            context_size=args.ctx,
            thinking=None if args.think is None else args.think == "on",
        )
    from .chat import one_shot

    args.default_model = default_model  # args.model stays what --model said: a chat keeps its own
    return one_shot(args)


def main(argv: list[str] | None = None) -> int:
    from ..errors import SquishError

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
