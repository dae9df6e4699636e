"""Tool-call validity of the embedded model, with and without constrained decoding, same run.

Each of the 20 short tasks in squish.agent.accuracy gets one greedy reply, the agent's own way
(squish's prompt, the tolerant parser, the jsonschema check; no retries, nothing run). Valid:
the reply holds at least one call and every call names an existing tool with schema-valid
arguments. Also reported: how often the first call names the tool the task needs.

    uv run python benchmarks/agent_accuracy.py [--model NAME]

Results are appended to benchmarks/results/<timestamp>_agent-accuracy.json.
"""

import argparse
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import accuracy_tasks as accuracy

from squish.cli.bench import save
from squish.engine.engine import Engine
from squish.models.hardware import describe
from squish.models import store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model name or path (default: the embedded smollm2:135m)")
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args()
    engine = Engine()
    loaded = store.load(engine, args.model).collect()
    if loaded.error is not None:
        sys.exit(loaded.error.message)
    sides = {}
    with tempfile.TemporaryDirectory() as workspace:  # nothing runs, but the tools need a root
        for constrained in (True, False):
            label = "constrained" if constrained else "unconstrained"
            print(f"{label}: {len(accuracy.TASKS)} tasks", file=sys.stderr, flush=True)
            sides[label] = accuracy.measure(engine, constrained, workspace=workspace)
    result = {
        "name": "agent-accuracy",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": loaded.loaded.name,
        "quantization": loaded.loaded.quantization,
        "hardware": describe(),
        "plan": {"tasks": len(accuracy.TASKS), "sampling": "greedy", "retries": 0},
        **sides,
    }
    path = save(result, Path(args.results_dir), "agent-accuracy")
    for label, side in sides.items():
        print(
            f"{label}: {side['valid']}/{side['tasks']} valid ({side['valid_rate']:.0%}; "
            f"{side['valid_call_rate']:.0%} of replies with a call), {side['no_call']} without a call, "
            f"right tool {side['right_tool_rate']:.0%}, {side['seconds']:.0f} s"
        )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
