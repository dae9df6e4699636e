"""Tool-call accuracy of a model on squish's own task set, every technique measured in one run.

The set (benchmarks/agent/tasks.jsonl, 66 tasks written for squish) covers the built-in
tools, user tools loaded as with `--tools` (one tool offered, or eight to choose from),
requests that need no tool and requests that need two calls. Each task gets one reply the
way `squish -p TASK --tools FILE --no-exec` gets it (the agent's prompt, router, grammar,
parser, schema check and up to 2 corrective retries; nothing runs), greedy, under each
configuration below: every technique on, each one off in turn, the routing step's parts
alone, the shipped behaviour before these techniques, and no constraint at all. Tasks run
one after the other with every configuration, so a load change on the machine touches all
configurations alike (accuracy is greedy and does not depend on speed).

Per configuration it reports: parsed (the reply could be read), schema-valid (every call
passed its schema), right tool (the calls name exactly the expected tools, no call when
none is expected), right arguments (and each expected argument has the expected value).

    uv run python benchmarks/agent_accuracy.py                 # the full table (slow on a CPU)
    uv run python benchmarks/agent_accuracy.py --every 6 --configs all,before
    uv run python benchmarks/agent_accuracy.py --model qwen2.5:1.5b

Results are appended to benchmarks/results/<timestamp>_agent-accuracy.json.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).parent
TASKS = HERE / "agent" / "tasks.jsonl"  # the set the techniques were designed and tuned on
HELD_OUT = HERE / "agent" / "heldout.jsonl"  # written after that, and never tuned on
TOOLS = HERE / "agent" / "tools.json"

OFF = {"route": "off", "copy_args": False, "bounds": False, "single_call": False, "clean_retry": False}
# name -> (what it shows, AgentConfig changes from the defaults, where every technique is on)
CONFIGS = {
    "all": ("every technique on (the default)", {}),
    "no-route": ("without the routing step", {"route": "off"}),
    "route-model": ("routing by the model's scores only", {"route": "model"}),
    "route-words": ("routing by the request's words only", {"route": "words"}),
    "no-copy": ("without copying argument values from the request", {"copy_args": False}),
    "no-bounds": ("without string bounds, runaway stop and token bound", {"bounds": False}),
    "no-single": ("without the one-call rule", {"single_call": False}),
    "before": ("the shipped behaviour before these techniques: grammar only", OFF),
    "unconstrained": ("no grammar, no techniques", {**OFF, "constrained": False}),
}


def load_tasks(which: str = "tuning") -> list[dict]:
    """The tasks of "tuning", "held-out" or "all", each marked with its set."""
    files = {"tuning": [TASKS], "held-out": [HELD_OUT], "all": [TASKS, HELD_OUT]}[which]
    tasks = []
    for path in files:
        name = "tuning" if path == TASKS else "held-out"
        tasks += [
            {**json.loads(line), "set": name} for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    return tasks


def registries(workdir: Path) -> dict:
    from squish.agent.tools import Registry, builtin_tools, load_tools_file

    found = {"builtin": Registry(builtin_tools())}
    for name, schemas in json.loads(TOOLS.read_text(encoding="utf-8")).items():
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(schemas), encoding="utf-8")
        found[name] = Registry(load_tools_file(path))
    return found


def same(expected, actual) -> bool:
    """An argument matches: alternatives, {"contains": text}, numbers by value, text loosely."""
    if isinstance(expected, list):
        return any(same(option, actual) for option in expected)
    if isinstance(expected, dict):
        return isinstance(actual, str) and expected["contains"].casefold() in actual.casefold()
    if isinstance(expected, bool) or not isinstance(expected, (int, float)):
        if not isinstance(actual, str):
            return False

        def loose(text: str) -> str:
            text = text.strip().strip("'\"").rstrip(".").strip().casefold()
            return text[2:] if text.startswith("./") else text.rstrip("/") or text

        return loose(actual) == loose(str(expected))
    return isinstance(actual, (int, float)) and not isinstance(actual, bool) and actual == expected


def matches(expected: list[dict], calls: list[dict]) -> tuple[bool, bool]:
    """(right tools, right tools and arguments): every expected call matched by its own call."""
    if sorted(c["name"] for c in calls) != sorted(e["name"] for e in expected):
        return False, False
    left = list(calls)
    for want in expected:
        hit = next(
            (
                c
                for c in left
                if c["name"] == want["name"]
                and isinstance(c["arguments"], dict)
                and all(same(v, c["arguments"].get(k)) for k, v in want["arguments"].items())
            ),
            None,
        )
        if hit is None:
            return True, False
        left.remove(hit)
    return True, True


def run_task(engine, registry, context, config, task: dict, session: str) -> dict:
    from squish.agent.loop import Agent
    from squish.agent.parser import parse

    agent = Agent(engine, registry, context, config=config, session=session)
    started = time.perf_counter()
    result = agent.run(task["task"])
    seconds = time.perf_counter() - started
    step = result.transcript.steps[0] if result.transcript.steps else None
    replies = step.replies if step else []
    last = replies[-1]["text"] if replies else ""
    calls = result.tool_calls if result.reason == "proposed" else []
    right_tool, right_args = matches(task["expect"], calls) if result.reason == "proposed" else (False, False)
    return {
        "id": task["id"],
        "outcome": result.reason,
        "parsed": not replies or parse(last, agent.form).error is None,
        "valid": result.reason == "proposed",
        "right_tool": right_tool,
        "right_args": right_args,
        "calls": calls,
        "chosen": step.chosen["tool"] if step and step.chosen else None,
        "ranking": step.chosen["ranking"] if step and step.chosen else None,
        "retries": len(step.retries) if step else 0,
        "tokens": sum(len(r["text"]) for r in replies),
        "reply": last,
        "notices": [n for s in result.transcript.steps for n in s.notices],
        "seconds": round(seconds, 2),
    }


def summarize(outcomes: list[dict]) -> dict:
    n = len(outcomes)
    count = Counter()
    for o in outcomes:
        count.update(k for k in ("parsed", "valid", "right_tool", "right_args") if o[k])
    return {
        "tasks": n,
        **{k: count[k] for k in ("parsed", "valid", "right_tool", "right_args")},
        **{f"{k}_rate": round(count[k] / n, 4) if n else 0.0 for k in ("parsed", "valid", "right_tool", "right_args")},
        "retries": sum(o["retries"] for o in outcomes),
        "seconds": round(sum(o["seconds"] for o in outcomes), 1),
        "by_kind": {
            kind: f"{sum(o['right_args'] for o in group)}/{len(group)}"
            for kind, group in group_by_kind(outcomes).items()
        },
    }


def kind(task_id: str, tools: str) -> str:
    if "none" in task_id:
        return "no tool"
    if "two" in task_id:
        return "two calls"
    return "built-in" if tools == "builtin" else ("one tool" if tools != "assistant" else "choose among 8")


def group_by_kind(outcomes: list[dict]) -> dict:
    groups: dict[str, list] = {}
    for o in outcomes:
        groups.setdefault(o["kind"], []).append(o)
    return groups


def table(rows: dict, key: str = "summary") -> str:
    lines = [
        "| configuration | parsed | schema-valid | right tool | right tool + arguments | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        s = row[key]
        cells = [f"{s[k]}/{s['tasks']} ({s[k + '_rate']:.0%})" for k in ("parsed", "valid", "right_tool", "right_args")]
        lines.append(f"| {name}: {row['what']} | " + " | ".join(cells) + f" | {s['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model name or path (default: the embedded smollm2:135m)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, among {', '.join(CONFIGS)}")
    parser.add_argument("--set", default="all", choices=("tuning", "held-out", "all"), help="which tasks (default: all)")
    parser.add_argument("--tasks", help="comma-separated task ids (default: all)")
    parser.add_argument("--every", type=int, default=1, help="take every Nth task (a quick subset)")
    parser.add_argument("--results-dir", default=str(HERE / "results"))
    args = parser.parse_args()

    from squish.agent.loop import AgentConfig
    from squish.agent.prompt import template_supports_tools
    from squish.agent.sandbox import Workspace
    from squish.agent.tools import ToolContext
    from squish.cli.bench_results import save
    from squish.engine.engine import Engine
    from squish.models.hardware import describe
    from squish.models import store

    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configurations {unknown}; choose among {', '.join(CONFIGS)}")
    tasks = load_tasks(args.set)
    if args.tasks:
        wanted = set(args.tasks.split(","))
        tasks = [t for t in tasks if t["id"] in wanted]
    tasks = tasks[:: max(1, args.every)]

    engine = Engine()
    loaded = store.load(engine, args.model).collect()
    if loaded.error is not None:
        sys.exit(loaded.error.message)
    info = loaded.loaded
    if template_supports_tools(info.path):
        print("note: this model's template renders tools; the routing and copy techniques apply to "
              "squish's own format only", file=sys.stderr)
    base = AgentConfig(max_steps=1, execute=False, temperature=0.0, seed=0)
    configs = {name: replace(base, **CONFIGS[name][1]) for name in names}
    outcomes: dict[str, list] = {name: [] for name in names}
    started = time.perf_counter()
    load_before = os.getloadavg()  # accuracy is greedy and load-proof; the seconds are not
    with tempfile.TemporaryDirectory() as workdir:
        tools = registries(Path(workdir))
        context = ToolContext(Workspace(workdir))
        for index, task in enumerate(tasks, 1):
            for name in names:
                outcome = run_task(engine, tools[task["tools"]], context, configs[name], task, f"acc-{task['tools']}")
                outcome["kind"] = kind(task["id"], task["tools"])
                outcome["set"] = task["set"]
                outcomes[name].append(outcome)
                mark = "ok" if outcome["right_args"] else ("tool" if outcome["right_tool"] else "--")
                print(
                    f"[{index}/{len(tasks)}] {task['id']:14} {name:13} {mark:4} {outcome['seconds']:5.1f}s "
                    f"{json.dumps(outcome['calls'])[:110]}",
                    file=sys.stderr,
                    flush=True,
                )
    rows = {}
    for name in names:
        done = outcomes[name]
        rows[name] = {
            "what": CONFIGS[name][0],
            "settings": CONFIGS[name][1],
            "summary": summarize(done),
            **{f"summary_{s}": summarize([o for o in done if o["set"] == s]) for s in ("tuning", "held-out")},
            "outcomes": done,
        }
    result = {
        "name": "agent-accuracy",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": info.name,
        "quantization": info.quantization,
        "hardware": describe(),
        "plan": {
            "tasks": len(tasks),
            "task_ids": [t["id"] for t in tasks],
            "sampling": "greedy",
            "retries": base.max_retries,
            "seconds": round(time.perf_counter() - started, 1),
            "load_average": {"start": [round(x, 2) for x in load_before], "end": [round(x, 2) for x in os.getloadavg()]},
        },
        "configs": rows,
    }
    path = save(result, Path(args.results_dir), "agent-accuracy")
    for which in ("tuning", "held-out"):
        if any(t["set"] == which for t in tasks):
            print(f"\n{which} tasks:\n" + table(rows, f"summary_{which}"))
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
