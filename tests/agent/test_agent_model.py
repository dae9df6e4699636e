"""The agent on the real embedded model (SmolLM2-135M through the engine thread), with
constrained decoding. Slow on a CPU: one engine for the module, short tasks, few tokens, and
the tasks share one KV-cache session so squish's system prompt is prefilled once."""

import json
import os
import subprocess
import sys

import accuracy_tasks as accuracy
import pytest

from squish.agent.events import ToolFinished
from squish.agent.loop import Agent, AgentConfig
from squish.agent.sandbox import Workspace
from squish.agent.tools import Registry, ToolContext, builtin_tools


@pytest.mark.timeout(420)
def test_constrained_calls_are_valid_on_20_tasks(model_engine, tmp_path):
    result = accuracy.measure(model_engine, constrained=True, workspace=tmp_path)
    summary = {k: v for k, v in result.items() if k != "outcomes"}
    print(json.dumps(summary))
    assert result["tasks"] >= 20
    assert result["errors"] == 0, summary
    # Every task gets a reply with a call; >= 95% of the calls are schema-valid and name a tool.
    assert result["valid_rate"] >= 0.95, [o for o in result["outcomes"] if o["outcome"] != "valid"]
    assert result["valid_call_rate"] >= 0.95


@pytest.mark.timeout(240)
def test_agent_lists_the_folder_and_answers_from_it(model_engine, workspace):
    events = []
    agent = Agent(
        model_engine,
        Registry(builtin_tools()),
        ToolContext(Workspace(workspace)),
        config=AgentConfig(temperature=0.0, seed=0, answer_tokens=48),
        on_event=events.append,
        session=accuracy.SESSION,  # same system prompt as the test above: its prefill is cached
    )
    result = agent.run("Which files are in this folder?")
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert finished and finished[0].name == "list_dir" and finished[0].ok
    assert finished[0].output.splitlines() == ["README.md", "notes.txt", "src/"]
    assert result.reason == "answer", result.message
    assert any(name in result.text for name in ("README", "notes.txt", "src")), result.text


@pytest.mark.timeout(240)
def test_cli_no_exec_prints_a_valid_call(tmp_path, model_home):
    tools = tmp_path / "weather.json"
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools.write_text(
        json.dumps(
            [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Current weather for a city.",
                        "parameters": parameters,
                    },
                }
            ]
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, squish.cli as c; sys.exit(c.main())",
            "-p",
            "What is the weather in Paris?",
            "--tools",
            str(tools),
            "--no-exec",
            "--json",
            "--temp",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=230,
        env={**os.environ, **({"SQUISH_HOME": str(model_home)} if model_home else {})},
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["stop_reason"] == "proposed"
    (call,) = payload["tool_calls"]
    assert call["name"] == "get_weather" and isinstance(call["arguments"].get("city"), str)
    assert payload["steps"][0]["replies"][0]["constrained"] is True
