"""The llguidance grammar and the logits processor, on the embedded model's real tokenizer
(no forward pass: logits come from a seeded random generator, so any valid output is the
constraint's doing)."""

import json

import numpy as np
import pytest

from squish.agent import constrain
from squish.agent.grammar import grammar_text
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


def grammar(tools, form="squish", **options):
    from llguidance import LLMatcher

    return LLMatcher.grammar_from_lark(grammar_text(tools, form, **options))


def matcher(tokenizer, compiled):
    from llguidance import LLMatcher

    m = LLMatcher(constrain.ll_tokenizer(tokenizer), compiled, log_level=0)
    assert not m.is_error(), m.get_error()
    return m


def consumed(m, tokenizer, text) -> bool:
    return all(m.consume_token(t) for t in tokenizer.encode(text))


def test_a_valid_call_is_accepted_then_only_the_end(tokenizer, tools):
    m = matcher(tokenizer, grammar(tools, min_calls=0))
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
    m = matcher(tokenizer, grammar(tools, min_calls=0))
    assert not consumed(m, tokenizer, text)


def test_empty_list_only_when_allowed(tokenizer, tools):
    assert consumed(matcher(tokenizer, grammar(tools, min_calls=0)), tokenizer, "<tool_call>[]")
    assert consumed(matcher(tokenizer, grammar(tools, min_calls=0, max_calls=1)), tokenizer, "<tool_call>[]")
    assert not consumed(
        matcher(tokenizer, grammar(tools, min_calls=1)), tokenizer, "<tool_call>[]"
    )


def test_lazy_grammar_is_free_until_the_call_opens(tokenizer, tools):
    m = matcher(tokenizer, grammar(tools, "json_tools", lazy=True))
    assert consumed(m, tokenizer, "Let me check {not json} first. ")
    assert m.is_accepting()  # a reply without a call may end here
    assert consumed(m, tokenizer, '<tool_call>\n{"name": "list_dir", "arguments": {"path": "."}}\n</tool_call>')
    assert consumed(m, tokenizer, " Done.")
    m = matcher(tokenizer, grammar(tools, "json_tools", lazy=True))
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
                "note": {"type": "string"},  # bounded by the default
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
    factory = constrain.processor_factory(tools, min_calls=1)
    (processor,) = factory(tokenizer)
    rng = np.random.default_rng(seed)
    history = [1, 2, 3]  # the prompt: the first call must not consume it
    generated = []
    for _ in range(400):
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


@pytest.mark.parametrize("seed", range(3))
def test_forced_tokens_are_bytes_the_grammar_then_writes_and_asking_moves_nothing(tokenizer, seed):
    """The engine drafts `forced_after`'s tokens: they must be text the call then has whatever
    the logits say, and asking must leave the matcher where it was."""
    import mlx.core as mx

    (processor,) = constrain.processor_factory(BOUNDED, min_calls=1)(tokenizer)
    rng = np.random.default_rng(seed)
    history = [1, 2, 3]
    promised = []  # (index in generated, the forced text from there)
    generated = []
    for _ in range(400):
        forced = processor.forced_after(history[-1])
        assert processor.forced_after(history[-1]) == forced  # asked twice: nothing consumed
        if forced:
            promised.append((len(generated), tokenizer.decode(forced)))
        logits = mx.array(rng.normal(size=(1, len(tokenizer))).astype(np.float32))
        out = processor(mx.array(history, dtype=mx.uint32), logits)
        # Asked without a token: what is forced from the row just masked on, its own token first.
        if pending := processor.forced_after():
            promised.append((len(generated), tokenizer.decode(pending)))
        token = int(mx.argmax(out, axis=-1).item())
        if token == tokenizer.eos_token_id:
            break
        history.append(token)
        generated.append(token)
    # The opening, asked before the first row (min_calls=1: the list cannot be empty).
    assert promised[0][0] == 0 and promised[0][1].startswith('<tool_call>[{"name": "')
    for start, text in promised:
        assert tokenizer.decode(generated[start:]).startswith(text), (start, text)
    assert parse(tokenizer.decode(generated)).calls and processor.error == ""


def test_nothing_is_forced_once_the_constraint_is_off(tokenizer):
    import mlx.core as mx

    (processor,) = constrain.processor_factory(BOUNDED, min_calls=1)(tokenizer)
    logits = mx.zeros((1, len(tokenizer)))
    processor(mx.array([1], dtype=mx.uint32), logits)
    processor(mx.array([1, tokenizer.eos_token_id], dtype=mx.uint32), logits)  # a token it forbids
    assert processor.error and processor.forced_after(5) == []


PLACE = Tool(
    "get_precipitation",
    "Average precipitation of a place over a period.",
    {
        "type": "object",
        "properties": {
            "place": {"type": "string"},
            "period": {"type": "string", "enum": ["last_week", "6_months"]},
            "note": {"type": "string", "maxLength": 10},
        },
        "required": ["place", "period"],
    },
)


def place_call(place, note=None):
    arguments = {"place": place, "period": "6_months", **({"note": note} if note is not None else {})}
    return "<tool_call>" + json.dumps([{"name": PLACE.name, "arguments": arguments}])


def test_free_strings_are_bounded_by_max_length_or_the_default(tokenizer):
    from squish.agent.grammar import DEFAULT_MAX_STRING

    bounded = grammar([PLACE], max_calls=1)
    assert consumed(matcher(tokenizer, bounded), tokenizer, place_call("x" * DEFAULT_MAX_STRING))
    assert not consumed(matcher(tokenizer, bounded), tokenizer, place_call("x" * (DEFAULT_MAX_STRING + 1)))
    assert not consumed(matcher(tokenizer, bounded), tokenizer, place_call("Paris", note="x" * 11))
    assert consumed(matcher(tokenizer, grammar([PLACE], bounds=False)), tokenizer, place_call("x" * 300))


def test_copied_strings_are_pieces_of_the_sources(tokenizer, tools):
    sources = ['Average rain in the "Amazon rainforest" over 6 months?']
    copied = grammar([PLACE], sources=sources, copy=True)
    assert consumed(matcher(tokenizer, copied), tokenizer, place_call("Amazon rainforest"))
    assert consumed(matcher(tokenizer, copied), tokenizer, place_call("6 months"))
    assert not consumed(matcher(tokenizer, copied), tokenizer, place_call("6 months?"))  # not the sentence's "?"
    assert not consumed(matcher(tokenizer, copied), tokenizer, place_call("Amaz"))  # whole words only
    assert not consumed(matcher(tokenizer, copied), tokenizer, place_call("Amazon_Rainforest_2022"))
    def path_grammar(name, source="Show me notes.txt"):
        return grammar([t for t in tools if t.name == name], sources=[source], copy=True)

    text = '<tool_call>[{"name": "%s", "arguments": {"path": "%s"}}]'
    assert consumed(matcher(tokenizer, path_grammar("read_file")), tokenizer, text % ("read_file", "notes.txt"))
    assert not consumed(matcher(tokenizer, path_grammar("read_file")), tokenizer, text % ("read_file", "other.txt"))
    # "." (the workspace) where the schema says so: a folder's path, not a file's.
    assert consumed(matcher(tokenizer, path_grammar("list_dir", "Show me README")), tokenizer, text % ("list_dir", "."))
    assert not consumed(
        matcher(tokenizer, path_grammar("read_file", "Show me README")), tokenizer, text % ("read_file", ".")
    )


def test_one_call_unless_more_are_allowed(tokenizer, tools):
    two = '<tool_call>[{"name": "list_dir", "arguments": {"path": "."}}, {"name": "list_dir", "arguments": {"path": "src"}}]'
    assert not consumed(matcher(tokenizer, grammar(tools, max_calls=1)), tokenizer, two)
    assert consumed(matcher(tokenizer, grammar(tools, max_calls=2)), tokenizer, two)
    at_least_two = matcher(tokenizer, grammar(tools, min_calls=2, max_calls=4))
    assert consumed(at_least_two, tokenizer, two.split("}, {")[0] + "}")
    assert not consumed(at_least_two, tokenizer, "]")  # a second call must follow


def test_optional_arguments_may_be_left_out_in_order(tokenizer):
    tool = Tool("f", "", {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}})
    for arguments, ok in (("{}", True), ('{"a": "x"}', True), ('{"b": 3}', True), ('{"a": "x", "b": 3}', True)):
        text = '<tool_call>[{"name": "f", "arguments": ' + arguments + "}]"
        assert consumed(matcher(tokenizer, grammar([tool])), tokenizer, text) is ok


def test_hermes_form_without_free_text_must_open_with_the_call(tokenizer, tools):
    forced = grammar(tools, "json_tools", lazy=False, max_calls=1)
    call = '<tool_call>\n{"name": "list_dir", "arguments": {"path": "."}}\n</tool_call>'
    assert consumed(matcher(tokenizer, forced), tokenizer, call)
    assert not consumed(matcher(tokenizer, forced), tokenizer, "Sure. " + call)


@pytest.mark.parametrize(
    "text, why",
    [
        ("Amazon_Rainforest_6_Months_Average_Data_2022_2023_2024", "counting"),
        ("Amazon rainforest item1 item2 item3 item4", "counting"),
        ("Amazon_Data_Data_Data_Data_", "repeating"),
        ("Amazon rainforest", ""),
        ("version 1.2.3 of it", ""),
        ("a ================ rule", ""),
    ],
)
def test_runaway_strings_are_recognised(text, why):
    assert constrain.runaway(text) == why


def test_processor_closes_a_string_that_starts_counting(tokenizer):
    import mlx.core as mx

    factory = constrain.processor_factory([PLACE], min_calls=1, max_calls=1)
    (processor,) = factory(tokenizer)
    logits = mx.zeros((1, len(tokenizer)))
    prefix = '<tool_call>[{"name": "get_precipitation", "arguments": {"place": "Amazon_Data_2022_2023_2024'
    history = [1]
    processor(mx.array(history, dtype=mx.uint32), logits)
    for token in tokenizer.encode(prefix):
        history.append(token)
        out = processor(mx.array(history, dtype=mx.uint32), logits)
    allowed = np.flatnonzero(np.array(out[0]) > -1e30)
    assert allowed.size and all(tokenizer.decode([int(t)]).startswith('"') for t in allowed)
    assert processor.runaways == ["counting"]


def test_a_calls_token_limit_follows_its_schema(tools):
    from squish.agent.grammar import DEFAULT_MAX_STRING

    factory = constrain.processor_factory([PLACE], max_calls=1)
    assert DEFAULT_MAX_STRING < factory.max_chars < 512
    copied = constrain.processor_factory([PLACE], max_calls=1, sources=["Rain in Oslo?"], copy=True)
    assert copied.max_chars < factory.max_chars


def test_a_path_named_in_the_request_is_the_path(tokenizer, tools):
    write = grammar([t for t in tools if t.name == "write_file"], sources=["Write 'buy milk' to todo.txt."], copy=True)
    text = '<tool_call>[{"name": "write_file", "arguments": {"path": "%s", "content": "buy milk"}}]'
    assert consumed(matcher(tokenizer, write), tokenizer, text % "todo.txt")
    assert not consumed(matcher(tokenizer, write), tokenizer, text % "buy milk")


TIMER = Tool(
    "set_timer",
    "Start a timer.",
    {"type": "object", "properties": {"minutes": {"type": "integer", "minimum": 1, "maximum": 60}}, "required": ["minutes"]},
)
WEATHER = Tool(
    "get_weather",
    "Weather.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
)


def test_numbers_are_those_of_the_request_that_the_schema_takes(tokenizer):
    timer = grammar([TIMER], sources=["In 25 minutes, not 90, ring the timer."], copy=True)
    text = '<tool_call>[{"name": "set_timer", "arguments": {"minutes": %s}}]'
    assert consumed(matcher(tokenizer, timer), tokenizer, text % "25")
    assert not consumed(matcher(tokenizer, timer), tokenizer, text % "10")
    assert not consumed(matcher(tokenizer, timer), tokenizer, text % "90")  # above the maximum
    free = grammar([TIMER], sources=["Ring the timer."], copy=True)  # no number given: any the schema takes
    assert consumed(matcher(tokenizer, free), tokenizer, text % "10")


def test_a_choice_the_request_names_is_taken_and_written(tokenizer):
    named = grammar([WEATHER], sources=["Weather in Tokyo in Fahrenheit?"], copy=True)
    text = '<tool_call>[{"name": "get_weather", "arguments": {"city": "Tokyo"%s}}]'
    assert consumed(matcher(tokenizer, named), tokenizer, text % ', "unit": "fahrenheit"')
    assert not consumed(matcher(tokenizer, named), tokenizer, text % ', "unit": "celsius"')
    assert not consumed(matcher(tokenizer, named), tokenizer, text % "")  # named, so not left out
    unnamed = grammar([WEATHER], sources=["Weather in Tokyo?"], copy=True)
    assert consumed(matcher(tokenizer, unnamed), tokenizer, text % "")
