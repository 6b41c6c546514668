"""The repeat stop (MEMALPHA_POLICY_REPEAT_STOP_CHARS): a reply is applied only up to where it begins
repeating itself. The rule is a function of the text alone, so the service (cutting what it received) and
the trainer (stopping generation at the first token after which it applies) keep the same text."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from scripted_llm import STREAM_PIECE_CHARS, ScriptedLLM, Text

from app.backends import make_policy
from app.memory import MemoryState
from app.policy.parser import parse_reply
from app.policy.repeats import applied_text, repeat_start, repeat_window
from app.settings import Settings


def _reference(text: str, window: int) -> int | None:
    """Literally: the smallest end e whose last `window` characters occur at an earlier start."""
    for end in range(window, len(text) + 1):
        piece = text[end - window : end]
        if any(text[s : s + window] == piece for s in range(end - window)):
            return end - window
    return None


texts = st.text(alphabet="ab c", max_size=60)  # a small alphabet: repeats are common


@settings(max_examples=400, deadline=None)
@given(texts, st.integers(min_value=1, max_value=8))
def test_the_stop_is_the_first_repeat_of_the_window(text: str, window: int) -> None:
    assert repeat_start(text, window) == _reference(text, window)


# Longer texts made of a few recurring phrases, for windows that span several aligned blocks.
phrases = st.lists(
    st.sampled_from(["the Normans ", "Rollo, ", '"}},{"name":"insert","content":"', "in 911 ", "a"]),
    max_size=25,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(phrases, st.integers(min_value=8, max_value=64), st.integers(min_value=0, max_value=200))
def test_the_stop_on_longer_texts_and_windows(text: str, window: int, since: int) -> None:
    expected = _reference(text, window)
    assert repeat_start(text, window) == expected
    clean = len(text) + 1 if expected is None else expected + window  # ends below it do not repeat
    assert repeat_start(text, window, since=min(since, clean)) == expected


@settings(max_examples=300, deadline=None)
@given(texts, texts, st.integers(min_value=1, max_value=8))
def test_a_longer_text_stops_where_its_beginning_stopped(text: str, more: str, window: int) -> None:
    """Why service and sampler agree: the service sees the reply run on past the sampler's stop."""
    first = repeat_start(text, window)
    if first is not None:
        assert repeat_start(text + more, window) == first
        kept, _ = applied_text(text + more, window)
        assert kept == applied_text(text, window)[0]
        assert text[:first] == kept[:first] and len(kept) <= first + window  # a split word kept whole at most
        # what is dropped starts inside a copy of text the reply already holds, verbatim
        assert text[first : first + window] in text[: first + window - 1]


@settings(max_examples=200, deadline=None)
@given(texts, st.integers(min_value=1, max_value=8), st.integers(min_value=0, max_value=60))
def test_checking_only_new_ends_finds_the_same_stop(text: str, window: int, seen: int) -> None:
    """A growing text checks only its new end positions (`since`) once the older ones did not repeat."""
    prefix = text[:seen]
    if repeat_start(prefix, window) is None:
        assert repeat_start(text, window, since=len(prefix) + 1) == repeat_start(text, window)


def test_window_zero_and_native_are_off() -> None:
    looping = "abcabcabcabc" * 5
    assert repeat_start(looping, 0) is None
    assert applied_text(looping, 0) == (looping, None)
    assert repeat_window("native", 256) == 0 and repeat_window("json", 256) == 256


def _insert(content: str) -> dict[str, object]:
    return {"name": "new_memory_insert", "arguments": {"memory_type": "semantic_memory", "content": content}}


CHUNK = (
    "Normans: The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a "
    "region in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway."
)


def test_a_loop_inside_one_content_keeps_its_first_copy() -> None:
    reply = '[{"name":"new_memory_insert","arguments":{"memory_type":"semantic_memory","content":"'
    reply += (CHUNK + " ") * 4  # the content holds the chunk again and again, until the budget
    kept, note = applied_text(reply, 64)
    assert note is not None and "began repeating 64 characters" in note
    calls = parse_reply(kept).calls  # the parser's repair closes the string, as for a reply cut short
    assert len(calls) == 1 and calls[0].arguments["content"].strip() == CHUNK


def _compact(calls: list[dict[str, object]]) -> str:
    return json.dumps(calls, separators=(",", ":"))


def test_distinct_facts_sharing_the_call_structure_are_not_stopped() -> None:
    """Consecutive calls share 88 characters of structure, a title, and whatever their contents have in common
    at the end of one and the start of the next: only a window longer than all of that leaves them alone."""
    facts = [f"Normans: fact number {n} about Rollo and the duchy of Normandy, told once." for n in range(6)]
    reply = _compact([_insert(fact) for fact in facts])
    # 51 characters of common ending + 88 of structure + 21 of common beginning = 160 shared characters
    assert applied_text(reply, 160) == (reply, None)
    stop = repeat_start(reply, 150)
    assert stop is not None and reply[stop:].startswith(" about Rollo")  # a stop without any repeated fact


def test_a_call_re_sending_an_earlier_content_is_stopped_and_the_facts_before_it_kept() -> None:
    facts = [
        "Normans: Rollo was the first ruler of Normandy.",
        "Normans: The Norman dynasty had a major political, cultural and military impact.",
        "Normans: Norman adventurers founded the Kingdom of Sicily under Roger II after conquering southern Italy.",
    ]
    looped = _compact([_insert(fact) for fact in facts] + [_insert(facts[1])] * 5)
    kept, note = applied_text(looped, 128)
    assert note is not None
    calls = parse_reply(kept).calls
    # `Italy.` ends like `Normandy.`: the repeated stretch begins at `y."`; the word is kept whole, the
    # period (part of the repeat) is not
    assert [call.arguments.get("content") for call in calls[:3]] == [*facts[:2], facts[2].rstrip(".")]
    # what follows the facts is at most the start of the repeated call, which carries no content
    assert all(not call.arguments.get("content") for call in calls[3:])


async def test_the_service_stops_the_stream_at_the_repeat_and_applies_the_text_before_it() -> None:
    """Through a real HTTP server: with the stop on, the reply is streamed and the service closes the stream
    once the reply repeats itself, so the server stops sending (generating) the loop; the calls come from the
    text before the repeat; what arrived is kept as the raw text. With the stop off: one whole reply, as before."""
    looped = _compact([_insert(CHUNK)] * 6)
    with ScriptedLLM(Text(looped)) as llm:
        replies = []
        for window in (0, 256):
            policy = make_policy(
                Settings(  # type: ignore[call-arg]
                    _env_file=None,
                    policy_backend="openai",
                    policy_url=llm.url,
                    policy_model=llm.model,
                    policy_tool_format="json",
                    policy_repeat_stop_chars=window,
                )
            )
            replies.append(await policy.propose(MemoryState(), CHUNK))
            await policy.aclose()
        whole, streamed = llm.requests
    off, on = replies
    assert len(off.calls) == 6 and not off.parse_errors and "stream" not in whole.body
    assert streamed.body["stream"] is True
    assert (
        streamed.finished is None and streamed.streamed < len(looped) / STREAM_PIECE_CHARS
    )  # the client left
    assert len(on.raw_text) < len(looped) and looped.startswith(on.raw_text)
    assert [call.arguments["content"] for call in on.calls if "content" in call.arguments] == [CHUNK]
    assert any("began repeating 256 characters" in error for error in on.parse_errors)
    # the usage of what was read before the stream closed (vLLM's continuous usage stats): one token per
    # piece read; the server may have sent a piece more before it saw the close (2 ms apart, a race)
    assert on.usage.completion_tokens == len(on.raw_text) / STREAM_PIECE_CHARS <= streamed.streamed
    assert on.usage.prompt_tokens > 0
    assert applied_text(on.raw_text, 256)[0] == applied_text(looped, 256)[0]  # the cut a whole reply gets
