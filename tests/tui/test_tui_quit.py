"""Quitting while the engine is still busy with a request the app waits on.

Structural, with a scripted engine whose load never finishes (as a first-run import of a
large model can take minutes): the thread workers must let the app close at once.
"""

import asyncio
import time

from squish.engine.events import EventStream, Status
from squish.tui.app import SquishApp


async def test_quitting_during_a_model_load_does_not_wait_for_it(scripted_engine, history):
    stuck = EventStream()
    stuck.put(Status("importing a very large model"))
    scripted_engine.load = lambda name: stuck
    app = SquishApp(scripted_engine, history)
    started = time.monotonic()
    async with app.run_test() as pilot:
        screen = app.chat_screen
        while "importing" not in (screen.model_bar.loading_text or ""):
            await pilot.pause(0.05)
        await pilot.press("ctrl+q")
    # run_test has returned: the app closed; its thread workers must be done too.
    deadline = time.monotonic() + 5
    while any(worker.is_running for worker in app.workers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not any(worker.is_running for worker in app.workers)
    assert time.monotonic() - started < 10
