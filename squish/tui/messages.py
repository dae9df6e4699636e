"""Messages that worker threads post to the chat screen.

Workers never touch widgets: they read engine event streams and post these; the
handlers run on the Textual event loop.
"""

from textual.message import Message

from ..engine.events import Error, Live, Memory, Stats


class TokensArrived(Message):
    """Answer text decoded since the last batch (at most one batch per frame)."""

    def __init__(self, text: str, tokens: int) -> None:
        super().__init__()
        self.text = text
        self.tokens = tokens


class ThinkingArrived(Message):
    """Text of the model's <think> block since the last batch (batched like the answer)."""

    def __init__(self, text: str, tokens: int) -> None:
        super().__init__()
        self.text = text
        self.tokens = tokens


class EngineNotice(Message):
    """A line the engine said about this turn: a saved KV cache it could not use, or the
    context it had to cut (`left_out` messages, in a window of `context_size` tokens)."""

    def __init__(self, text: str, left_out: int = 0, context_size: int = 0) -> None:
        super().__init__()
        self.text = text
        self.left_out = left_out
        self.context_size = context_size


class PrefillProgress(Message):
    def __init__(self, processed: int, total: int) -> None:
        super().__init__()
        self.processed = processed
        self.total = total


class LiveReading(Message):
    def __init__(self, live: Live) -> None:
        super().__init__()
        self.live = live


class TurnFinished(Message):
    def __init__(self, finish_reason: str, stats: Stats | None, error: Error | None) -> None:
        super().__init__()
        self.finish_reason = finish_reason
        self.stats = stats
        self.error = error


class ModelStatus(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ModelLoaded(Message):
    def __init__(self, info) -> None:
        super().__init__()
        self.info = info  # engine.loader.ModelInfo


class ModelFailed(Message):
    def __init__(self, name: str | None, message: str) -> None:
        super().__init__()
        self.name = name
        self.message = message


class MemoryReading(Message):
    def __init__(self, memory: Memory) -> None:
        super().__init__()
        self.memory = memory
