"""The pull screen and the first-run offer, each driven by Pilot in a tiny host app, against the fake hub."""

import threading
import time

from fake_hub import (  # noqa: F401
    CHUNK,
    HUGE_REPO,
    TINY_REPO,
    WIDE_REPO,
    closed_port_url,
    fake_hub,
    hf_cache_of,
    listing,
    tiny_repo_files,
    wide_repo_files,
)
from textual.app import App
from textual.widgets import Button, Input, Label, ProgressBar

from squish.models import cache, hardware, pull, settings
from squish.tui.screens.pull import PullScreen
from squish.tui.widgets.first_run import FirstRunOffer, needs_first_run

SHARD = "model-00001-of-00002.safetensors"
SIZE = (100, 40)  # room for the dialogs with long error lines, so clicks land on the buttons
NO_RESULT = object()


class Host(App):
    """Pushes one screen and keeps what it dismissed with."""

    def __init__(self, screen_factory) -> None:
        super().__init__()
        self.screen_factory = screen_factory
        self.result = NO_RESULT

    def on_mount(self) -> None:
        self.push_screen(self.screen_factory(), callback=self.keep)

    def keep(self, result) -> None:
        self.result = result


def pull_screen(name: str, home, endpoint: str, **kwargs) -> PullScreen:
    """The pull screen on a test's squish home and its own Hugging Face cache."""
    return PullScreen(name, home=home, endpoint=endpoint, hf_cache=hf_cache_of(home), **kwargs)


async def wait_until(pilot, predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.05)


def text(app, selector: str) -> str:
    """A label's text, or "" while the pushed screen is not shown yet."""
    found = app.screen.query(selector)
    return str(found.first(Label).render()) if found else ""


async def test_pull_screen_shows_progress_and_returns_the_ready_model(fake_hub, tmp_path):
    fake_hub.throttle_s = 0.02
    app = Host(lambda: pull_screen(TINY_REPO, tmp_path, fake_hub.url, make_default=True))
    seen = set()
    async with app.run_test(size=SIZE) as pilot:

        def watch():
            if isinstance(app.screen, PullScreen):
                seen.add(text(app, "#pull-bytes"))
            return app.result is not NO_RESULT

        await wait_until(pilot, watch)
    assert app.result == TINY_REPO
    assert any("/s · ETA" in line and " kB / 696.5 kB" in line for line in seen), seen
    assert pull.ready_dir(TINY_REPO, tmp_path, hf_cache_of(tmp_path)) is not None
    assert settings.default_model(tmp_path) == TINY_REPO


async def test_pull_screen_progress_bar_and_plan(fake_hub, tmp_path):
    fake_hub.throttle_s = 0.05
    app = Host(lambda: pull_screen(TINY_REPO, tmp_path, fake_hub.url))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: fake_hub.served.get(SHARD, 0) > 0)
        await wait_until(pilot, lambda: (app.screen.query_one(ProgressBar).progress or 0) > 0)
        bar = app.screen.query_one(ProgressBar)
        assert bar.total == 696538
        assert "696.5 kB in 6 files" in text(app, "#pull-plan") and "RAM ~0.30 GB" in text(app, "#pull-plan")
        await wait_until(pilot, lambda: app.result is not NO_RESULT)
    assert app.result == TINY_REPO


async def test_cancel_keeps_the_partial_for_the_next_pull(fake_hub, wide_repo_files, tmp_path):
    import hashlib

    resume = threading.Event()
    fake_hub.pause_at[SHARD] = (CHUNK + 100_000, resume)  # the first 10 MiB of the shard are written, then a pause
    part = hf_cache_of(tmp_path) / cache.repo_folder(WIDE_REPO) / "blobs"
    part = part / f"{hashlib.sha256(wide_repo_files[SHARD]).hexdigest()}.incomplete"
    app = Host(lambda: pull_screen(WIDE_REPO, tmp_path, fake_hub.url, make_default=True))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: part.is_file() and part.stat().st_size >= CHUNK)
        await pilot.press("escape")
        assert "stopping" in text(app, "#pull-bytes")
        resume.set()  # the hub goes on: the next chunk's progress update stops the pull
        await wait_until(pilot, lambda: app.result is not NO_RESULT)
    assert app.result is None
    assert part.stat().st_size == CHUNK  # the chunk in flight when Esc came is dropped, the one written is kept
    assert pull.ready_dir(WIDE_REPO, tmp_path, hf_cache_of(tmp_path)) is None
    assert settings.default_model(tmp_path) is None

    app = Host(lambda: pull_screen(WIDE_REPO, tmp_path, fake_hub.url))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.result is not NO_RESULT)
    assert app.result == WIDE_REPO
    assert fake_hub.range_requests(SHARD) == [f"bytes={CHUNK}-"]  # resumed, not restarted


async def test_disk_refusal_is_shown_and_writes_nothing(fake_hub, tmp_path):
    app = Host(lambda: pull_screen(HUGE_REPO, tmp_path, fake_hub.url))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "not enough disk" in text(app, "#pull-error"))
        close = app.screen.query_one("#pull-cancel", Button)
        assert str(close.label) == "Close"
        close.press()  # not a click: the error label that just grew may not be laid out yet under load
        await wait_until(pilot, lambda: app.result is not NO_RESULT)
    assert app.result is None
    assert listing(tmp_path) == []


async def test_unreachable_hub_is_shown(tmp_path):
    endpoint = closed_port_url()
    app = Host(lambda: pull_screen(TINY_REPO, tmp_path, endpoint))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "cannot reach the hub" in text(app, "#pull-error"))
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.result is not NO_RESULT)
    assert app.result is None and listing(tmp_path) == []


async def test_an_already_downloaded_model_returns_at_once(fake_hub, tmp_path):
    for _ in range(2):
        host = Host(lambda: pull_screen(TINY_REPO, tmp_path, fake_hub.url))
        async with host.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda app=host: app.result is not NO_RESULT)
        assert host.result == TINY_REPO
    assert [r for r in fake_hub.requests if "/api/models/" in r[1]] == [
        ("GET", f"/api/models/{TINY_REPO}/revision/main", None)
    ]


M3 = hardware.Hardware("Metal", "Apple M3", 16.0, 10.0, 200.0)


class OfferHost(App):
    """The first-run offer above a prompt that has the focus, as in the chat screen."""

    def __init__(self, home, hw) -> None:
        super().__init__()
        self.home, self.hw = home, hw
        self.chosen = []
        self.sent = []

    def compose(self):
        yield FirstRunOffer(self.home, self.hw)
        yield Input(id="prompt")

    def on_mount(self) -> None:
        self.query_one("#prompt").focus()

    def on_first_run_offer_chosen(self, message: FirstRunOffer.Chosen) -> None:
        self.chosen.append(message.name)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.sent.append(event.value)


def offer_text(app) -> str:
    return str(app.query_one("#first-run-offer", Label).render())


async def test_first_run_offers_the_recommended_model_and_saves_the_choice(tmp_path):
    assert needs_first_run(tmp_path)
    app = OfferHost(tmp_path, M3)
    async with app.run_test(size=SIZE) as pilot:
        offer = offer_text(app)
        assert "qwen3:8b suits this machine: 4.61 GB download, about" in offer and "GB RAM" in offer
        await pilot.click("#first-run-pull")
        await wait_until(pilot, lambda: app.chosen)
    assert app.chosen == ["qwen3:8b"]
    assert settings.first_run_choice(tmp_path)["choice"] == "pull"
    assert needs_first_run(tmp_path)  # offered again until that pull completes
    settings.set_default_model("qwen3:8b", tmp_path)
    assert not needs_first_run(tmp_path)


async def test_typing_and_enter_go_to_the_prompt_never_to_the_offer(tmp_path):
    app = OfferHost(tmp_path, M3)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"What is the capital of France?", "enter", "tab", "enter", "tab", "enter")
        await pilot.pause()
        assert app.sent[0] == "What is the capital of France?"
        assert app.chosen == [] and settings.first_run_choice(tmp_path) is None  # no download, nothing saved
        assert all(not button.can_focus for button in app.query(Button))


async def test_first_run_keep_the_embedded_model_and_dismiss(tmp_path):
    for button in ("#first-run-embedded", "#first-run-close"):
        home = tmp_path / button.strip("#")
        app = OfferHost(home, M3)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.click(button)
            await wait_until(pilot, lambda: app.chosen)
        assert app.chosen == [None]
        assert settings.first_run_choice(home)["choice"] == "embedded"
        assert not needs_first_run(home) and settings.default_model(home) is None


async def test_first_run_on_a_machine_where_nothing_fits(tmp_path):
    small = hardware.Hardware("CPU", "tiny", 2.0, 0.5, 1.0)
    app = OfferHost(tmp_path, small)
    async with app.run_test(size=SIZE) as pilot:
        assert "No catalog model fits" in offer_text(app)
        assert not app.query("#first-run-pull")
        await pilot.click("#first-run-close")
        await wait_until(pilot, lambda: app.chosen)
    assert app.chosen == [None] and settings.first_run_choice(tmp_path)["choice"] == "embedded"


async def test_a_file_system_error_is_shown_and_the_app_keeps_running(fake_hub, tmp_path):
    """An OSError from the pull's own disk work (here: the squish home is a file) is a one-line error."""
    home = tmp_path / "home"
    home.write_text("a file where the squish home should be")
    app = Host(lambda: pull_screen(TINY_REPO, home, fake_hub.url))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "Not a directory" in text(app, "#pull-error"))
        assert "\n" not in text(app, "#pull-error")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.result is not NO_RESULT)
    assert app.result is None and app.return_code in (None, 0)
