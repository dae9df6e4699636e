"""The model pieces wired into the chat app: /model picker, switching, pulls, the first-run offer.

Pilot drives the real app on a real engine whose squish home is a temp dir. Downloads come
from the fake hub of tests/fake_hub.py (127.0.0.1), which serves the tiny random-weight
model under a catalog model's repo name; no test touches the internet. Generations are few and
short (the Linux CPU backend decodes ~9 tok/s).
"""

import threading

import pytest
from fake_hub import (  # noqa: F401
    CHUNK,
    TINY_REPO,
    closed_port_url,
    fake_hub,
    hf_cache_of,
    tiny_repo_files,
    wide_repo_files,
)
from helpers import import_embedded, submit_line
from textual.widgets import Label, OptionList

from squish.engine.engine import Engine
from squish.models import catalog, hardware, settings, store
from squish.models.store import EMBEDDED_NAME
from squish.tui.app import SquishApp
from squish.tui.screens.models import ModelScreen
from squish.tui.screens.pull import PullScreen
from squish.tui.widgets.first_run import FirstRunOffer, needs_first_run

SIZE = (110, 40)
MACHINE = hardware.Hardware("CPU", "test machine", 8.0, 6.0, 100.0)  # fixed, so fit and the offer are too
PULLED = "smollm2:360m"  # the fake hub serves the tiny model under this catalog model's repo


@pytest.fixture
def models_home(tmp_path):
    """A squish home with the embedded model imported (about half a second) and nothing else."""
    home = tmp_path / "home"
    import_embedded(home)
    return home


@pytest.fixture
def home_engine(models_home):
    """An engine on that home: what it loads and what the app lists and pulls are the same models."""
    engine = Engine()
    yield engine
    engine.unload().collect()  # MLX memory is per process: leave none to the next test's readings
    engine.shutdown()


def install_tiny(home, files) -> None:
    """The tiny model installed as squish pulled models before the Hugging Face cache (still loaded as it was)."""
    target = store.model_dir_for(TINY_REPO, home)
    target.mkdir(parents=True)
    for name, data in files.items():
        (target / name).write_bytes(data)
    store.write_manifest(target, name=TINY_REPO, repo=TINY_REPO)


def serve_as(hub, name: str, files) -> None:
    from fake_hub import Repo

    hub.repos[catalog.find(name).repo] = Repo(dict(files))


def app_on(engine, history, **kwargs) -> SquishApp:
    """The chat app on the test's squish home, listing and pulling into that home's own Hugging Face cache."""
    return SquishApp(engine, history, hf_cache=hf_cache_of(kwargs["home"]), **kwargs)


async def ready(pilot, wait_until, name: str = EMBEDDED_NAME):
    screen = pilot.app.chat_screen
    await wait_until(
        pilot, lambda: screen.model_info is not None and screen.model_info.name == name, what=f"{name} to load"
    )
    return screen


async def command(pilot, text: str) -> None:
    await submit_line(pilot, text)
    await pilot.pause(0.1)


async def pick(pilot, wait_until, name: str) -> None:
    """/model, then Enter on the row called `name`."""
    await command(pilot, "/model")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ModelScreen), timeout=10, what="the picker")
    names = [row.name for row in pilot.app.screen.rows]
    pilot.app.screen.query_one(OptionList).highlighted = names.index(name)
    await pilot.press("enter")


async def ask(pilot, wait_until, text: str) -> None:
    screen = pilot.app.chat_screen
    turns = len(screen.turns)
    await submit_line(pilot, text)
    # The tiny model answers within a pause, so `busy` may never be seen: wait for the turn's stats.
    await wait_until(pilot, lambda: len(screen.turns) > turns and not screen.busy, timeout=90, what="the answer")


def pull_text(app, selector: str) -> str:
    found = app.screen.query(selector) if isinstance(app.screen, PullScreen) else []
    return str(found.first(Label).render()) if found else ""


async def test_picker_lists_local_and_catalog_models_and_switching_frees_memory(
    home_engine, models_home, history, tiny_repo_files, wait_until, notifications
):
    install_tiny(models_home, tiny_repo_files)
    app = app_on(home_engine, history, home=models_home, hw=MACHINE)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        panel = screen.stats_panel
        await wait_until(pilot, lambda: panel.memory is not None and panel.memory[0] > 0, what="a memory reading")
        embedded_gb = panel.memory[0]

        await command(pilot, "/model")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelScreen), timeout=10, what="the picker")
        picker = app.screen
        rows = {row.name: row for row in picker.rows}
        assert [row.name for row in picker.rows[:2]] == [EMBEDDED_NAME, TINY_REPO]
        assert rows[EMBEDDED_NAME].ready and rows[TINY_REPO].ready and rows[TINY_REPO].kind == "local"
        catalog_rows = [row for row in picker.rows if row.kind == "catalog"]
        assert "qwen3:0.6b" in [row.name for row in catalog_rows] and not any(row.ready for row in catalog_rows)
        assert rows["qwen3:0.6b"].detail.startswith("download ~") and "RAM" in rows["qwen3:0.6b"].detail
        assert rows["qwen3:8b"].fit == "no" and "too big" in rows["qwen3:8b"].detail  # 8 GB machine
        options = picker.query_one(OptionList)
        assert options.option_count == len(picker.rows)
        assert str(options.get_option_at_index(0).prompt).startswith(f"● {EMBEDDED_NAME}")  # the current model
        await pilot.press("escape")
        assert app.screen is screen

        await pick(pilot, wait_until, TINY_REPO)
        await ready(pilot, wait_until, TINY_REPO)
        assert screen.model_bar.model.startswith(TINY_REPO)
        weights_gb = sum(p.stat().st_size for p in import_embedded(models_home).glob("*.safetensors")) / 1e9
        # The engine freed the embedded weights (~0.1 GB) before loading the 0.7 MB model.
        await wait_until(pilot, lambda: embedded_gb - panel.memory[0] > 0.9 * weights_gb, what="the memory drop")
        tiny_gb = panel.memory[0]
        assert f"{tiny_gb:.3f} GB" in str(panel.query_one("#memory").render())

        await pick(pilot, wait_until, EMBEDDED_NAME)
        await ready(pilot, wait_until)
        assert screen.model_bar.model.startswith(EMBEDDED_NAME)
        await wait_until(pilot, lambda: panel.memory[0] - tiny_gb > 0.9 * weights_gb, what="the memory rise")

        await pick(pilot, wait_until, EMBEDDED_NAME)  # the loaded model again: nothing to do
        await wait_until(pilot, lambda: any("already loaded" in n for n in notifications(app)), what="a note")
        assert not screen.model_loading and screen.model_info.name == EMBEDDED_NAME


async def test_pull_from_the_picker_cancel_then_resume_then_answer(
    home_engine, models_home, history, fake_hub, wide_repo_files, wait_until, notifications
):
    import hashlib

    serve_as(fake_hub, PULLED, wide_repo_files)  # shards past 10 MiB: a cancel can stop in the middle of one
    part = hf_cache_of(models_home) / f"models--{catalog.find(PULLED).repo.replace('/', '--')}" / "blobs"
    part = part / f"{hashlib.sha256(wide_repo_files['model-00001-of-00002.safetensors']).hexdigest()}.incomplete"
    app = app_on(home_engine, history, max_tokens=6, temperature=0.0, home=models_home, endpoint=fake_hub.url)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)

        resume = threading.Event()  # the hub pauses after the shard's first 10 MiB until the cancel is in
        fake_hub.pause_at["model-00001-of-00002.safetensors"] = (CHUNK + 100_000, resume)
        await pick(pilot, wait_until, PULLED)
        await wait_until(pilot, lambda: isinstance(app.screen, PullScreen), timeout=10, what="the pull screen")
        await wait_until(pilot, lambda: "ETA" in pull_text(app, "#pull-bytes"), timeout=30, what="progress")
        await wait_until(pilot, lambda: part.is_file() and part.stat().st_size >= CHUNK, timeout=30, what="a chunk")
        await pilot.press("escape")
        resume.set()
        # The screen's result reaches the chat just after the screen is gone: wait for the notification.
        await wait_until(
            pilot, lambda: any("pulling it again resumes" in n for n in notifications(app)), what="the cancel"
        )
        assert app.screen is screen
        assert screen.model_info.name == EMBEDDED_NAME and not screen.model_loading

        fake_hub.throttle_s = 0.002  # slow enough that the resumed pull's progress line is seen
        await pick(pilot, wait_until, PULLED)  # still a catalog row: not downloaded
        seen = set()

        def watch() -> bool:
            seen.add(pull_text(app, "#pull-bytes"))
            return screen.model_info is not None and screen.model_info.name == PULLED

        await wait_until(pilot, watch, timeout=60, what="the pull and the switch")
        assert any(" / 25.5 MB · " in line and "/s · ETA" in line for line in seen), seen
        assert fake_hub.range_requests("model-00001-of-00002.safetensors") == [f"bytes={CHUNK}-"]  # resumed
        assert screen.model_bar.model.startswith(PULLED)
        assert settings.default_model(models_home) is None  # a pull from /model does not change the default

        await ask(pilot, wait_until, "Hi")
        assert screen.last_stats.generation_tokens >= 1 and screen.history.chat(screen.chat.id).model == PULLED

        await command(pilot, "/model")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelScreen), timeout=10, what="the picker")
        assert next(row for row in app.screen.rows if row.name == PULLED).ready  # now a local model
        await pilot.press("escape")


async def test_a_failed_pull_is_a_notification_and_the_app_keeps_working(
    home_engine, models_home, history, wait_until, notifications
):
    app = app_on(home_engine, history, max_tokens=3, temperature=0.0, home=models_home, endpoint=closed_port_url())
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        await pick(pilot, wait_until, "qwen3:0.6b")
        await wait_until(pilot, lambda: "cannot reach the hub" in pull_text(app, "#pull-error"), what="the error")
        await pilot.press("escape")  # Close
        await wait_until(pilot, lambda: any("cannot reach the hub" in n for n in notifications(app)), what="a note")
        assert app.screen is screen
        assert screen.model_info.name == EMBEDDED_NAME and screen.stats_panel.state == "ready"
        assert not hf_cache_of(models_home).exists()  # nothing was written
        await ask(pilot, wait_until, "Hi")
        assert screen.last_stats.finish_reason in ("stop", "length") and screen.last_answer


async def test_a_new_user_types_at_once_and_gets_an_answer_the_offer_never_takes_the_keys(
    home_engine, models_home, history, fake_hub, wait_until
):
    """Start, type a question right away, press Enter: the embedded model answers; no download starts."""
    app = app_on(
        home_engine, history, max_tokens=8, temperature=0.0, home=models_home, endpoint=fake_hub.url, hw=MACHINE,
        offer_first_run=True,
    )
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat_screen
        assert screen.query(FirstRunOffer) and app.focused is screen.prompt  # from the first frame
        await pilot.press(*"What is the capital of France?", "enter")
        await wait_until(pilot, lambda: screen.turns and not screen.busy, timeout=90, what="the answer")
        assert "Paris" in screen.last_answer and screen.model_info.name == EMBEDDED_NAME
        assert app.screen is screen and screen.query(FirstRunOffer)  # still offered, still not in the way
    assert fake_hub.requests == [] and settings.first_run_choice(models_home) is None


async def test_first_run_keep_the_embedded_model_is_remembered(home_engine, models_home, history, wait_until):
    assert not app_on(home_engine, history, model=EMBEDDED_NAME, home=models_home, offer_first_run=True).first_run
    assert not app_on(home_engine, history, home=models_home, continue_last=True, offer_first_run=True).first_run
    app = app_on(home_engine, history, home=models_home, hw=MACHINE, offer_first_run=True)
    async with app.run_test(size=SIZE) as pilot:
        offer = str(app.chat_screen.query_one("#first-run-offer", Label).render())
        assert f"{hardware.recommend(MACHINE).id} suits this machine" in offer and "RAM" in offer
        await pilot.click("#first-run-embedded")
        await wait_until(pilot, lambda: not app.chat_screen.query(FirstRunOffer), timeout=10, what="the offer to go")
        await ready(pilot, wait_until)
        assert app.focused is app.chat_screen.prompt
    assert settings.first_run_choice(models_home)["choice"] == "embedded"
    assert settings.default_model(models_home) is None and not needs_first_run(models_home)

    app = app_on(home_engine, history, home=models_home, hw=MACHINE, offer_first_run=True)
    assert not app.first_run
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, wait_until)
        assert app.screen is app.chat_screen and not app.chat_screen.query(FirstRunOffer)


async def test_first_run_download_goes_through_the_pull_screen(
    home_engine, models_home, history, fake_hub, tiny_repo_files, wait_until
):
    recommended = hardware.recommend(MACHINE).id
    serve_as(fake_hub, recommended, tiny_repo_files)
    fake_hub.throttle_s = 0.02  # long enough to see the pull screen
    app = app_on(home_engine, history, home=models_home, endpoint=fake_hub.url, hw=MACHINE, offer_first_run=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#first-run-pull")
        await wait_until(pilot, lambda: isinstance(app.screen, PullScreen), timeout=10, what="the pull screen")
        screen = await ready(pilot, wait_until, recommended)
        assert screen.model_bar.model.startswith(recommended)
    assert fake_hub.served["model-00001-of-00002.safetensors"] == len(
        tiny_repo_files["model-00001-of-00002.safetensors"]
    )
    assert settings.first_run_choice(models_home)["choice"] == "pull"
    assert settings.default_model(models_home) == recommended and not needs_first_run(models_home)
