"""Each model family's tool-call format: tiny models with each family's chat template.

The templates in tests/agent/templates/ were written for these tests to each family's
published call syntax (Hermes/Qwen 2.5 JSON, Qwen3-Coder XML, Mistral, LFM2 pythonic,
Gemma 4, Llama 3 JSON); the models' own files cannot be downloaded here. mlx-lm chooses the
parser from the template when it loads the tokenizer; the engine reports it, the agent
parses with it, and a call the template renders reads back as the same call.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import build_tiny_model
from squish.agent.parser import parse
from squish.agent.tools import builtin_tools

TEMPLATES = Path(__file__).with_name("templates")
FORMATS = {
    "hermes_qwen": "json_tools",
    "qwen3_coder": "qwen3_coder",
    "mistral": "mistral",
    "lfm2_pythonic": "pythonic",
    "gemma4": "gemma4",
    "llama3_json": None,  # mlx-lm has no parser for it: squish's tolerant parser reads bare JSON
}
CALLS = [
    {"name": "search_files", "arguments": {"query": "alpha beta", "path": "src"}},
    {"name": "read_file", "arguments": {"path": "notes.txt"}},
]


@pytest.fixture(scope="module")
def models(tmp_path_factory, home):
    """One tiny model directory per template (the weights shared)."""
    root = tmp_path_factory.mktemp("formats")
    base = build_tiny_model(root / "base", home)
    made = {}
    for name in FORMATS:
        path = root / name
        path.mkdir()
        for item in base.iterdir():
            if item.name != "tokenizer_config.json":
                (path / item.name).symlink_to(item)
        config = json.loads((base / "tokenizer_config.json").read_text())
        config["chat_template"] = (TEMPLATES / f"{name}.jinja").read_text()
        (path / "tokenizer_config.json").write_text(json.dumps(config))
        made[name] = path
    yield made
    shutil.rmtree(root, ignore_errors=True)


def openai_tools():
    return [t.openai() for t in builtin_tools()]


def assistant_text(model_dir: Path, calls: list[dict]) -> str:
    """What the template renders for an assistant turn holding these calls."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    user = [{"role": "user", "content": "do it"}]
    turn = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": call} for call in calls],
    }
    kwargs = {"tools": openai_tools(), "tokenize": False}
    before = tokenizer.apply_chat_template(user, add_generation_prompt=True, **kwargs)
    full = tokenizer.apply_chat_template(user + [turn], **kwargs)
    text = full[len(os.path.commonprefix([before, full])) :]
    # A model ends its turn with its end-of-turn token, which the engine never puts in the text.
    for end in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", tokenizer.eos_token):
        text = text.replace(end, "")
    return text


@pytest.mark.parametrize("name", FORMATS)
def test_the_engine_reports_the_format_the_template_calls_for(models, name):
    from squish.engine.engine import Engine
    from squish.models import store

    engine = Engine()
    try:
        loaded = store.load(engine, str(models[name])).collect()
        assert loaded.error is None, loaded.error
        assert loaded.loaded.tool_format == FORMATS[name]
    finally:
        engine.unload().collect()


@pytest.mark.parametrize("name", FORMATS)
def test_a_call_the_template_renders_parses_back(models, name):
    calls = CALLS if name not in ("llama3_json", "qwen3_coder") else CALLS[:1]  # one call per turn there
    text = assistant_text(models[name], calls)
    reply = parse(text, FORMATS[name] or "json_tools", openai_tools())
    assert reply.error is None, text
    assert reply.calls == calls, text


def test_a_broken_call_in_a_family_format_is_an_error_the_model_is_told():
    reply = parse("<tool_call>\n<function=read_file>\n<parameter=path>\nnotes.txt", "qwen3_coder", openai_tools())
    assert reply.calls == [] and "qwen3_coder" in reply.error
    assert parse("Paris is the capital.", "mistral").calls == []


def test_hermes_calls_from_a_tiny_model_are_valid_under_the_grammar(tiny_engine, tmp_path):
    from squish.agent.loop import Agent, AgentConfig
    from squish.agent.sandbox import Workspace
    from squish.agent.tools import Registry, ToolContext

    agent = Agent(
        tiny_engine,
        Registry(builtin_tools()),
        ToolContext(Workspace(tmp_path)),
        config=AgentConfig(execute=False, temperature=0.0, seed=3, max_retries=0),
        template_tools=True,
        call_format="json_tools",
    )
    result = agent.run("Read notes.txt")
    assert result.reason == "proposed" and len(result.tool_calls) == 1, result.message
    call = result.tool_calls[0]
    assert Registry(builtin_tools()).get(call["name"]).errors(call["arguments"]) == []
    (reply,) = result.transcript.steps[0].replies
    assert reply["constrained"] and reply["text"].startswith("<tool_call>")


def test_a_format_without_grammar_is_validated_and_retried(scripted):
    bad = "<tool_call>\n<function=read_file>\n<parameter=file>\nnotes.txt\n</parameter>\n</function>\n</tool_call>"
    good = bad.replace("parameter=file", "parameter=path")
    run = scripted(bad, good, "It says buy milk.", template_tools=True, call_format="qwen3_coder")
    result = run("read notes.txt")
    assert result.text == "It says buy milk."
    steps = result.transcript.steps
    assert "no grammar for the qwen3_coder call format" in result.transcript.notices[0]
    assert "'path' is a required property" in steps[0].retries[0]["reason"]
    assert steps[0].calls[-1].ok and steps[0].calls[-1].output == "buy milk\n"
