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
