"""Pure unit tests: fitting a conversation into the context window, and splitting <think> blocks."""

import pytest

from squish.engine.context import LOW_WATER, answer_room, fit
from squish.engine.thinking import ThinkSplitter, opens_thinking
from squish.errors import UserError


def render(messages):
    """One token per word plus four per message, like a chat template's framing."""
    tokens = []
    for message in messages:
        tokens += [0] * 4 + [1] * len(message["content"].split())
    return tokens


def turns(n, words=20, system=True):
    messages = [{"role": "system", "content": "be brief " * 5}] if system else []
    for i in range(n):
        messages.append({"role": "user", "content": f"q{i} " + "word " * words})
        messages.append({"role": "assistant", "content": f"a{i} " + "word " * words})
    messages.append({"role": "user", "content": "last question " * 3})
    return messages


def kept(messages, fitted):
    head = 1 if messages[0]["role"] == "system" else 0
    return messages[:head] + messages[head + fitted.left_out :]


def test_a_conversation_that_fits_is_left_whole():
    messages = turns(2)
    fitted = fit(render, messages, 512, 64)
    assert fitted.left_out == 0 and fitted.tokens == render(messages)


def test_overflow_leaves_out_the_oldest_turns_but_never_the_system_prompt_or_the_last_turns():
    messages = turns(12)  # about 650 tokens
    fitted = fit(render, messages, 512, 128)
    budget = 512 - answer_room(512, 128)
    assert 0 < len(fitted.tokens) <= budget
    remaining = kept(messages, fitted)
    assert remaining[0]["role"] == "system"
    assert remaining[1]["role"] == "user"  # whole turns: the cut is at a user message
    assert remaining[-1] == messages[-1] and remaining[-3:] == messages[-3:]
    assert fitted.tokens == render(remaining)
    # Cut back to the low-water mark, so the next turns keep the same prefix.
    assert len(fitted.tokens) <= budget * LOW_WATER


def test_the_previous_cut_is_kept_while_it_fits_so_the_prefix_stays_the_same():
    messages = turns(12)
    first = fit(render, messages, 512, 128)
    messages += [{"role": "assistant", "content": "short"}, {"role": "user", "content": "again"}]
    second = fit(render, messages, 512, 128, previous=first.left_out)
    assert second.left_out == first.left_out
    assert second.tokens[: len(first.tokens) - 10] == first.tokens[: len(first.tokens) - 10]


def test_a_previous_cut_that_no_longer_fits_moves_on():
    messages = turns(12)
    first = fit(render, messages, 512, 128)
    for i in range(6):
        messages += [{"role": "assistant", "content": "word " * 30}, {"role": "user", "content": f"more {i}"}]
    later = fit(render, messages, 512, 128, previous=first.left_out)
    assert later.left_out > first.left_out
    assert len(later.tokens) <= 512 - answer_room(512, 128)


def test_without_a_system_prompt_the_first_message_may_go():
    messages = turns(12, system=False)
    fitted = fit(render, messages, 512, 128)
    assert fitted.left_out > 0 and kept(messages, fitted)[0]["role"] == "user"


def test_a_last_turn_too_long_for_the_window_is_a_user_error_naming_both_numbers():
    messages = [{"role": "system", "content": "hi"}, {"role": "user", "content": "word " * 600}]
    with pytest.raises(UserError, match="the prompt is 609 tokens; the context window is 512"):
        fit(render, messages, 512, 128)


def test_a_last_turn_over_the_budget_but_within_the_window_gets_what_is_left():
    messages = turns(3) + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "word " * 450}]
    fitted = fit(render, messages, 512, 128)
    assert kept(messages, fitted)[1:] == messages[-1:] and len(fitted.tokens) < 512


def test_answer_room_is_max_tokens_but_at_most_a_quarter_of_the_window():
    assert answer_room(512, 100) == 100
    assert answer_room(512, 4096) == 128
    assert answer_room(8192, 2) == 16


def split(pieces, inside=False):
    splitter = ThinkSplitter(inside)
    out = []
    for piece in pieces:
        out += splitter.feed(piece)
    out += splitter.flush()
    thinking = "".join(text for think, text in out if think)
    answer = "".join(text for think, text in out if not think)
    return thinking, answer


def test_a_think_block_at_the_start_is_split_from_the_answer_even_with_tags_across_pieces():
    thinking, answer = split(["<th", "ink>\nLet me", " see.</th", "ink>\n\nParis", " is it."])
    assert thinking == "\nLet me see." and answer == "Paris is it."


def test_an_answer_without_a_block_is_all_answer():
    assert split(["The capital", " is Paris."]) == ("", "The capital is Paris.")


def test_a_think_tag_later_in_the_answer_is_answer_text():
    assert split(["Use the ", "<think>", " tag."]) == ("", "Use the <think> tag.")


def test_a_template_that_opens_the_block_starts_inside_it():
    assert opens_thinking("<|im_start|>assistant\n<think>\n")
    assert not opens_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert split(["I reason", ".</think>", "Answer."], inside=True) == ("I reason.", "Answer.")


def test_an_unclosed_block_is_all_thinking_and_a_held_partial_tag_is_flushed():
    assert split(["<think>", "still thinking </thi"]) == ("still thinking </thi", "")
