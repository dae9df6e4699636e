"""Grammars for tool calls, written out per tool so every argument can be bounded.

A call is `{"name": "<tool>", "arguments": {...}}` with the arguments in the schema's order
(required ones always, optional ones may be left out). Each free-text string is bounded:
by the schema's `maxLength`, else `DEFAULT_MAX_STRING` characters, so a call of two short
arguments cannot run on for hundreds of tokens. With `copy`, a string argument must be a
piece of the given sources (the user's words), or "." for a path. Every other value
(numbers, enums, arrays, objects) is an inline `%json` schema. A schema this cannot write
out (`$ref`, `anyOf` at the top) goes to `%json` whole.

Forms (the model family's own call syntax):
- "squish": SmolLM2's trained format, the whole reply is `<tool_call>[call, ...]`, where
  `[]` means "no call" when min_calls is 0 (squish adds `</tool_call>` back).
- "json_tools": Hermes/Qwen JSON, free text until the model writes `<tool_call>`, then
  `\\n{call}\\n</tool_call>`, any number of times.
"""

import json
import re

DEFAULT_MAX_STRING = 128  # characters of a string argument whose schema sets no maxLength
MAX_CALLS = 4
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
STRING_ONLY = {"type", "description", "title", "maxLength", "minLength", "default", "examples"}
OPEN, CLOSE = "<tool_call>", "</tool_call>"
FORMS = ("squish", "json_tools")  # the call formats with a grammar


def lark_string(text: str) -> str:
    return json.dumps(text)


EDGE = re.compile(r'^(?:[.,;:!?\'()]|\\")+|(?:[.,;:!?\'()]|\\")+$')


def chunks(text: str) -> list[str]:
    """The JSON-escaped text in pieces (escapes kept whole), for llguidance's substring lexeme.

    A piece is a whole word with what joins it ("config.json", "2025-03-14", "bob@example.com")
    or a run of spaces; punctuation at a word's edge ("notes.txt." ending a sentence, 'quotes')
    is left out. A copied value is then whole words, never a lone "." or a trailing "?".
    """
    escaped = json.dumps(text, ensure_ascii=False)[1:-1]
    pieces = re.findall(r"(?:\\[ntr]| )+|(?:\\u[0-9a-fA-F]{4}|\\[^ntru]|[^ \\])+", escaped)
    kept = []
    for piece in pieces:
        if piece[0] != " " and not piece.startswith(("\\n", "\\t", "\\r")):
            piece = EDGE.sub("", piece)
        if piece:
            kept.append(piece)
    return kept


PATH = re.compile(r"(?:[\w.~-]*/[\w./~-]*|[\w~-][\w.~-]*\.[A-Za-z0-9]{1,10})(?![\w/])")
NUMBER = re.compile(r"(?<![\w.-])-?\d+(?:\.\d+)?(?![\w.]*\w)")


def path_words(text: str) -> list[str]:
    """Words that look like paths: with a folder separator or a file extension ("notes.txt", "src/")."""
    return [p.rstrip(".") for p in PATH.findall(text) if p.rstrip(".") and not p.rstrip(".").replace(".", "").isdigit()]


def is_path(key: str, schema: dict) -> bool:
    return "path" in key.lower() or key.lower() in ("file", "filename", "dir", "directory", "folder") or (
        "path" in str(schema.get("description", "")).lower()
    )


def is_free_string(schema) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "string" and set(schema) <= STRING_ONLY


def string_bound(schema: dict) -> int:
    return int(schema.get("maxLength", DEFAULT_MAX_STRING))


def simple(parameters: dict) -> bool:
    """Whether the arguments schema can be written out property by property."""
    text = json.dumps(parameters)
    return (
        parameters.get("type") == "object"
        and isinstance(parameters.get("properties", {}), dict)
        and "$ref" not in text
        and not {"anyOf", "oneOf", "allOf", "patternProperties", "dependentRequired"} & set(parameters)
    )


def json_rule(schema: dict) -> str:
    return f"%json {json.dumps({**schema, 'x-guidance': JSON_STYLE})}"


class Builder:
    """Collects the rules of one grammar."""

    def __init__(self, sources: list[str] = (), copy: bool = False, bounds: bool = True):
        from .choose import words

        self.rules: list[str] = []
        self.copy = copy and any(s.strip() for s in sources)
        self.bounds = bounds
        self.pieces = [c for source in sources for c in chunks(source)] if self.copy else []
        self.paths = list(dict.fromkeys(p for source in sources for p in path_words(source))) if self.copy else []
        self.numbers = [n for source in sources for n in NUMBER.findall(source)] if self.copy else []
        self.words = set().union(*(words(source) for source in sources)) if self.copy else set()
        self.count = 0

    def rule(self, body: str) -> str:
        self.count += 1
        name = f"r{self.count}"
        self.rules.append(f"{name}: {body}")
        return name

    def string(self, key: str, schema: dict) -> str:
        if self.copy and self.pieces:
            # "." (the workspace) only where the schema says a path may be it.
            dot = [lark_string(".")] if "'.'" in str(schema.get("description", "")) else []
            if is_path(key, schema) and self.paths:
                # A path named in the request ("notes.txt", "src/") is the path, not any words.
                choices = [lark_string(json.dumps(p, ensure_ascii=False)[1:-1]) for p in self.paths] + dot
            else:
                choices = [f"%regex {json.dumps({'substring_chunks': self.pieces})}"] + dot
            return self.rule(f'"\\"" ({" | ".join(choices)}) "\\""')
        if self.bounds:
            return self.rule(json_rule({"type": "string", "maxLength": string_bound(schema)}))
        return self.rule(json_rule({"type": "string"}))

    def named_options(self, schema) -> list:
        """The enum values the request names (most shared words), when it names any."""
        from .choose import words

        if not self.copy or not isinstance(schema, dict) or not isinstance(schema.get("enum"), list):
            return []
        shared = {v: len(words(str(v).replace("_", " ")) & self.words) for v in schema["enum"] if isinstance(v, str)}
        best = max(shared.values(), default=0)
        return [v for v, n in shared.items() if n == best] if best else []

    def copied_numbers(self, schema) -> list:
        """The numbers in the request that the schema accepts, for a number argument."""
        if not self.copy or not isinstance(schema, dict) or schema.get("type") not in ("integer", "number"):
            return []
        if set(schema) - {"type", "description", "title", "minimum", "maximum", "default", "examples"}:
            return []
        found = []
        for text in self.numbers:
            value = float(text)
            if schema["type"] == "integer":
                if not value.is_integer():
                    continue
                value = int(value)
            if schema.get("minimum", value) <= value <= schema.get("maximum", value) and value not in found:
                found.append(value)
        return found

    def value(self, key: str, schema) -> str:
        if is_free_string(schema):
            return self.string(key, schema)
        if options := self.named_options(schema):
            return self.rule(" | ".join(lark_string(json.dumps(v, ensure_ascii=False)) for v in options))
        if numbers := self.copied_numbers(schema):
            return self.rule(" | ".join(lark_string(json.dumps(n)) for n in numbers))
        if not isinstance(schema, dict) or not schema:
            return self.rule(json_rule({}))
        return self.rule(json_rule(schema))

    def arguments(self, parameters: dict) -> str:
        if not simple(parameters):
            return self.rule(json_rule(parameters))
        properties = parameters.get("properties", {})
        # An optional choice the request names is written, not left out ("... in fahrenheit").
        required = set(parameters.get("required", [])) | {k for k, v in properties.items() if self.named_options(v)}
        if not properties:
            return self.rule(lark_string("{}"))
        # Required arguments first, in schema order, then the optional ones, each optional.
        ordered = [k for k in properties if k in required] + [k for k in properties if k not in required]
        pairs = [f"{lark_string(json.dumps(k) + ': ')} {self.value(k, properties[k])}" for k in ordered]
        comma = lark_string(", ")
        if required:
            parts = [pairs[0]] + [
                f"{comma} {pair}" if key in required else f"({comma} {pair})?"
                for key, pair in zip(ordered[1:], pairs[1:])
            ]
            return self.rule(f'{lark_string("{")} {" ".join(parts)} {lark_string("}")}')
        # No required argument: any of them in order, the first one written without a comma.
        firsts = [
            " ".join([pairs[i]] + [f"({comma} {pair})?" for pair in pairs[i + 1 :]]) for i in range(len(pairs))
        ]
        return self.rule(f'{lark_string("{")} ({" | ".join(firsts)})? {lark_string("}")}')

    def call(self, tool) -> str:
        head = lark_string(f'{{"name": {json.dumps(tool.name)}, "arguments": ')
        return self.rule(f"{head} {self.arguments(tool.parameters)} {lark_string('}')}")

    def calls(self, tools, min_calls: int, max_calls: int) -> str:
        one = self.rule(" | ".join(self.call(tool) for tool in tools))
        extra = max(min_calls, 1) - 1  # calls required after the first
        more = f' ({lark_string(", ")} {one}){{{extra},{max_calls - 1}}}' if max_calls > 1 else ""
        listed = f'{lark_string("[")} {one}{more} {lark_string("]")}'
        return self.rule(listed if min_calls else f'{listed} | {lark_string("[]")}')


def grammar_text(
    tools,
    form: str = "squish",
    min_calls: int = 1,
    max_calls: int = MAX_CALLS,
    sources: list[str] = (),
    copy: bool = False,
    bounds: bool = True,
    lazy: bool = False,
) -> str:
    """The Lark text of the grammar (see the module docstring). Not lazy, a json_tools reply is calls only."""
    builder = Builder(sources, copy, bounds)
    if form == "squish":
        body = builder.calls(tools, min_calls, max_calls)
        start = f"start: {lark_string(OPEN)} {body}"
    elif form == "json_tools":
        one = builder.rule(" | ".join(builder.call(tool) for tool in tools))
        if lazy:
            builder.rules.append(f"call_open[lazy]: TEXT {lark_string(OPEN)}")
            call = builder.rule(f"call_open /\\n?/ {one} /\\n?/ {lark_string(CLOSE)}")
            builder.rules.append("TEXT: /(.|\\n)*/")
            start = f"start: ({call}){{0,{max_calls}}} TEXT"
        else:
            call = builder.rule(f"{lark_string(OPEN)} /\\n?/ {one} /\\n?/ {lark_string(CLOSE)}")
            more = f" (/\\n?/ {call}){{0,{max_calls - 1}}}" if max_calls > 1 else ""
            start = f"start: {call}{more}"
    else:
        raise ValueError(f"no grammar for the {form!r} call format")
    return "%llguidance {}\n" + start + "\n" + "\n".join(builder.rules) + "\n"


def call_chars(tool, sources: list[str] = (), copy: bool = False) -> int:
    """The most characters one call to `tool` can take under its grammar (a token is at least one)."""
    text = json.dumps({"name": tool.name, "arguments": {}})
    total = len(text)
    parameters = tool.parameters
    if not simple(parameters):
        return total + 2000
    longest_source = max((len(json.dumps(s)) for s in sources), default=0)
    for key, schema in parameters.get("properties", {}).items():
        total += len(json.dumps(key)) + 4
        if is_free_string(schema):
            total += 2 + (longest_source if copy and longest_source else 6 * string_bound(schema) // 5)
        elif isinstance(schema, dict) and "enum" in schema:
            total += max(len(json.dumps(v)) for v in schema["enum"])
        elif isinstance(schema, dict) and schema.get("type") in ("integer", "number", "boolean"):
            total += 24
        else:
            total += 1000
    return total
