"""`squish --continue` and the chat app's start-up checks, as subprocesses."""

import os
import subprocess
import sys


def squish(*args, home):
    env = {**os.environ, "SQUISH_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from squish.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_help_shows_continue(tmp_path):
    result = squish("--help", home=tmp_path)
    assert result.returncode == 0 and "--continue" in result.stdout


def test_continue_with_a_prompt_and_no_saved_chat_is_one_line(tmp_path):
    result = squish("--continue", "-p", "hi", home=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "squish: error: no saved chat to continue: squish -p starts one"
    assert result.stdout == ""


def test_bad_settings_stop_the_app_before_it_starts(tmp_path):
    result = squish("--temp", "9", home=tmp_path)
    assert result.returncode == 1
    assert "temperature must be between 0 and 5" in result.stderr and result.stdout == ""


def test_an_unreadable_history_is_exit_2_with_one_line(tmp_path):
    (tmp_path / "history.db").write_bytes(b"garbage" * 1000)
    for args in ((), ("-p", "hi")):  # the app, and a one-shot answer that would be saved
        result = squish(*args, home=tmp_path)
        assert result.returncode == 2
        assert result.stderr.startswith("squish: error: cannot open the chat history") and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1


def test_importing_the_app_module_loads_no_mlx(tmp_path):
    code = "import sys, squish.tui.app; print('mlx' in sys.modules, 'mlx_lm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "False"]
