"""Knowledge updates (`locomo-updates`): facts that change later in a stream, questions about the
latest value.

The stream is a real LoCoMo conversation (its first `sessions` sessions, default 4). Into its first
session each speaker states three one-value facts (where they live, their job, their favourite food);
into its last session, the new value of each, in other words ("I moved to …", "I started working as
…", "My new favourite food is …"). Questions ask for the current value; the episode's metadata keeps
the stale (first) value of each question, so an answer can be scored as current, stale or missing.
Values are drawn per episode from fixed lists with the build seed; the surrounding conversation is
the shared data's."""

from __future__ import annotations

from dataclasses import replace

from trainer.corpus.locomo import Turn, load_locomo, pack_lines
from trainer.episodes.config import BuildConfig
from trainer.episodes.locomo import DEFAULT_FILE
from trainer.episodes.model import QA, Episode

DATA_SOURCE = "locomo"  # token F1 is still reported; the update score uses the metadata
DEFAULT_SESSIONS = 4
CITIES = ["Lisbon", "Berlin", "Toronto", "Nairobi", "Osaka", "Denver", "Krakow", "Valparaiso", "Auckland"]
JOBS = ["nurse", "carpenter", "librarian", "pilot", "pharmacist", "architect", "translator", "baker"]
FOODS = ["ramen", "paella", "falafel", "pierogi", "tacos", "dumplings", "lasagna", "curry"]
# (slot, first statement, later statement, question); {v} is the value, {who} the speaker.
SLOTS = (
    ("home", "I live in {v}.", "Big news: I moved to {v} last month.", "Where does {who} live now?"),
    ("job", "I work as a {v}.", "I started working as a {v} this year.", "What is {who}'s job now?"),
    (
        "food",
        "My favourite food is {v}.",
        "My new favourite food is {v}.",
        "What is {who}'s favourite food now?",
    ),
)
_VALUES = {"home": CITIES, "job": JOBS, "food": FOODS}


def build_updates(config: BuildConfig) -> list[Episode]:
    episodes = []
    sessions = config.sessions or DEFAULT_SESSIONS
    for number, conversation in enumerate(load_locomo(config.source(DEFAULT_FILE))[: config.episodes]):
        conversation = conversation.first_sessions(sessions)
        rng = config.rng("locomo-updates", number)
        turns = list(conversation.turns)
        first_session = [t for t in turns if t.session == 1]
        last = max(t.session for t in turns)
        last_session = [t for t in turns if t.session == last]
        questions: list[QA] = []
        stale: dict[str, str] = {}
        early: list[Turn] = []
        late: list[Turn] = []
        for speaker in (conversation.speaker_a, conversation.speaker_b):
            for slot, before, after, question in SLOTS:
                old, new = rng.sample(_VALUES[slot], 2)
                early.append(
                    replace(first_session[0], speaker=speaker, text=before.format(v=old), dia_id="U")
                )
                late.append(replace(last_session[0], speaker=speaker, text=after.format(v=new), dia_id="U"))
                text = question.format(who=speaker)
                questions.append(QA(question=text, answer=new, category=4))  # single-hop, for token F1
                stale[text] = old
        stream = early + turns + late  # the first statements open the stream, the changes close it
        episodes.append(
            Episode(
                instance_id=f"{conversation.sample_id}-updates",
                data_source=DATA_SOURCE,
                chunks=pack_lines([turn.line() for turn in stream], config.chunk_limit(), config.counter),
                questions=questions,
                metadata={"stale": stale, "sessions": last},
            )
        )
    return episodes
