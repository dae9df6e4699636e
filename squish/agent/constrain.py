"""Constrained decoding of tool calls with llguidance.

Once the model writes `<tool_call>`, every following token is masked so that the text is
JSON matching the tool-call schema (a name among the tools, arguments per that tool's
schema, one call or a list of calls) and then `</tool_call>`. Before the trigger the text
is free (llguidance's lazy lexeme). Not lazy, the reply must be a call from its first token,
and it ends right after the JSON.

The processor is mlx-lm style, `processor(tokens, logits) -> logits`, and runs on the engine
thread: `processor_factory(tools)` returns the function that `ChatRequest.processor_factory`
calls there with the engine's tokenizer, so the tokenizer never leaves that thread.
"""

import json
import threading
import weakref

from .parser import CLOSE, OPEN

# Compact JSON in the spacing models write by themselves: `{"name": "x", "arguments": {...}}`.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
MAX_CALLS = 4  # calls in one reply

_tokenizers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_tokenizers_lock = threading.Lock()


def call_schema(tools) -> dict:
    """One call: {"name": <a tool>, "arguments": <that tool's schema>}."""
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for tool in tools
        ]
    }


def grammar(tools, lazy: bool = True, min_calls: int = 1) -> str:
    """The llguidance grammar (Lark with an embedded JSON schema) for replies with tool calls.

    lazy: free text until the model writes `<tool_call>`, then one call or a list of calls.
    Not lazy: the reply is a call; with min_calls=0 it is a list, where `[]` means "no call"
    (SmolLM2's trained format).
    """
    from llguidance import LLMatcher

    one = call_schema(tools)
    calls = {"type": "array", "items": one, "minItems": min_calls, "maxItems": MAX_CALLS}
    body = calls if min_calls == 0 else {"anyOf": [one, calls]}
    body["x-guidance"] = JSON_STYLE
    if not lazy:
        # The reply ends with the JSON: the end of text is forced next, which saves generating
        # the closing tag token by token (squish adds it back in the conversation).
        lark = f"%llguidance {{}}\nstart: {json.dumps(OPEN)} /\\n?/ %json {json.dumps(body)}\n"
    else:
        call = f"/\\n?/ %json {json.dumps(body)} /\\n?/ {json.dumps(CLOSE)}"
        lark = (
            "%llguidance {}\n"
            "start: (call)* TEXT\n"
            f"call_open[lazy]: TEXT {json.dumps(OPEN)}\n"
            f"call: call_open {call}\n"
            "TEXT: /(.|\\n)*/\n"
        )
    return LLMatcher.grammar_from_lark(lark)


def check(tools) -> str:
    """An empty string when llguidance accepts the schemas, else why it does not."""
    from llguidance import LLMatcher

    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar(tools))
    return messages[0] if is_error else ""


def ll_tokenizer(tokenizer):
    """The llguidance tokenizer for an mlx-lm TokenizerWrapper or HF tokenizer (built once, ~0.5 s)."""
    import llguidance.hf
    from transformers import PreTrainedTokenizerFast

    # mlx-lm's TokenizerWrapper keeps the HF tokenizer in `_tokenizer` (an HF fast tokenizer
    # keeps its Rust tokenizer under the same name, hence the check).
    hf = tokenizer if isinstance(tokenizer, PreTrainedTokenizerFast) else tokenizer._tokenizer
    with _tokenizers_lock:
        built = _tokenizers.get(hf)
        if built is None:
            built = _tokenizers[hf] = llguidance.hf.from_tokenizer(hf)
        return built


class ToolCallConstraint:
    """Masks logits so that tool calls follow the grammar. One instance per generation."""

    def __init__(self, tokenizer, grammar_text: str):
        from llguidance import LLMatcher
        from llguidance.numpy import allocate_token_bitmask

        lltok = ll_tokenizer(tokenizer)
        self.matcher = LLMatcher(lltok, grammar_text, log_level=0)
        if self.matcher.is_error():
            raise ValueError(f"constrained decoding: {self.matcher.get_error()}")
        self.vocab_size = lltok.vocab_size
        self.bitmask = allocate_token_bitmask(1, self.vocab_size)
        self.started = False
        self.error = ""  # set when the model's token could not be matched (constraint then off)

    def __call__(self, tokens, logits):
        import numpy as np
        from llguidance.numpy import fill_next_token_bitmask

        from ..engine.sampling import mask_logits

        if self.started and not self.error:
            # The engine passes all tokens so far; the last is the one sampled on the previous step.
            if not self.matcher.consume_token(int(tokens[-1].item())):
                self.error = self.matcher.get_error()
        self.started = True
        if self.error:
            return logits
        fill_next_token_bitmask(self.matcher, self.bitmask)
        allowed = np.unpackbits(self.bitmask.view(np.uint8), bitorder="little")
        width = logits.shape[-1]
        if width > allowed.size:
            allowed = np.concatenate([allowed, np.zeros(width - allowed.size, np.uint8)])
        allowed = allowed[:width]
        if allowed.all():
            return logits
        return mask_logits(logits, allowed.astype(np.bool_))


def processor_factory(tools, lazy: bool = True, min_calls: int = 1):
    """A `ChatRequest.processor_factory`: builds a fresh constraint on the engine thread."""
    grammar_text = grammar(tools, lazy, min_calls)

    def factory(tokenizer) -> list:
        return [ToolCallConstraint(tokenizer, grammar_text)]

    factory.lazy, factory.min_calls = lazy, min_calls  # what it constrains, for the loop's tests
    return factory
