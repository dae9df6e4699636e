"""Chat-app widgets in small host apps: the chats screen's saved KV cache sizes, the stats
panel's context lines and drafts."""

from textual.app import App, ComposeResult
from textual.widgets import OptionList, Static

from squish.history import History
from squish.tui.screens.chats import ChatsScreen
from squish.tui.widgets.stats import StatsPanel


class PanelHost(App):
    def compose(self) -> ComposeResult:
        yield StatsPanel()


def write_cache(history: History, chat_id: int, size: int) -> None:
    """A cache pair as squish/engine/prompt_cache.py leaves it (only the sizes matter here)."""
    path = history.cache_path(chat_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    path.with_suffix(".json").write_text("{}")


async def test_chats_show_their_saved_kv_cache_and_deleting_a_chat_deletes_it(tmp_path, wait_until):
    history = History(tmp_path / "history.db")
    cached, plain = history.create_chat("m"), history.create_chat("m")
    for chat in (cached, plain):
        history.add_message(chat.id, "user", f"chat {chat.id}")
    write_cache(history, cached.id, 3_000_000)

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(ChatsScreen(history, None))

    app = Host()
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ChatsScreen))
        options = app.screen.query_one(OptionList)
        rows = {str(options.get_option_at_index(i).id): str(options.get_option_at_index(i).prompt) for i in range(2)}
        assert "KV cache 3.0 MB" in rows[str(cached.id)] and "KV cache" not in rows[str(plain.id)]
        assert "saved KV caches 3.0 MB" in str(app.screen.query_one(".hint", Static).render())
        options.highlighted = [c.id for c in app.screen.chats].index(cached.id)
        await pilot.press("d", "d")
        await wait_until(pilot, lambda: history.chat(cached.id) is None)
    assert not history.cache_path(cached.id).exists() and not history.cache_path(cached.id).with_suffix(".json").exists()
    history.close()


async def test_the_stats_panel_shows_the_context_used_and_the_kv_cache_memory():
    app = PanelHost()
    async with app.run_test() as pilot:
        panel = app.query_one(StatsPanel)
        text = lambda: str(panel.query_one("#context", Static).render())  # noqa: E731
        assert "tokens" in text() and "–" in text()
        panel.show_context(430, 512, 11_796_480)
        await pilot.pause()
        assert "430/512" in text() and "11.8 MB" in text()
        panel.show_context(None)
        await pilot.pause()
        assert "430" not in text()


async def test_the_stats_panel_shows_the_drafts_kept():
    app = PanelHost()
    async with app.run_test() as pilot:
        panel = app.query_one(StatsPanel)
        text = lambda: str(panel.query_one("#turn", Static).render())  # noqa: E731
        panel.show_turn(120.0, 42.0, 24, 300.0, drafts=(9, 12))
        await pilot.pause()
        assert "drafts kept" in text() and "9/12 75%" in text()
        panel.show_turn(120.0, 42.0, 24, 300.0, drafts=(0, 0))  # nothing drafted: no rate to show
        await pilot.pause()
        assert "9/12" not in text() and "%" not in text()
