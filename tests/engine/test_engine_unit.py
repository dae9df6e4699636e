"""Pure unit tests: sampling helpers, request validation, GGUF name mapping."""

import pytest

from squish.engine.engine import ChatRequest, validate
from squish.engine.sampling import StopMatcher, repeating_period
from squish.errors import UserError


def user(text):
    return [{"role": "user", "content": text}]


def test_stop_string_split_across_segments_is_held_back_then_cut():
    matcher = StopMatcher(("</answer>",))
    assert matcher.feed("Paris</an") == ("Paris", False)
    assert matcher.feed("swer> trailing") == ("", True)
    assert matcher.text.startswith("Paris</answer>")


def test_held_back_prefix_is_released_when_it_does_not_complete():
    matcher = StopMatcher(("STOP",))
    assert matcher.feed("go ST") == ("go ", False)
    assert matcher.feed("ay") == ("STay", False)
    assert matcher.flush() == ""


def test_without_stop_strings_everything_streams():
    matcher = StopMatcher(())
    assert matcher.feed("a") == ("a", False)
    assert matcher.feed("b") == ("b", False)


def test_first_of_several_stop_strings_wins():
    matcher = StopMatcher(("world", "lo"))
    assert matcher.feed("hello world") == ("hel", True)


def test_repetition_of_one_token():
    assert repeating_period([7] * 48) == 1
    assert repeating_period([7] * 47) == 0


def test_repetition_of_a_sentence():
    sentence = list(range(100, 120))
    assert repeating_period([1, 2, 3] + sentence * 3) == 20
    assert repeating_period(sentence * 2) == 0


def test_varied_text_is_not_a_loop():
    assert repeating_period(list(range(500))) == 0


@pytest.mark.parametrize(
    "request_, message",
    [
        (ChatRequest([]), "empty prompt"),
        (ChatRequest(user("   \n")), "empty prompt"),
        (ChatRequest(user("hi"), max_tokens=0), "max_tokens"),
        (ChatRequest(user("hi"), max_tokens=-5), "max_tokens"),
        (ChatRequest(user("hi"), temperature=-1), "temperature"),
        (ChatRequest(user("hi"), top_p=0), "top_p"),
        (ChatRequest(user("bad \udcff byte")), "UTF-8"),
        (ChatRequest([{"role": "wizard", "content": "x"}]), "role"),
        (ChatRequest([{"role": "user", "content": None}]), "text"),
        (ChatRequest(user("hi"), timeout_s=0), "timeout"),
    ],
)
def test_validation_rejects(request_, message):
    with pytest.raises(UserError, match=message):
        validate(request_)


def test_validation_accepts_a_normal_chat():
    validate(ChatRequest([{"role": "system", "content": "Be brief."}, *user("hi")], max_tokens=1))
