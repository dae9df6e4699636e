"""Constrained decoding of tool calls with llguidance.

The grammar (squish.agent.grammar) follows the model's own call syntax: in squish's form
every reply is a call list from its first token; in the Hermes/Qwen form the text is free
until the model writes `<tool_call>`, then each token is masked so that the call is JSON
matching one of the tools' schemas, with every free-text string bounded.

The processor also ends runaway strings: when the string being written starts counting
(`..._2022_2023_2024`) or repeating a chunk, only tokens that close the string (and that the
grammar allows) stay possible. A call of two short arguments then ends in a few tokens
instead of running on to the token limit.

The processor is mlx-lm style, `processor(tokens, logits) -> logits`, and runs on the engine
thread: `processor_factory(...)` returns the function that `ChatRequest.processor_factory`
calls there with the engine's tokenizer, so the tokenizer never leaves that thread.
"""

import re
import threading
import weakref

from . import grammar as grammars
from .grammar import OPEN

_tokenizers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_tokenizers_lock = threading.Lock()

NUMBER = re.compile(r"\d+")


def check(tools, form: str = "squish") -> str:
    """An empty string when llguidance accepts the tools' grammar, else why it does not."""
    from llguidance import LLMatcher

    text = grammars.grammar_text(tools, form)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(LLMatcher.grammar_from_lark(text))
    return messages[0] if is_error else ""


def ll_tokenizer(tokenizer):
    """The llguidance tokenizer for an mlx-lm TokenizerWrapper or HF tokenizer (built once, ~0.5 s)."""
    return _built(tokenizer)[0]


def _built(tokenizer):
    """(llguidance tokenizer, ids of the tokens that start with a quote), built once per tokenizer."""
    import llguidance.hf
    from transformers import PreTrainedTokenizerFast

    # mlx-lm's TokenizerWrapper keeps the HF tokenizer in `_tokenizer` (an HF fast tokenizer
    # keeps its Rust tokenizer under the same name, hence the check).
    hf = tokenizer if isinstance(tokenizer, PreTrainedTokenizerFast) else tokenizer._tokenizer
    with _tokenizers_lock:
        built = _tokenizers.get(hf)
        if built is None:
            lltok = llguidance.hf.from_tokenizer(hf)
            quotes = [i for i in range(lltok.vocab_size) if lltok.decode_bytes([i]).startswith(b'"')]
            built = _tokenizers[hf] = (lltok, quotes)
        return built


def runaway(text: str) -> str:
    """Why the string being written has run away ("counting", "repeating"), or ""."""
    if len(text) < 12:
        return ""
    numbers = [int(n) for n in NUMBER.findall(text[-80:]) if len(n) <= 9][-4:]
    steps = [b - a for a, b in zip(numbers, numbers[1:])]
    if len(steps) >= 2 and steps[-1] == steps[-2] and abs(steps[-1]) == 1 and (len(steps) == 3 or numbers[-1] >= 10):
        return "counting"  # 2022_2023_2024, item1 item2 item3 item4 (not "version 1.2.3")
    if len(steps) == 3 and steps[0] == steps[1] == steps[2] != 0:
        return "counting"  # 10_20_30_40
    for period in range(2, 25):
        times = max(4, -(-16 // period))  # at least 4 times and 16 characters
        chunk = text[-period:]
        if len(set(chunk)) > 1 and len(text) >= period * times and text.endswith(chunk * times):
            return "repeating"  # Data_Data_Data_Data_ (not a ======== rule)
    return ""


class StringTracker:
    """Follows the JSON after `<tool_call>` byte by byte: are we inside a string, and what does it hold?"""

    def __init__(self):
        self.seen = b""  # bytes before the call opens (None once it has)
        self.in_string = False
        self.escaped = False
        self.current = []

    def feed(self, data: bytes) -> None:
        if self.seen is not None:
            self.seen += data
            at = self.seen.find(OPEN.encode())
            if at < 0:
                self.seen = self.seen[-len(OPEN) :]
                return
            data, self.seen = self.seen[at + len(OPEN) :], None
        for char in data.decode("utf-8", "replace"):
            if not self.in_string:
                if char == '"':
                    self.in_string, self.current = True, []
                continue
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
                continue
            self.current.append(char)

    def text(self) -> str:
        return "".join(self.current) if self.in_string else ""


class ToolCallConstraint:
    """Masks logits so that tool calls follow the grammar. One instance per generation."""

    def __init__(self, tokenizer, grammar_text: str, stop_runaways: bool = True):
        from llguidance import LLMatcher
        from llguidance.numpy import allocate_token_bitmask

        lltok, quotes = _built(tokenizer)
        self.lltok = lltok
        self.matcher = LLMatcher(lltok, grammar_text, log_level=0)
        if self.matcher.is_error():
            raise ValueError(f"constrained decoding: {self.matcher.get_error()}")
        self.vocab_size = lltok.vocab_size
        self.bitmask = allocate_token_bitmask(1, self.vocab_size)
        self.quotes = quotes
        self.strings = StringTracker() if stop_runaways else None
        self.started = False
        self.error = ""  # set when the model's token could not be matched (constraint then off)
        self.runaways: list[str] = []  # strings ended early, and why (the loop tells the user)

    def forced_after(self, token: int | None = None) -> list[int]:
        """The tokens the grammar forces once `token` (the one the next row follows) is consumed,
        without moving the matcher: the engine drafts them (squish/engine/generate.py). None: after
        what it has consumed (the next row follows a token still being computed, which these
        then begin with). Before the first call nothing is consumed: the prompt's last token is
        not the grammar's."""
        if self.error:
            return []
        if token is None or not self.started:
            return self.matcher.compute_ff_tokens()
        if self.matcher.try_consume_tokens([token]) != 1:
            return []
        forced = self.matcher.compute_ff_tokens()
        self.matcher.rollback(1)
        return forced

    def __call__(self, tokens, logits):
        import numpy as np
        from llguidance.numpy import fill_next_token_bitmask

        from ..engine.sampling import mask_logits

        if self.started and not self.error:
            # The engine passes all tokens so far; the last is the one sampled on the previous step.
            token = int(tokens[-1].item())
            if not self.matcher.consume_token(token):
                self.error = self.matcher.get_error()
            elif self.strings is not None:
                self.strings.feed(self.lltok.decode_bytes([token]))
        self.started = True
        if self.error:
            return logits
        fill_next_token_bitmask(self.matcher, self.bitmask)
        allowed = np.unpackbits(self.bitmask.view(np.uint8), bitorder="little")
        width = logits.shape[-1]
        if width > allowed.size:
            allowed = np.concatenate([allowed, np.zeros(width - allowed.size, np.uint8)])
        allowed = allowed[:width].astype(np.bool_)
        why = runaway(self.strings.text()) if self.strings is not None else ""
        if why:
            closing = np.zeros_like(allowed)
            closing[[q for q in self.quotes if q < width]] = True
            if (allowed & closing).any():
                allowed &= closing
                self.runaways.append(why)
        if allowed.all():
            return logits
        return mask_logits(logits, allowed)


def processor_factory(
    tools,
    form: str = "squish",
    min_calls: int = 1,
    max_calls: int = grammars.MAX_CALLS,
    sources: list[str] = (),
    copy: bool = False,
    bounds: bool = True,
    lazy: bool = False,
):
    """A `ChatRequest.processor_factory`: builds a fresh constraint on the engine thread."""
    from llguidance import LLMatcher

    text = grammars.grammar_text(tools, form, min_calls, max_calls, sources, copy, bounds, lazy)
    grammar_text = LLMatcher.grammar_from_lark(text)

    def factory(tokenizer) -> list:
        constraint = ToolCallConstraint(tokenizer, grammar_text, stop_runaways=bounds)
        factory.made.append(constraint)
        return [constraint]

    factory.made = []  # the constraints built so far: the loop reports the strings they ended
    # What it constrains, for the loop's notices and tests.
    factory.tools, factory.form, factory.lazy = list(tools), form, lazy
    factory.min_calls, factory.max_calls, factory.sources = min_calls, max_calls, list(sources)
    factory.max_chars = max(grammars.call_chars(tool, sources, copy) for tool in tools) * max_calls + 32
    return factory
