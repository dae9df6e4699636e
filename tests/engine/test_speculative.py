"""Prompt-lookup drafts on the real embedded model: the same answers as plain decoding."""

import json

import pytest
from helpers import SQUISH, squish_env

from squish.agent import constrain
from squish.agent.prompt import call_text, system_prompt
from squish.agent.tools import builtin_tools
from squish.engine.engine import ChatRequest
from squish.engine.events import Token

COPY = (
    "Repeat this text exactly: The quick brown fox jumps over the lazy dog "
    "while the farmer sleeps under the old oak tree."
)
PROMPTS = [
    COPY,
    "Copy this list exactly:\n- apples: 3\n- pears: 5\n- plums: 12\n- cherries: 40",
    "Rename x to total in this code and print the whole code:\n\ndef add(a, b):\n    x = a + b\n    return x\n",
    "What is the capital of France?",
    "Write two sentences about the sea.",
]


def answer(engine, messages, draft, **kwargs):
    kwargs = {"max_tokens": 48, "temperature": 0.0, "seed": 0, **kwargs}
    result = engine.generate(ChatRequest(messages, draft=draft, **kwargs)).collect()
    assert result.error is None, result.error
    ids = [e.token_id for e in result.events if isinstance(e, Token)]
    return result, ids


def test_greedy_answers_are_the_plain_answers_token_for_token(engine):
    accepted = 0
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        plain, plain_ids = answer(engine, messages, draft=False)
        drafted, drafted_ids = answer(engine, messages, draft=True)
        assert drafted.text == plain.text and drafted_ids == plain_ids
        assert drafted.stats.generation_tokens == plain.stats.generation_tokens
        assert drafted.stats.finish_reason == plain.stats.finish_reason
        assert plain.stats.draft_tokens == 0
        accepted += drafted.stats.accepted_tokens
    assert accepted > 0  # the copying prompts were answered partly from drafts


def test_sampled_answers_with_drafts_are_the_plain_ones_for_the_same_seed(engine):
    messages = [{"role": "user", "content": COPY}]
    for seed in (1, 2):
        plain, _ = answer(engine, messages, draft=False, temperature=0.7, top_p=0.9, seed=seed)
        drafted, _ = answer(engine, messages, draft=True, temperature=0.7, top_p=0.9, seed=seed)
        assert drafted.text == plain.text


def test_a_chat_keeps_reusing_its_kv_cache_with_drafts(engine):
    turns = {}
    for draft in (False, True):
        history = [{"role": "user", "content": COPY}]
        first, _ = answer(engine, history, draft, session=f"chat-{draft}")
        history += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Now repeat it again."}]
        second, _ = answer(engine, history, draft, session=f"chat-{draft}")
        turns[draft] = (first.text, second.text, second.stats.cached_tokens)
    assert turns[True] == turns[False]
    assert turns[True][2] > 0


def test_constrained_tool_calls_with_drafts_are_the_plain_ones(engine):
    tools = builtin_tools()
    source = "def parse_line(row):\n    station, day, rain = row\n    return station, day, float(rain)\n"
    messages = [
        {"role": "system", "content": system_prompt(tools, template_tools=False)},
        {"role": "user", "content": "In rain.py, rename parse_line to parse_row."},
        {"role": "assistant", "content": call_text("read_file", {"path": "rain.py"})},
        {"role": "tool", "content": f"<tool_response>\n{source}\n</tool_response>"},
    ]
    runs = {}
    for draft in (False, True):
        factory = constrain.processor_factory(tools, lazy=False, min_calls=0)
        runs[draft], _ = answer(engine, messages, draft, max_tokens=64, processor_factory=factory)
    assert runs[True].text == runs[False].text
    assert runs[True].text.startswith("<tool_call>")
    # The call's fixed text (its opening, the rest of a tool's name, the keys) is drafted from
    # the grammar, and those drafts hold.
    stats = runs[True].stats
    assert stats.accepted_tokens >= 6 and stats.accepted_tokens >= 0.8 * stats.draft_tokens, stats


def test_json_reports_accepted_drafts(home):
    """The one-shot command as a user runs it (default sampling) reports the drafts it used."""
    import subprocess

    proc = subprocess.run(
        [*SQUISH, "--json", "-p", COPY, "--seed", "3"], capture_output=True, env=squish_env(home), timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)["stats"]
    assert 0 < stats["accepted_tokens"] <= stats["draft_tokens"]
    assert stats["acceptance_rate"] == pytest.approx(stats["accepted_tokens"] / stats["draft_tokens"], abs=1e-3)


def test_the_stderr_stats_line_reports_the_drafts_kept(home):
    import subprocess

    command = [*SQUISH, "-p", COPY, "--temp", "0", "--max-tokens", "32"]
    proc = subprocess.run(command, capture_output=True, env=squish_env(home), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "drafted kept" in proc.stderr.decode() and "drafted kept" not in proc.stdout.decode()
