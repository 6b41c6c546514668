"""The extractive (no-LLM) policy on real LoCoMo dialogue and SQuAD prose: useful, deterministic,
never duplicating, and speaking the same tool calls as an LLM."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from shared_data import DATA

from app.memory import Applier, MemoryLimits, MemoryState, Operation, WordTokenCounter
from app.policy.dates import find_date, mentions_time, resolve_relative
from app.policy.extractive import ExtractivePolicy
from app.policy.facts import small_talk
from app.policy.parser import ToolCall, parse_reply
from app.policy.sentences import is_filler, split_sentences
from app.policy.tools import TOOL_NAMES

LOCOMO = DATA / "locomo" / "locomo_dev.json"
SQUAD = DATA / "squad" / "squad_dev_v1.1_articles_00-23.json"
COUNTER = WordTokenCounter()
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (the shared data directory must sit beside the checkout)")
    return path


@pytest.fixture(scope="module")
def conversation() -> dict:
    return json.loads(_need(LOCOMO).read_text())[0]["conversation"]


def locomo_session(conversation: dict, number: int) -> str:
    """A LoCoMo session as the evaluator feeds it: each turn prefixed by session date and speaker."""
    when = conversation[f"session_{number}_date_time"]
    return "\n".join(
        f"[{when}] {turn['speaker']}: {turn['text']}" for turn in conversation[f"session_{number}"]
    )


def run(policy: ExtractivePolicy, state: MemoryState, chunk: str) -> tuple[list[ToolCall], list[str]]:
    calls = policy.plan(state, chunk)
    applier = Applier(MemoryLimits(), COUNTER)
    results = applier.apply_all(state, [Operation.from_call(c.name, c.arguments) for c in calls], now=NOW)
    return calls, [result.status for result in results]


def test_locomo_session_becomes_dated_episodes_facts_and_a_core(conversation: dict) -> None:
    state = MemoryState()
    calls, statuses = run(ExtractivePolicy(COUNTER), state, locomo_session(conversation, 1))
    assert statuses and set(statuses) == {"ok"}
    assert {call.name for call in calls} <= set(TOOL_NAMES)
    episodes = [item.content for item in state.episodic]
    # D1:3, with "yesterday" resolved against the session date (gold answer: 7 May 2023)
    # One self-contained fact per sentence: the speaker's name for "I".
    assert (
        "On 8 May 2023, Caroline went to a LGBTQ support group yesterday (7 May 2023) and it was so powerful."
    ) in episodes
    # D1:14: "last year" resolved (gold answer to "When did Melanie paint a sunrise?": 2022)
    assert any("Melanie" in text and "sunrise last year (2022)" in text for text in episodes)
    # greetings and small talk are not stored ("Hey Mel! Good to see you! How have you been?")
    assert not any("Good to see you" in text for text in episodes)
    assert len(episodes) < len(conversation["session_1"])
    assert state.core.splitlines()[:2] == ["Participants: Caroline, Melanie.", "Latest date: 8 May 2023."]


def test_extractive_is_deterministic_and_never_duplicates(conversation: dict) -> None:
    chunk = locomo_session(conversation, 2)
    first, second = ExtractivePolicy(COUNTER), ExtractivePolicy(COUNTER)
    assert first.plan(MemoryState(), chunk) == second.plan(MemoryState(), chunk)
    state = MemoryState()
    run(first, state, locomo_session(conversation, 1))
    before = state.copy()
    calls_a, _ = run(first, state, chunk)
    calls_b = second.plan(before, chunk)
    assert calls_a == calls_b
    contents = [call.arguments.get("content") for call in calls_a if call.name == "new_memory_insert"]
    assert len(contents) == len(set(contents))
    # The same chunk again: everything is already stored, the core already current — nothing to do.
    assert first.plan(state, chunk) == []


def test_core_rolls_forward_over_sessions(conversation: dict) -> None:
    state = MemoryState()
    policy = ExtractivePolicy(COUNTER)
    for number in (1, 2, 3):
        run(policy, state, locomo_session(conversation, number))
    assert "Latest date: 9 June 2023." in state.core
    assert COUNTER.count(state.core) <= MemoryLimits().core_tokens


def test_core_written_by_someone_else_is_left_alone(conversation: dict) -> None:
    state = MemoryState(core="Caroline is a transgender woman who wants to adopt.")
    calls = ExtractivePolicy(COUNTER).plan(state, locomo_session(conversation, 1))
    assert not any(call.name == "memory_update" for call in calls)


def test_dialogue_under_a_date_header_line() -> None:
    chunk = (
        "DATE: 1:14 pm on 25 May, 2023\n"
        "Melanie: I ran a charity race for mental health last Saturday, it was really rewarding.\n"
        "Caroline: That sounds great, Mel! I'm a counselor at the youth center now."
    )
    state = MemoryState()
    run(ExtractivePolicy(COUNTER), state, chunk)
    assert state.episodic[0].content == (
        "On 25 May 2023, Melanie ran a charity race for mental health last Saturday "
        "(the Saturday before 25 May 2023), it was really rewarding."
    )
    # "That sounds great, Mel!" is small talk; the lasting fact is stored about its speaker.
    assert [item.content for item in state.semantic] == ["Caroline is a counselor at the youth center now."]


def test_short_dated_sentence_is_an_event_not_a_header() -> None:
    state = MemoryState()
    run(ExtractivePolicy(COUNTER), state, "[8 May 2023] Alice: I adopted a beagle called Toby yesterday.")
    assert [item.content for item in state.episodic] == [
        "[8 May 2023] Alice: I adopted a beagle called Toby yesterday."
    ]


def test_squad_prose_facts_go_to_semantic_and_dated_sentences_to_episodic() -> None:
    article = json.loads(_need(SQUAD).read_text())["data"][0]
    chunk = "\n\n".join(paragraph["context"] for paragraph in article["paragraphs"][:3])
    state = MemoryState()
    _, statuses = run(ExtractivePolicy(COUNTER), state, chunk)
    assert set(statuses) == {"ok"}
    semantic = " ".join(item.content for item in state.semantic)
    episodic = " ".join(item.content for item in state.episodic)
    assert (
        "Denver Broncos defeated the National Football Conference (NFC) champion Carolina Panthers"
        in semantic
    )
    assert "The game was played on February 7, 2016, at Levi's Stadium" in episodic
    # every informative sentence of the text is kept somewhere, word for word
    for sentence in split_sentences(chunk):
        assert sentence in semantic or sentence in episodic
    assert "Super Bowl 50" in state.core


async def test_propose_reply_speaks_the_llm_shape(conversation: dict) -> None:
    policy = ExtractivePolicy(COUNTER)
    reply = await policy.propose(MemoryState(), locomo_session(conversation, 1))
    assert reply.model == "extractive" and reply.parse_errors == [] and reply.calls
    assert parse_reply(reply.raw_text).calls == reply.calls
    assert await policy.health() is True


def test_overlong_item_is_cut_to_the_item_limit() -> None:
    sentence = "The archive holds " + " ".join(f"record{n}" for n in range(300)) + "."
    calls = ExtractivePolicy(COUNTER, MemoryLimits(max_item_tokens=50)).plan(MemoryState(), sentence)
    inserted = [call.arguments["content"] for call in calls if call.name == "new_memory_insert"]
    assert len(inserted) == 1 and COUNTER.count(inserted[0]) <= 50


# --- the text helpers it is built from ---


def test_split_sentences_keeps_abbreviations_and_decimals() -> None:
    text = (
        "Dr. Smith met Mr. Jones at 3.5 km from St. Louis. They talked, e.g. about cars! Did it work?\nYes."
    )
    assert split_sentences(text) == [
        "Dr. Smith met Mr. Jones at 3.5 km from St. Louis.",
        "They talked, e.g. about cars!",
        "Did it work?",
        "Yes.",
    ]


@pytest.mark.parametrize(
    ("sentence", "filler"),
    [
        ("Hey Mel!", True),
        ("Good to see you!", True),
        ("How have you been?", True),
        ("Thanks, Caroline!", True),
        ("I went to a support group yesterday.", False),
        ("What kind of pottery do you make at the studio?", False),
    ],
)
def test_filler(sentence: str, filler: bool) -> None:
    assert is_filler(sentence, {"caroline", "mel"}) is filler


def test_dates() -> None:
    assert find_date("1:56 pm on 8 May, 2023") == date(2023, 5, 8)
    assert find_date("on May 8th, 2023") == date(2023, 5, 8)
    assert find_date("I may go in May") is None
    assert mentions_time("In 1066, the Normans invaded England.")
    assert not mentions_time("The stadium holds 3000 people.")
    anchor = date(2023, 7, 17)
    assert (
        resolve_relative("camping two weekends ago.", anchor)
        == "camping two weekends ago (two weekends before 17 July 2023)."
    )
    assert resolve_relative("Last Fri I went.", anchor) == "Last Fri (the Friday before 17 July 2023) I went."
    assert resolve_relative("next month", anchor) == "next month (August 2023)"
    assert resolve_relative("ten years ago", anchor) == "ten years ago (2013)"


def test_a_changed_fact_updates_the_old_item_and_the_core_profile() -> None:
    policy, state = ExtractivePolicy(COUNTER), MemoryState()
    run(
        policy, state, "[8 May 2023] Ana: I live in Lisbon with my cat.\n[8 May 2023] Ben: I work as a nurse."
    )
    # One-value facts are stated in a fixed phrasing (the question words "live"/"job" find them).
    assert [item.content for item in state.semantic] == [
        "Ana lives in Lisbon (as of 8 May 2023).",
        "Ben works as nurse (job) (as of 8 May 2023).",
    ]
    first_id = state.semantic[0].id
    calls, statuses = run(
        policy,
        state,
        "[2 June 2024] Ana: Big news, I moved to Berlin last month!\n[2 June 2024] Ben: Wow, congrats!",
    )
    assert set(statuses) == {"ok"}
    assert [
        c.arguments.get("memory_id") for c in calls if c.arguments.get("memory_type") == "semantic_memory"
    ] == [first_id]
    # The old value is gone (updated in place), not contradicted by a second item.
    assert [item.content for item in state.semantic] == [
        "Ana lives in Berlin (as of 2 June 2024).",
        "Ben works as nurse (job) (as of 8 May 2023).",
    ]
    # The move itself is an event, kept with its date.
    assert [item.content for item in state.episodic] == [
        "On 2 June 2024, Big news, Ana moved to Berlin last month (May 2024)!"
    ]
    assert "Profile of Ana: lives in Berlin." in state.core
    assert "Profile of Ben: works as nurse (job)." in state.core


def test_you_becomes_the_other_speaker_and_small_talk_and_near_duplicates_are_dropped() -> None:
    state = MemoryState()
    chunk = """\
[3 March 2024] Ana: Hi Ben! How are you?
[3 March 2024] Ben: Your garden looks amazing, and you grow tomatoes on the balcony.
[3 March 2024] Ana: Thanks so much! That's so sweet!
[3 March 2024] Ana: Yeah, I grow tomatoes on the balcony.
[3 March 2024] Ben: Parenting's such a big responsibility."""
    calls, _ = run(ExtractivePolicy(COUNTER), state, chunk)
    contents = [item.content for item in state.semantic + state.episodic]
    assert contents == ["Ana's garden looks amazing, and Ana grows tomatoes on the balcony."]
    assert len(calls) == 2  # the one fact and the core


@pytest.mark.parametrize(
    ("sentence", "dropped"),
    [
        # the opener goes before judging: what is left is a fact
        ("Oh yeah, we went to the beach recently.", False),
        # short statements about the speaker, names and numbers are what later questions ask about
        ("Yeah, I play clarinet!", False),
        ("The Minnesota Wolves!", False),
        ("Three times a week.", False),
        # reactions, encouragement and questions are not
        ("Way to go!", True),
        ("That castle looks amazing!", True),
        ("Wow, so cool!", True),
        ("What got you into running?", True),
    ],
)
def test_small_talk_is_what_leaves_nothing_informative(sentence: str, dropped: bool) -> None:
    assert small_talk(sentence, {"tim", "john", "tim"[:3], "joh"}) is dropped


def test_a_turns_events_are_one_dated_item_and_a_short_reply_keeps_its_question() -> None:
    state = MemoryState()
    chunk = """\
[21 May 2023] Tim: Congrats! Which team did you sign with?
[21 May 2023] John: The Minnesota Wolves!
[21 May 2023] Tim: Nice. Anything new with you?
[21 May 2023] John: I went to Chicago last week. I met the coach there and we signed the deal.
[21 May 2023] Tim: Way to go!"""
    run(ExtractivePolicy(COUNTER), state, chunk)
    assert [item.content for item in state.semantic] == [
        "Which team did John sign with: The Minnesota Wolves!"
    ]
    # one item per turn, the date once; "Anything new?" names no topic, so it is not kept
    assert [item.content for item in state.episodic] == [
        (
            "On 21 May 2023, John went to Chicago last week (the week before 21 May 2023). "
            "John met the coach there and we signed the deal."
        )
    ]


def test_a_turns_lasting_facts_are_one_item_each_fact_checked_for_duplicates() -> None:
    """The sentence that names the topic and the one that says more about it stay together (a search
    for "pets" and "drag" finds both), as a raw passage keeps them; a fact memory holds is not
    written again."""
    state = MemoryState()
    chunk = """\
[9 May 2022] Nate: Would a pet suit you?
[9 May 2022] Joanna: I'm allergic to most reptiles and animals with fur. It can be a bit of a drag, but I find other ways to be happy.
[9 May 2022] Nate: Dogs are not for you, then.
[9 May 2022] Joanna: Yeah, I'm allergic to most reptiles and animals with fur. My sister has a parrot though."""
    run(ExtractivePolicy(COUNTER), state, chunk)
    # The reply's first fact has four content words ("most" is a function word): a short reply, so it
    # keeps the question; "Dogs are not for you, then." has one and is small talk.
    assert [item.content for item in state.semantic] == [
        (
            "Would a pet suit Joanna: Joanna is allergic to most reptiles and animals with fur. "
            "It can be a bit of a drag, but Joanna find other ways to be happy."
        ),
        "Joanna's sister has a parrot though.",
    ]


@pytest.mark.parametrize(
    "chunk",
    [
        # two articles (each title once), as HotpotQA's paragraphs come
        (
            "Shirley Temple: Shirley Temple was an American actress. She was named ambassador to Ghana.\n\n"
            "Corliss Archer: Corliss Archer is a fictional teenage girl. The character appears in the film "
            "Kiss and Tell."
        ),
        # one article in several paragraphs, as SQuAD's come
        (
            "Shirley Temple: Shirley Temple was an American actress. She was named ambassador to Ghana.\n\n"
            "Shirley Temple: The actress retired from films in 1950. Her daughter wrote a memoir."
        ),
    ],
)
def test_titled_paragraphs_are_prose_about_their_title(chunk: str) -> None:
    """Article paragraphs ("Title: text") are not turns of a conversation: no participants, and every
    sentence read alone still names what it is about."""
    state = MemoryState()
    run(ExtractivePolicy(COUNTER), state, chunk)
    contents = [item.content for item in state.semantic + state.episodic]
    assert "(Shirley Temple) She was named ambassador to Ghana." in contents
    assert "Participants:" not in state.core
    follows = ("(Corliss Archer) The character appears", "(Shirley Temple) Her daughter wrote")
    assert any(content.startswith(follows) for content in contents), contents


def test_a_reply_that_points_back_keeps_the_question_it_answers() -> None:
    """ "It was Matt Patterson …" says nothing about what "it" is: the question does ("concert"). A
    long reply that names its subject stands alone, as before."""
    state = MemoryState()
    chunk = """\
[8 May 2023] Caroline: Who played the concert?
[8 May 2023] Melanie: Thanks! It was Matt Patterson, his voice and songs were amazing.
[8 May 2023] Caroline: Who sang the opener?
[8 May 2023] Melanie: Jenna Lee sang first, her voice and songs were amazing."""
    run(ExtractivePolicy(COUNTER), state, chunk)
    assert [item.content for item in state.semantic] == [
        "Who played the concert: It was Matt Patterson, his voice and songs were amazing.",
        "Jenna Lee sang first, her voice and songs were amazing.",
    ]


def test_content_words_leave_out_the_same_function_words_retrieval_does() -> None:
    from app.policy import facts
    from app.retrieval import STOPWORDS

    assert facts.STOPWORDS is STOPWORDS  # one list (app.memory.stopwords), not two copies
    assert facts.content_words("She left after his show, before noon.") == ["left", "show", "noon"]
    assert facts.content_words("It's what I'm after", ["tim"]) == []


def test_a_sentence_naming_part_of_its_title_is_not_prefixed_again() -> None:
    state = MemoryState()
    chunk = (
        "Vermont Catamounts basketball: The team won 24 games in 2012. "
        "The Catamounts play their home games at Patrick Gym. "
        "They finished the season second in the conference."
    )
    run(ExtractivePolicy(COUNTER), state, chunk)
    contents = [item.content for item in state.semantic + state.episodic]
    assert "The Catamounts play their home games at Patrick Gym." in contents
    assert "(Vermont Catamounts basketball) They finished the season second in the conference." in contents
