"""Each model family's tool-call format, read with mlx-lm's own parsers (`mlx_lm/tool_parsers/`).

mlx-lm picks a parser from the chat template when it loads a tokenizer (Hermes/Qwen JSON,
Qwen3-Coder XML, Mistral, Gemma, pythonic, ...). The engine reports that choice in
`ModelInfo.tool_format`; the agent reads replies with `parse`, which cuts out each span
between the format's start and end markers, as mlx-lm's server does, and hands it to the
format's `parse_tool_call`. This module imports mlx-lm, so it lives in the engine package.
"""

import importlib
import json


def tool_format(tokenizer) -> str | None:
    """The mlx-lm tool parser chosen for a loaded tokenizer (None when the template has no tool calls)."""
    inner = getattr(tokenizer, "_tokenizer", tokenizer)
    name = getattr(inner, "init_kwargs", {}).get("tool_parser_type")
    return name if isinstance(name, str) else None


def markers(form: str) -> tuple[str, str]:
    module = importlib.import_module(f"mlx_lm.tool_parsers.{form}")
    return module.tool_call_start, module.tool_call_end


def spans(text: str, start: str, end: str) -> tuple[str, list[str]]:
    """(the text outside the calls, the text of each call)."""
    prose, calls, rest = [], [], text
    while start in rest:
        before, rest = rest.split(start, 1)
        prose.append(before)
        if end and end in rest:
            inside, rest = rest.split(end, 1)
        else:
            inside, rest = rest, ""  # no end marker (Mistral), or cut off by the token limit
        calls.append(inside)
    prose.append(rest)
    return "".join(prose).strip(), calls


def normalize(call) -> dict:
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ValueError(f"a tool call must be an object with a name, got {call!r:.80}")
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):
        arguments = json.loads(arguments) if arguments.strip() else {}
    return {"name": call["name"], "arguments": arguments}


def parse(form: str, text: str, tools: list[dict] | None = None) -> tuple[str, list[dict], str | None]:
    """(prose, calls, error) of a reply in the `form` format; error names what could not be read."""
    module = importlib.import_module(f"mlx_lm.tool_parsers.{form}")
    prose, found = spans(text, module.tool_call_start, module.tool_call_end)
    calls = []
    for inside in found:
        try:
            parsed = module.parse_tool_call(inside, tools)
            calls += [normalize(c) for c in (parsed if isinstance(parsed, list) else [parsed])]
        except Exception as exc:  # each parser raises its own kinds for what it cannot read
            return prose, calls, f"the {form} tool call could not be read: {type(exc).__name__}: {exc}"
    return prose, calls, None
