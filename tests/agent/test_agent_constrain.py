"""The llguidance grammar and the logits processor, on the embedded model's real tokenizer
(no forward pass: logits come from a seeded random generator, so any valid output is the
constraint's doing)."""

import json

import numpy as np
import pytest

from squish.agent import constrain
from squish.agent.parser import parse
from squish.agent.tools import Registry, Tool, builtin_tools


@pytest.fixture(scope="module")
def tokenizer(model_home):
    from helpers import import_embedded
    from transformers import AutoTokenizer

    model_dir = import_embedded(model_home)
    return AutoTokenizer.from_pretrained(str(model_dir))


@pytest.fixture(scope="module")
def tools():
    return builtin_tools()


def matcher(tokenizer, grammar_text):
    from llguidance import LLMatcher

    m = LLMatcher(constrain.ll_tokenizer(tokenizer), grammar_text, log_level=0)
    assert not m.is_error(), m.get_error()
    return m


def consumed(m, tokenizer, text) -> bool:
    return all(m.consume_token(t) for t in tokenizer.encode(text))


def test_a_valid_call_is_accepted_then_only_the_end(tokenizer, tools):
    m = matcher(tokenizer, constrain.grammar(tools, lazy=False, min_calls=0))
    assert consumed(m, tokenizer, '<tool_call>[{"name": "read_file", "arguments": {"path": "notes.txt"}}]')
    assert m.is_accepting()
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

    mask = allocate_token_bitmask(1, constrain.ll_tokenizer(tokenizer).vocab_size)
    fill_next_token_bitmask(m, mask)
    allowed = np.flatnonzero(np.unpackbits(mask.view(np.uint8), bitorder="little"))
    assert allowed.tolist() == [tokenizer.eos_token_id]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>[{"name": "delete_all"',  # not a tool
        '<tool_call>[{"name": "read_file", "arguments": {"path": 5',  # path must be a string
        '<tool_call>[{"name": "read_file", "arguments": {"file": ',  # unknown argument
        '<tool_call>[{"name": "list_dir", "arguments": {}}]',  # path is required
        "Sure! <tool_call>",  # not lazy: the reply must start with the call
    ],
)
def test_invalid_calls_cannot_be_written(tokenizer, tools, text):
    m = matcher(tokenizer, constrain.grammar(tools, lazy=False, min_calls=0))
    assert not consumed(m, tokenizer, text)


def test_empty_list_only_when_allowed(tokenizer, tools):
    assert consumed(matcher(tokenizer, constrain.grammar(tools, lazy=False, min_calls=0)), tokenizer, "<tool_call>[]")
    assert not consumed(
        matcher(tokenizer, constrain.grammar(tools, lazy=False, min_calls=1)), tokenizer, "<tool_call>[]"
    )


def test_lazy_grammar_is_free_until_the_call_opens(tokenizer, tools):
    m = matcher(tokenizer, constrain.grammar(tools, lazy=True))
    assert consumed(m, tokenizer, "Let me check {not json} first. ")
    assert m.is_accepting()  # a reply without a call may end here
    assert consumed(m, tokenizer, '<tool_call>\n{"name": "list_dir", "arguments": {"path": "."}}\n</tool_call>')
    assert consumed(m, tokenizer, " Done.")
    m = matcher(tokenizer, constrain.grammar(tools, lazy=True))
    assert not consumed(m, tokenizer, "Let me check. <tool_call>{oops")


def test_check_reports_schemas_llguidance_refuses(tools):
    assert constrain.check(tools) == ""
    bad = Tool("bad", "", {"type": "object", "properties": {"x": {"type": "string", "pattern": "(?<=a)b"}}})
    assert constrain.check([bad]) != ""


BOUNDED = [
    Tool(
        "pick",
        "Pick.",
        {
            "type": "object",
            "properties": {
                "color": {"enum": ["red", "green", "blue"]},
                "n": {"type": "integer", "minimum": 0, "maximum": 9},
                "flag": {"type": "boolean"},
                "tag": {"type": "string", "maxLength": 6},
            },
            "required": ["color", "n"],
            "additionalProperties": False,
        },
    ),
    Tool("stop", "Stop.", {"type": "object", "properties": {}, "additionalProperties": False}),
]


@pytest.mark.parametrize("seed", range(6))
def test_processor_turns_random_logits_into_valid_calls(tokenizer, seed):
    """Random logits would write strings forever, so these tools have bounded arguments."""
    import mlx.core as mx

    tools = BOUNDED
    factory = constrain.processor_factory(tools, lazy=False, min_calls=1)
    (processor,) = factory(tokenizer)
    rng = np.random.default_rng(seed)
    history = [1, 2, 3]  # the prompt: the first call must not consume it
    generated = []
    for _ in range(120):
        logits = mx.array(rng.normal(size=(1, len(tokenizer))).astype(np.float32))
        out = processor(mx.array(history, dtype=mx.uint32), logits)
        assert bool(mx.all(mx.isfinite(out)))  # the engine treats -inf as a broken model
        assert not bool(mx.array_equal(out, logits))  # not lazy: every step is masked
        token = int(mx.argmax(out, axis=-1).item())
        if token == tokenizer.eos_token_id:
            break
        history.append(token)
        generated.append(token)
    else:
        pytest.fail("the constraint never allowed the end")
    text = tokenizer.decode(generated)
    reply = parse(text)
    assert reply.error is None and reply.calls, text
    registry = Registry(tools)
    for call in reply.calls:
        assert registry.get(call["name"]).errors(call["arguments"]) == [], text
    assert processor.error == ""
    json.dumps(reply.calls)
