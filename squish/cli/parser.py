"""The command line's parsers and its usage errors: all that `squish --help` imports.

Exit codes: 0 ok, 1 user or input error, 2 runtime or system error.
"""

import argparse
import sys

from .. import __version__

EXAMPLES = """\
examples:
  squish                                   open the chat app
  squish --continue                        reopen the last chat in the app
  squish -p "What is the capital of France?"
  squish -c -p "And of Italy?"             continue the last chat (its saved KV cache: no re-prefill)
  squish --no-save --ctx 2048 -p "..."     answer without saving a chat, in a 2048-token context
  squish chats                             saved chats; squish chats export 3 > chat.md
  echo "Summarize: ..." | squish --quiet -p -
  squish --json -p "Name a color" --temp 0 --max-tokens 16
  squish bench --quick                     squish against mlx_lm on this machine
  squish models                            local models, and catalog models that fit this machine
  squish pull qwen2.5:1.5b                 download a model, then: squish --model qwen2.5:1.5b
  squish --agent -p "Which files are in this folder?"
  squish --agent --mcp servers.json -p "What time is it in Tokyo?"
  squish -p "Weather in Paris?" --tools weather.json --no-exec --json
  squish undo                              revert the files the last agent run changed
"""

BENCH_EXAMPLES = """\
examples:
  squish bench --quick                      squish against mlx_lm: 6 rounds, 64 tokens a run
  squish bench --quick --anchor llama.cpp   and llama.cpp on the embedded model's own GGUF file
  squish bench --json --model PATH
"""


class UsageError(Exception):
    """A command line the user got wrong: one line on stderr, exit 1."""


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
        "-c",
        "--continue",
        dest="continue_chat",
        action="store_true",
        help="continue the last chat (in the app, or with -p)",
    )
    parser.add_argument("--chat", type=int, metavar="ID", help="continue chat ID (squish chats lists them)")
    parser.add_argument("--no-save", action="store_true", help="with -p: save neither the chat nor its KV cache")
    parser.add_argument(
        "--ctx", type=int, metavar="N", help="context size in tokens (default: the setting, else the model's window)"
    )
    parser.add_argument(
        "--think",
        choices=("on", "off"),
        help="thinking models: let the model think first, or not (templates that take enable_thinking)",
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
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the answer (no thinking, no stats)")
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
    agent.add_argument(
        "--mcp", metavar="FILE", help='MCP servers, {"mcpServers": {...}} ($SQUISH_HOME/mcp.json is read too)'
    )
    parser.epilog = EXAMPLES + (
        "\ncommands:\n  bench    benchmark squish against mlx_lm and llama.cpp (squish bench --help)\n"
        "  chats    list saved chats, export one (squish chats --help)\n"
        "  models   list local and catalog models (squish models --help)\n"
        "  pull     download a model from the Hugging Face hub (squish pull --help)\n"
        "  rm       delete a downloaded model\n"
        "  tools    list the agent's tools, with MCP servers' (squish tools --help)\n"
        "  undo     revert the agent's last file changes (squish undo --help)\n"
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
    parser.add_argument("--quick", action="store_true", help="6 rounds of 64 tokens (the full run: 20 of 128)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--runs", type=int, help="measured runs per side")
    parser.add_argument("--warmup", type=int, help="discarded warm-up runs per side (at least 5)")
    parser.add_argument("--max-tokens", type=int, help="most tokens per measured run (at least 64)")
    parser.add_argument("--turns", type=int, help="turns of the multi-turn TTFT curve (at most 10)")
    parser.add_argument(
        "--anchor",
        choices=["llama.cpp"],
        help="also measure llama.cpp (llama-cpp-python in its own uv environment) on the same GGUF and prompts",
    )
    parser.add_argument("--gguf", metavar="FILE", help="the GGUF file llama.cpp runs (default: the embedded model's)")
    parser.add_argument("--results-dir", default="benchmarks/results", help="where result files are appended")
    return parser


MODELS_EXAMPLES = """\
examples:
  squish models                 local models, and the catalog with what fits this machine
  squish models --all --json    every catalog build (4-, 8- and experimental 3-bit) as JSON
  squish models --set-default qwen3:4b
"""

PULL_EXAMPLES = """\
examples:
  squish pull qwen2.5:1.5b --dry-run     sizes from the hub, disk and RAM estimate; downloads nothing
  squish pull qwen3:4b                   download (Ctrl+C stops; pulling again resumes)
  squish pull qwen3:8b-3bit              the experimental 3-bit build
  squish pull mlx-community/SmolLM2-360M-Instruct-4bit
"""


def models_parser() -> Parser:
    parser = Parser(
        prog="squish models",
        description="List local models and the catalog: download size, estimated RAM, and whether each fits.",
        epilog=MODELS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--all", action="store_true", help="list every catalog build, not only the 4-bit ones")
    parser.add_argument("--set-default", metavar="NAME", help="remember NAME as the model used without --model")
    return parser


def pull_parser() -> Parser:
    parser = Parser(
        prog="squish pull",
        description="Download a model from the Hugging Face hub (HF_ENDPOINT), verify it and make it ready.",
        epilog=PULL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help="catalog id (qwen3:4b, qwen3:4b-8bit) or hub repo id (owner/name)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the size, disk and RAM estimate; download nothing"
    )
    parser.add_argument("--json", action="store_true", help="with --dry-run: print the estimate as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    return parser


def rm_parser() -> Parser:
    parser = Parser(
        prog="squish rm",
        description=(
            "Delete downloaded models (and partial downloads of them). What squish pulled goes; a revision "
            "another tool put in the Hugging Face cache goes only if you agree (asked on a terminal, or --yes); "
            "files other revisions still link to stay."
        ),
        epilog="examples:\n  squish rm qwen2.5:1.5b\n  squish rm --dry-run mlx-community/Qwen3-4B-4bit\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="catalog id or hub repo id")
    parser.add_argument("-n", "--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    parser.add_argument(
        "-y", "--yes", action="store_true", help="also delete revisions another tool put in the Hugging Face cache"
    )
    return parser


CHATS_EXAMPLES = """\
examples:
  squish chats                      saved chats, the most recent first, with their KV cache size
  squish chats --json
  squish chats export 3             chat 3 as Markdown on stdout
  squish chats export 3 --json -o chat3.json
"""


def chats_parser() -> Parser:
    parser = Parser(
        prog="squish chats",
        description="The saved chats (the app's /chats, and every squish -p unless --no-save).",
        epilog=CHATS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    commands = parser.add_subparsers(dest="command", parser_class=Parser)
    export = commands.add_parser("export", help="write one chat as Markdown (default) or JSON")
    export.add_argument("id", type=int, help="the chat's id (first column of squish chats)")
    export.add_argument("--json", action="store_true", help="JSON instead of Markdown")
    export.add_argument("-o", "--output", metavar="FILE", help="write FILE (never overwritten) instead of stdout")
    return parser


def tools_parser() -> Parser:
    parser = Parser(
        prog="squish tools",
        description="List the tools the agent can call: built-in, from --tools files, and from MCP servers.",
        epilog=(
            "examples:\n  squish tools\n  squish tools --mcp servers.json --json\n"
            "  squish tools --tools weather.json\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tools", metavar="FILE", help="also list the tools of an OpenAI-style schema file")
    parser.add_argument(
        "--mcp", metavar="FILE", help='MCP servers, {"mcpServers": {...}} ($SQUISH_HOME/mcp.json is read too)'
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def undo_parser() -> Parser:
    parser = Parser(
        prog="squish undo",
        description=(
            "Revert the files that agent runs changed (write_file, edit_file) in a workspace, newest run "
            "first, and show the diff. A file changed since by someone else is left alone unless --force. "
            "Shell commands cannot be undone."
        ),
        epilog="examples:\n  squish undo\n  squish undo 3 --dry-run\n  squish undo --list\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("count", nargs="?", type=int, default=1, help="how many runs to revert (default 1)")
    parser.add_argument("--workspace", metavar="DIR", help="the agent's workspace (default: the current folder)")
    parser.add_argument("--list", action="store_true", help="list the runs that can be undone; change nothing")
    parser.add_argument("--dry-run", action="store_true", help="show what would be reverted; change nothing")
    parser.add_argument("--force", action="store_true", help="revert files changed since the agent's change too")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser
