"""Splitting a thinking model's `<think>...</think>` block from its answer, as the text streams.

Qwen3, SmolLM3 and the DeepSeek-R1 distills write their reasoning first, inside `<think>` and
`</think>` (other tags when mlx-lm's tokenizer wrapper names them: `think_start`, `think_end`);
some templates open the block themselves (the prompt ends with `<think>`), so the
answer starts inside it. Only a block at the very start of the answer counts: a `<think>` later
in an answer (code about the tag, say) is answer text. Tags may arrive split across tokens, so a
tail that could begin one is held back until the next piece decides it. No MLX here.
"""

OPEN, CLOSE = "<think>", "</think>"


def opens_thinking(prompt_tail: str, open_tag: str = OPEN) -> bool:
    """Whether a rendered prompt ends inside an open think block (the template opened it)."""
    return prompt_tail.rstrip().endswith(open_tag)


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0


class ThinkSplitter:
    """feed(text) -> [(thinking, text), ...] in order. `state`: "start" (nothing decided yet),
    "thinking", "after" (the block closed; blank lines before the answer are dropped), "answer"."""

    def __init__(self, inside: bool = False, open_tag: str = OPEN, close_tag: str = CLOSE) -> None:
        self.state = "thinking" if inside else "start"
        self.held = ""
        self.open, self.close = open_tag, close_tag

    @property
    def thinking(self) -> bool:
        return self.state == "thinking"

    def feed(self, text: str) -> list[tuple[bool, str]]:
        out: list[tuple[bool, str]] = []
        text = self.held + text
        self.held = ""
        while text:
            if self.state == "start":
                stripped = text.lstrip()
                if stripped.startswith(self.open):
                    self.state = "thinking"
                    text = stripped[len(self.open) :]
                elif self.open.startswith(stripped):  # maybe the start of the tag: wait for more
                    self.held = text
                    return out
                else:
                    self.state = "answer"
            elif self.state == "thinking":
                end = text.find(self.close)
                if end >= 0:
                    if end:
                        out.append((True, text[:end]))
                    self.state = "after"
                    text = text[end + len(self.close) :]
                    continue
                keep = _partial_tag(text, self.close)
                if len(text) > keep:
                    out.append((True, text[: len(text) - keep]))
                self.held = text[len(text) - keep :]
                return out
            elif self.state == "after":  # the blank lines between the block and the answer
                stripped = text.lstrip()
                if not stripped:
                    return out
                self.state = "answer"
                text = stripped
            else:
                out.append((False, text))
                return out
        return out

    def flush(self) -> list[tuple[bool, str]]:
        """What is held back, once the stream ends."""
        held, self.held = self.held, ""
        return [(self.state == "thinking", held)] if held else []
