"""Tool-call accuracy on a fixed set of short tasks that each need one built-in tool.

Each task gets one reply from the model, the agent's own way (squish's prompt, the parser,
the schema check) with no retries and nothing run: a reply counts as valid when it holds at
least one call and every call names an existing tool with schema-valid arguments. Used by
benchmarks/agent_accuracy.py and by the real-model test (tests/agent/test_agent_model.py).
"""

import time
from collections import Counter

from squish.agent.loop import Agent, AgentConfig
from squish.agent.sandbox import Workspace
from squish.agent.tools import Registry, ToolContext, builtin_tools

TASKS = [
    ("Which files are in this folder?", "list_dir"),
    ("List the contents of the src directory.", "list_dir"),
    ("What is in the docs folder?", "list_dir"),
    ("Show me the files in tests.", "list_dir"),
    ("Show me what is in notes.txt.", "read_file"),
    ("Read README.md.", "read_file"),
    ("Open config.json.", "read_file"),
    ("What does main.py contain?", "read_file"),
    ("Find the word alpha in the files.", "search_files"),
    ("Search the project for 'import os'.", "search_files"),
    ("Which files mention Paris?", "search_files"),
    ("Create a file hello.txt that says hi.", "write_file"),
    ("Write 'buy milk' to todo.txt.", "write_file"),
    ("Save the text done in status.txt.", "write_file"),
    ("In notes.txt, replace milk with bread.", "edit_file"),
    ("Change red to blue in colors.txt.", "edit_file"),
    ("Run the command ls -la.", "run_shell"),
    ("Run the tests with pytest.", "run_shell"),
    ("Show the date with the shell.", "run_shell"),
    ("Run git status.", "run_shell"),
]
SESSION = "agent-accuracy"


def measure(engine, constrained: bool, tasks=TASKS, call_tokens: int = 56, workspace=".") -> dict:
    """Run every task once; counts and per-task outcomes. Needs a loaded engine."""
    registry = Registry(builtin_tools())
    context = ToolContext(Workspace(workspace))
    config = AgentConfig(
        max_steps=1,
        max_retries=0,
        temperature=0.0,
        seed=0,
        constrained=constrained,
        execute=False,
        call_tokens=call_tokens,
    )
    outcomes = []
    started = time.perf_counter()
    system = ""
    for task, expected in tasks:
        agent = Agent(engine, registry, context, config=config, session=SESSION)
        system = agent.system
        result = agent.run(task)
        replies = result.transcript.steps[0].replies if result.transcript.steps else []
        reply = replies[-1] if replies else {"text": "", "elapsed_ms": 0.0, "decode_tps": 0.0}
        calls = result.tool_calls
        if result.reason == "proposed" and calls:
            outcome = "valid"
        elif result.reason == "proposed":
            outcome = "no_call"
        elif result.reason == "invalid":
            outcome = "invalid"
        else:
            outcome = result.reason  # error or cancelled: reported, never counted as valid
        outcomes.append(
            {
                "task": task,
                "expected": expected,
                "outcome": outcome,
                "tools": [c["name"] for c in calls],
                "right_tool": bool(calls) and calls[0]["name"] == expected,
                "reply": reply["text"],
                "elapsed_ms": reply["elapsed_ms"],
                "decode_tps": reply["decode_tps"],
            }
        )
    counts = Counter(o["outcome"] for o in outcomes)
    with_call = counts["valid"] + counts["invalid"]
    return {
        "constrained": constrained,
        "tasks": len(outcomes),
        "valid": counts["valid"],
        "invalid": counts["invalid"],
        "no_call": counts["no_call"],
        "errors": len(outcomes) - with_call - counts["no_call"],
        "valid_rate": counts["valid"] / len(outcomes),
        "valid_call_rate": counts["valid"] / with_call if with_call else 0.0,
        "right_tool_rate": sum(o["right_tool"] for o in outcomes) / len(outcomes),
        "seconds": round(time.perf_counter() - started, 1),
        "system_prompt": system,
        "outcomes": outcomes,
    }
