"""Decode speed while streaming into the chat app, against the headless engine, in one run.

    uv run python benchmarks/tui_stream.py            # 5 warm-ups and 5 runs per side
    uv run python benchmarks/tui_stream.py --runs 10 --max-tokens 64

One engine and one loaded model serve both sides. The app runs headless under
`App.run_test` (a real Textual event loop, compositor and widgets, no terminal).
Headless and TUI runs alternate, each first in half the pairs in a shuffled order
(round_orders), so drift in machine load falls on both sides. Then a few more TUI runs press
a key every 150 ms during generation and time each until the prompt shows it.

Render cost per token is the UI thread's CPU time (time.thread_time) between token
batches, divided by the batch's tokens, early against late in an answer. A synthetic
long answer (no model) measures the same with and without the live-tail freezing of
squish/tui/widgets/message.py.

Bars (issue 3): TUI decode tok/s >= 95% of headless; keystrokes handled within 100 ms.
The result is appended to benchmarks/results/<timestamp>_tui-stream.json.
"""

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from textual import events

from squish.cli.bench_results import commit, save
from squish.cli.bench_stats import percentile, round_orders, spread
from squish.engine.engine import ChatRequest, Engine
from squish.models.hardware import describe
from squish.history import History
from squish.models import store
from squish.tui import streaming
from squish.tui.app import SquishApp
from squish.tui.screens.chat import ChatScreen
from squish.tui.widgets import message as message_widget

PROMPT = "Write a long story about a dragon who learns to paint."
DECODE_BAR = 0.95
KEYSTROKE_BAR_MS = 100.0
KEY_INTERVAL_S = 0.15
LONG_PIECES = [
    "Dragons are patient painters.",
    "They mix colours slowly, and they **never** hurry a sky.\n\n",
    "- a list item about brushes\n",
    "- another about `pigments`\n\n",
    "```python\ndef paint(canvas):\n    return canvas.fill('red')\n```\n\n",
]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model name or path (default: the embedded model)")
    parser.add_argument("--warmup", type=int, default=5, help="discarded warm-up runs per side (at least 5)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per side")
    parser.add_argument("--key-runs", type=int, default=2, help="TUI runs that time keystrokes")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--long-tokens", type=int, default=1200, help="synthetic answer length (0 skips it)")
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args()
    if args.warmup < 5:
        parser.error("--warmup must be at least 5")
    if args.runs < 2 or args.max_tokens < 8:
        parser.error("--runs must be at least 2 and --max-tokens at least 8")
    return args


class BatchLog:
    """For each token batch the chat screen handles: wall time, UI-thread CPU time, tokens."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, float, int]] = []
        handler = ChatScreen.on_tokens_arrived
        log = self

        async def logged(screen, message):
            log.batches.append((time.perf_counter(), time.thread_time(), message.tokens))
            await handler(screen, message)

        ChatScreen.on_tokens_arrived = logged

    def take(self) -> list[tuple[float, float, int]]:
        batches, self.batches = self.batches, []
        return batches


def cpu_per_token(batches: list[tuple[float, float, int]]) -> list[float]:
    """UI CPU ms spent from one batch to the next, per token of the first (the render of it)."""
    return [(b[1] - a[1]) * 1000 / a[2] for a, b in zip(batches, batches[1:]) if a[2] > 0]


def headless(engine: Engine, max_tokens: int):
    request = ChatRequest([{"role": "user", "content": PROMPT}], max_tokens=max_tokens, temperature=0.0, seed=0)
    result = engine.generate(request).collect()
    if result.error:
        raise SystemExit(f"headless run failed: {result.error.message}")
    return result.stats


async def tui_turn(pilot, timeout: float = 600.0, keys: list[float] | None = None):
    """One answer in the app; with `keys`, also press a key every KEY_INTERVAL_S and record latencies (ms)."""
    screen = pilot.app.chat_screen
    await screen.run_command("/new")
    screen.prompt.load_text(PROMPT)
    last = screen.last_stats
    # pilot.press returns once the screen has no messages left to handle, which while tokens
    # stream in is after the whole turn: press in a task, and wait for the turn's stats.
    press = asyncio.create_task(pilot.press("enter"))
    deadline = time.monotonic() + timeout
    next_key = time.monotonic() + KEY_INTERVAL_S
    while screen.busy or screen.last_stats is last:
        if time.monotonic() > deadline:
            raise SystemExit("a TUI run timed out")
        if keys is not None and screen.busy and time.monotonic() >= next_key and screen.answer is not None and screen.answer.text:
            before = len(screen.prompt.text)
            sent = time.perf_counter()
            pilot.app._driver.send_message(events.Key("x", "x"))
            while len(screen.prompt.text) == before:
                await asyncio.sleep(0.001)
            keys.append((time.perf_counter() - sent) * 1000)
            next_key = time.monotonic() + KEY_INTERVAL_S
        await asyncio.sleep(0.01)
    await press
    screen.prompt.clear()
    stats = screen.last_stats
    if stats is None or stats.finish_reason not in ("stop", "length"):
        notes = [n.message for n in pilot.app._notifications]
        raise SystemExit(f"a TUI run ended with {stats.finish_reason if stats else 'no stats'}: {notes}")
    return stats


def ui_report(runs: list[list[tuple[float, float, int]]], tokens: list[int]) -> dict:
    rates, per_second_max, observed, early, late, busy = [], 0, [], [], [], []
    for batches, generated in zip(runs, tokens):
        if len(batches) < 4:
            continue
        starts = [wall for wall, _, _ in batches]
        span = starts[-1] - starts[0]
        rates.append((len(starts) - 1) / span if span > 0 else 0.0)
        per_second_max = max(per_second_max, max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts))
        observed.append((sum(n for _, _, n in batches[1:])) / span if span > 0 else 0.0)
        costs = cpu_per_token(batches)
        third = max(1, len(costs) // 3)
        early += costs[:third]
        late += costs[-third:]
        busy.append((batches[-1][1] - batches[0][1]) / span if span > 0 else 0.0)
    return {
        "batches_per_s_mean": sum(rates) / len(rates) if rates else 0.0,
        "batches_in_any_second_max": per_second_max,
        "ui_observed_tps_p50": percentile(observed, 50) if observed else 0.0,
        "ui_cpu_ms_per_token_first_third_p50": percentile(early, 50) if early else 0.0,
        "ui_cpu_ms_per_token_last_third_p50": percentile(late, 50) if late else 0.0,
        "ui_thread_cpu_share_while_streaming": percentile(busy, 50) if busy else 0.0,
    }


async def bench(args, engine: Engine, info, log: BatchLog) -> dict:
    with tempfile.TemporaryDirectory() as home:
        history = History(Path(home) / "history.db")
        app = SquishApp(engine, history, model=args.model, max_tokens=args.max_tokens, temperature=0.0)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.chat_screen
            while screen.model_info is None:
                if not screen.model_loading and screen.stats_panel.state == "no model":
                    raise SystemExit("the app could not load the model")
                await asyncio.sleep(0.05)
            for i in range(args.warmup):
                print(f"warm-up {i + 1}/{args.warmup}", file=sys.stderr)
                headless(engine, args.max_tokens)
                await tui_turn(pilot)
            log.take()
            plain, tui, batch_runs, frames = [], [], [], []
            for i, order in enumerate(round_orders(["headless", "tui"], args.runs)):
                print(f"run {i + 1}/{args.runs}", file=sys.stderr)
                for side in order:
                    if side == "headless":
                        plain.append(headless(engine, args.max_tokens))
                    else:
                        tui.append(await tui_turn(pilot))
                        batch_runs.append(log.take())
                        frames.append(screen.pacing.frame_s)
            keys: list[float] = []
            for i in range(args.key_runs):
                print(f"keystroke run {i + 1}/{args.key_runs}", file=sys.stderr)
                await tui_turn(pilot, keys=keys)
            log.take()
        # The app saves the chat's KV cache into the home as it quits, on the engine thread; a
        # request queued behind that save returns once it is written, before the home is removed.
        engine.memory().collect()
        history.close()

    def side(stats_list) -> dict:
        ttft, tps = spread([s.ttft_ms for s in stats_list]), spread([s.decode_tps for s in stats_list])
        summary = {
            "runs": len(stats_list),
            **{f"ttft_ms_{k}": ttft[k] for k in ("p50", "p95", "p99", "stddev")},
            "decode_tps": tps["p50"],
            "decode_tps_stddev": tps["stddev"],
            "peak_memory_gb": max(s.peak_memory_gb for s in stats_list),
        }
        summary["generation_tokens"] = [s.generation_tokens for s in stats_list]
        summary["decode_tps_runs"] = [s.decode_tps for s in stats_list]
        return summary

    headless_side, tui_side = side(plain), side(tui)
    ratio = tui_side["decode_tps"] / headless_side["decode_tps"] if headless_side["decode_tps"] else 0.0
    # Each headless run and the TUI run beside it saw about the same machine load.
    paired = [t.decode_tps / h.decode_tps for h, t in zip(plain, tui) if h.decode_tps]
    return {
        "name": "tui-stream",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": info.name,
        "commit": commit(),
        "prompt": PROMPT,
        "plan": {"warmup": args.warmup, "runs": args.runs, "key_runs": args.key_runs, "max_tokens": args.max_tokens},
        "hardware": describe(),
        "pacing": {
            "min_frame_s": streaming.FRAME_S,
            "max_frame_s": streaming.MAX_FRAME_S,
            "ui_budget": streaming.UI_BUDGET,
            "frame_s_at_end_of_each_run": frames,
        },
        "headless": headless_side,
        "tui": tui_side,
        "decode_ratio": ratio,
        "decode_ratio_paired_p50": percentile(paired, 50) if paired else 0.0,
        "decode_ratio_paired_runs": paired,
        "ui": ui_report(batch_runs, [s.generation_tokens for s in tui]),
        "keystrokes": {
            "presses": len(keys),
            "p50_ms": percentile(keys, 50) if keys else None,
            "p95_ms": percentile(keys, 95) if keys else None,
            "p99_ms": percentile(keys, 99) if keys else None,
            "max_ms": max(keys) if keys else None,
        },
        "bars": {
            "decode_ratio_min": DECODE_BAR,
            "keystroke_ms_max": KEYSTROKE_BAR_MS,
            "decode_ratio_met": ratio >= DECODE_BAR,
            "keystrokes_met": bool(keys) and max(keys) <= KEYSTROKE_BAR_MS,
        },
    }


async def long_answer(tokens: int, live_blocks: int, per_batch: int = 3) -> dict:
    """UI CPU per token early and late in one synthetic answer of `tokens` words (no model)."""
    from textual.app import App
    from textual.containers import VerticalScroll

    class Host(App):
        def compose(self):
            with VerticalScroll():  # as in the chat screen: the view follows the bottom
                yield message_widget.ChatMessage("assistant")

        def on_mount(self):
            self.query_one(VerticalScroll).anchor()

    saved, message_widget.LIVE_BLOCKS = message_widget.LIVE_BLOCKS, live_blocks
    words = " ".join(LONG_PIECES * (tokens // 20 + 1)).split(" ")[:tokens]
    costs = []
    try:
        async with Host().run_test(size=(120, 40)) as pilot:
            message = pilot.app.query_one(message_widget.ChatMessage)
            for i in range(0, len(words), per_batch):
                cpu = time.thread_time()
                await message.append(" ".join(words[i : i + per_batch]) + " ")
                await pilot.pause()
                costs.append((time.thread_time() - cpu) * 1000 / per_batch)
            await message.finish("")
            freezes = message.freezes
    finally:
        message_widget.LIVE_BLOCKS = saved
    tenth = max(1, len(costs) // 10)
    return {
        "tokens": len(words),
        "live_blocks": live_blocks,
        "freezes": freezes,
        "ui_cpu_ms_per_token_first_tenth_p50": percentile(costs[:tenth], 50),
        "ui_cpu_ms_per_token_last_tenth_p50": percentile(costs[-tenth:], 50),
        "ui_cpu_ms_per_token_first_tenth_p95": percentile(costs[:tenth], 95),
        "ui_cpu_ms_per_token_last_tenth_p95": percentile(costs[-tenth:], 95),
    }


def main() -> int:
    args = arguments()
    engine = Engine()
    loaded = store.load(engine, args.model).collect()
    if loaded.error:
        print(f"tui_stream: {loaded.error.message}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    result = asyncio.run(bench(args, engine, loaded.loaded, BatchLog()))
    engine.shutdown()
    if args.long_tokens:
        print("synthetic long answer", file=sys.stderr)
        result["long_answer"] = [
            asyncio.run(long_answer(args.long_tokens, message_widget.LIVE_BLOCKS)),
            asyncio.run(long_answer(args.long_tokens, 10**9)),  # freezing off, for comparison
        ]
    result["seconds"] = time.perf_counter() - started
    path = save(result, Path(args.results_dir), "tui-stream")

    h, t, ui, k = result["headless"], result["tui"], result["ui"], result["keystrokes"]
    print(f"model {result['model']} on {result['hardware']['backend']} ({result['hardware']['chip']})")
    print(
        f"decode tok/s p50: headless {h['decode_tps']:.2f} (sd {h['decode_tps_stddev']:.2f}), "
        f"TUI {t['decode_tps']:.2f} (sd {t['decode_tps_stddev']:.2f}), ratio {result['decode_ratio']:.3f}; "
        f"median of paired ratios {result['decode_ratio_paired_p50']:.3f}"
    )
    print(f"TTFT ms p50: headless {h['ttft_ms_p50']:.0f}, TUI {t['ttft_ms_p50']:.0f}")
    print(
        f"UI: {ui['batches_per_s_mean']:.1f} batches/s (at most {ui['batches_in_any_second_max']} in one second); "
        f"UI CPU per token {ui['ui_cpu_ms_per_token_first_third_p50']:.1f} ms early, "
        f"{ui['ui_cpu_ms_per_token_last_third_p50']:.1f} ms late; UI thread busy "
        f"{ui['ui_thread_cpu_share_while_streaming']:.0%} of streaming time"
    )
    for long in result.get("long_answer", []):
        label = "freezing on" if long["live_blocks"] < 10**9 else "freezing off"
        print(
            f"synthetic {long['tokens']}-token answer, {label}: UI CPU per token "
            f"{long['ui_cpu_ms_per_token_first_tenth_p50']:.1f} ms in the first tenth, "
            f"{long['ui_cpu_ms_per_token_last_tenth_p50']:.1f} ms in the last ({long['freezes']} freezes)"
        )
    if k["presses"]:
        print(
            f"keystrokes during generation: {k['presses']} presses, p50 {k['p50_ms']:.1f} ms, "
            f"p95 {k['p95_ms']:.1f} ms, max {k['max_ms']:.1f} ms"
        )
    print(
        f"bars: decode ratio >= {DECODE_BAR}: {result['bars']['decode_ratio_met']}; "
        f"keystrokes <= {KEYSTROKE_BAR_MS:.0f} ms: {result['bars']['keystrokes_met']}"
    )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
