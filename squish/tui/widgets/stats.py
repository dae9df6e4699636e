"""The live stats panel: this turn's TTFT and speed, recent turns' speed, the context used with
the KV cache's memory, and memory."""

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

RECENT_TURNS = 24


def row(label: str, value: str, width: int = 26) -> str:
    return f"{label}{value:>{width - len(label)}}"


class StatsPanel(Vertical):
    """Its lines have fixed heights, so an update repaints them without a screen layout."""

    DEFAULT_CSS = """
    StatsPanel {
        width: 30;
        height: 100%;
        padding: 0 1;
        border-left: vkey $primary 30%;
        & > .title { color: $text-muted; text-style: bold; margin-top: 1; }
        & > .title.first { margin-top: 0; }
        & > Sparkline { height: 2; }
        & > .state { color: $text-muted; margin-top: 1; height: 1; }
        & > #turn { height: 5; }
        & > #memory { height: 4; }
        & > #context { height: 2; }
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ttft_ms: float | None = None
        self.decode_tps: float | None = None
        self.prefill_tps: float | None = None
        self.tokens: int | None = None
        self.drafts: tuple[int, int] | None = None  # prompt-lookup drafts (accepted, checked)
        self.recent_tps: list[float] = []
        self.memory: tuple[float, float, float, float] | None = None  # active, peak, rss, available (GB)
        self.context: tuple[int, int, int] | None = None  # tokens used, context size, KV cache bytes
        self.state = "starting"

    def compose(self) -> ComposeResult:
        yield Static("this turn", classes="title first")
        yield Static(self._turn_text(), id="turn")
        yield Static("decode tok/s, recent turns", classes="title")
        sparkline = Sparkline([], id="recent", summary_function=max)
        sparkline.display = False  # until the first answer
        yield sparkline
        yield Static("context", classes="title")
        yield Static(self._context_text(), id="context")
        yield Static("memory", classes="title")
        yield Static(self._memory_text(), id="memory")
        yield Static(self.state, classes="state", id="state")

    def _turn_text(self) -> str:
        def fmt(value, pattern):
            return "–" if value is None else pattern.format(value)

        return "\n".join(
            [
                row("TTFT", fmt(self.ttft_ms, "{:.0f} ms")),
                row("decode", fmt(self.decode_tps, "{:.1f} tok/s")),
                row("prefill", fmt(self.prefill_tps, "{:.1f} tok/s")),
                row("tokens", fmt(self.tokens, "{}")),
                row("drafts kept", self._drafts_text()),
            ]
        )

    def _context_text(self) -> str:
        if self.context is None:
            return "\n".join(row(label, "–") for label in ("tokens", "KV cache"))
        used, size, kv_bytes = self.context
        return "\n".join([row("tokens", f"{used}/{size}"), row("KV cache", f"{kv_bytes / 1e6:.1f} MB")])

    def _drafts_text(self) -> str:
        if not self.drafts or not self.drafts[1]:
            return "–"
        accepted, checked = self.drafts
        return f"{accepted}/{checked} {accepted / checked:.0%}"

    def _memory_text(self) -> str:
        if self.memory is None:
            return "\n".join(row(label, "–") for label in ("MLX active", "MLX peak", "RSS", "available"))
        active, peak, rss, available = self.memory
        return "\n".join(
            [
                row("MLX active", f"{active:.3f} GB"),
                row("MLX peak", f"{peak:.3f} GB"),
                row("RSS", f"{rss:.3f} GB"),
                row("available", f"{available:.1f} GB"),
            ]
        )

    def show_turn(
        self,
        ttft_ms: float | None,
        decode_tps: float | None,
        tokens: int | None,
        prefill_tps: float | None = None,
        drafts: tuple[int, int] | None = None,
    ) -> None:
        """`drafts`: (accepted, checked) prompt-lookup draft tokens of this turn so far."""
        self.ttft_ms, self.decode_tps, self.tokens, self.drafts = ttft_ms, decode_tps, tokens, drafts
        if prefill_tps is not None or tokens in (None, 0):
            self.prefill_tps = prefill_tps
        self.query_one("#turn", Static).update(self._turn_text(), layout=False)

    def add_turn_rate(self, decode_tps: float) -> None:
        self.recent_tps = (self.recent_tps + [decode_tps])[-RECENT_TURNS:]
        sparkline = self.query_one("#recent", Sparkline)
        sparkline.data = list(self.recent_tps)
        sparkline.display = True

    def show_context(self, used: int | None, size: int | None = None, kv_bytes: int = 0) -> None:
        """The tokens the model's context holds after the last answer, of `size`; None clears it."""
        self.context = None if used is None or not size else (used, size, kv_bytes)
        self.query_one("#context", Static).update(self._context_text(), layout=False)

    def show_memory(self, active_gb: float, peak_gb: float, rss_gb: float, available_gb: float | None = None) -> None:
        """None for `available_gb` keeps the last reading."""
        if available_gb is None:
            available_gb = self.memory[3] if self.memory else 0.0
        self.memory = (active_gb, peak_gb, rss_gb, available_gb)
        self.query_one("#memory", Static).update(self._memory_text(), layout=False)

    def set_state(self, text: str) -> None:
        self.state = text
        self.query_one("#state", Static).update(text, layout=False)
