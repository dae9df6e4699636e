"""A tolerant tool-call parser for what models actually write.

Accepted: `<tool_call>{...}</tool_call>` and `<tool_call>[{...}, ...]</tool_call>` (SmolLM2,
Qwen, Hermes), the closing tag optional at the end (a stop string may have eaten it);
`<|python_tag|>{...}` (Llama 3.1); a reply that is nothing but a call object; code fences
around the JSON; "parameters" for "arguments"; arguments given as a JSON string; OpenAI's
{"function": {...}} nesting; JSON cut short by the token limit, closed when that is enough.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


@dataclass
class ParsedReply:
    text: str  # the reply without its tool calls
    calls: list[dict] = field(default_factory=list)  # {"name": str, "arguments": Any}
    error: str | None = None  # a call was attempted but could not be read

    @property
    def opened_call(self) -> bool:
        return bool(self.calls) or self.error is not None


def close_json(text: str) -> str:
    """Append the quotes and brackets that a truncated JSON text leaves open."""
    stack, in_string, escaped = [], False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]" and stack:
            stack.pop()
    return text + ('"' if in_string else "") + "".join(reversed(stack))


def load_json(text: str) -> Any:
    """The first JSON value in `text` (trailing text ignored); ValueError when there is none."""
    text = FENCE.sub("", text.strip()).strip()
    decoder = json.JSONDecoder()
    try:
        return decoder.raw_decode(text)[0]
    except ValueError as first:
        try:
            return decoder.raw_decode(close_json(text.rstrip().rstrip(",")))[0]
        except ValueError:
            raise first from None


def normalize(item: Any) -> dict:
    """{"name", "arguments"} from one call object; ValueError naming what is wrong."""
    if not isinstance(item, dict):
        raise ValueError(f"a tool call must be a JSON object, got {type(item).__name__}")
    if isinstance(item.get("function"), dict) and "name" not in item:
        item = item["function"]
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError('the tool call has no "name" string')
    extra = sorted(set(item) - {"name", "arguments", "parameters", "id", "type"})
    if extra:
        raise ValueError(f'the tool call has unexpected keys {extra}; use only "name" and "arguments"')
    arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise ValueError('"arguments" is a string that is not a JSON object') from None
    return {"name": name, "arguments": arguments}


def read_calls(body: str) -> list[dict]:
    try:
        value = load_json(body)
    except ValueError as exc:
        raise ValueError(f"the tool call is not valid JSON: {exc}") from None
    items = value if isinstance(value, list) else [value]
    return [normalize(item) for item in items]  # [] is SmolLM2's "no call needed"


def looks_like_call(value: Any) -> bool:
    items = value if isinstance(value, list) and value else [value]
    return all(isinstance(i, dict) and "name" in i and ({"arguments", "parameters"} & set(i)) for i in items)


def parse(reply: str, form: str = "squish", tools: list[dict] | None = None) -> ParsedReply:
    """The calls of a reply. `form`: squish's own and Hermes/Qwen JSON are read here, tolerantly;
    any other family's format (an mlx-lm parser name) by mlx-lm's parser for it."""
    if form not in ("squish", "json_tools"):
        from squish.engine.toolformat import parse as parse_format

        prose, calls, error = parse_format(form, reply, tools)
        return ParsedReply(prose, calls, error)
    if OPEN in reply:
        prose, calls = [], []
        rest = reply
        while OPEN in rest:
            before, rest = rest.split(OPEN, 1)
            prose.append(before)
            body, found_close, after = rest.partition(CLOSE)
            try:
                calls.extend(read_calls(body))
            except ValueError as exc:
                return ParsedReply("".join(prose).strip(), calls, str(exc))
            rest = after if found_close else ""
        prose.append(rest)
        return ParsedReply("".join(prose).strip(), calls)
    stripped = reply.strip()
    if stripped.startswith(PYTHON_TAG):
        try:
            return ParsedReply("", read_calls(stripped[len(PYTHON_TAG) :]))
        except ValueError as exc:
            return ParsedReply("", [], str(exc))
    bare = FENCE.sub("", stripped).strip()
    if bare.startswith(("{", "[")):
        try:
            value = load_json(bare)
        except ValueError:
            return ParsedReply(reply.strip())
        if looks_like_call(value):
            try:
                return ParsedReply("", read_calls(bare))
            except ValueError as exc:
                return ParsedReply("", [], str(exc))
    return ParsedReply(reply.strip())
