"""Small memories answered well, end to end through the HTTP API on the embedded default (extractive
writer, budget context, Lucene-idf BM25 with stemming, extractive answerer), on SQLite and Postgres.

The facts are short paragraphs about fictional people, ingested as one chunk and as chat turns; the
questions use other word forms than the text ("play" / "plays") and include ones memory cannot
answer, which must get the "does not contain" reply instead of an unrelated sentence."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Api

from app.qa import NO_INFORMATION

pytestmark = pytest.mark.timeout(180)

TOMAS = (
    "Tomas Berg is an architect who lives in Bergen. He plays the cello in a community orchestra. "
    "His daughter Lina studies medicine in Oslo. On weekends he sails his boat, the Kestrel, around "
    "the fjords. He is allergic to peanuts."
)
TOMAS_TURNS = """\
Tomas: Hi Ana! I'm an architect and I live in Bergen.
Ana: Nice to meet you, Tomas.
Tomas: I play the cello in a community orchestra.
Ana: That sounds lovely.
Tomas: My daughter Lina studies medicine in Oslo.
Tomas: On weekends I sail my boat, the Kestrel, around the fjords.
Tomas: Also, I'm allergic to peanuts."""
TOMAS_QUESTIONS = [
    ("What instrument does he play?", "cello"),
    ("Where does Tomas live?", "Bergen"),
    ("What does his daughter study?", "medicine"),
    ("What is the name of his boat?", "Kestrel"),
    ("What is Tomas allergic to?", "peanuts"),
]
# Two more people: a dated event and a fact that two items share words with.
REN = (
    "Ren Okafor runs a small bakery called Crumb in Leeds. She opened it on 3 March 2019. "
    "Her best seller is a cardamom bun. Ren trains for marathons and ran the London Marathon in 2022."
)
REN_QUESTIONS = [
    ("What is Ren's bakery called?", "Crumb"),
    ("When did Ren open the bakery?", "3 March 2019"),
    ("What kind of bun is her best seller?", "cardamom"),
    ("Which marathon did Ren run?", "London"),
]
# The new-user paragraph words the boat as a compound the question does not use.
MARTA = (
    "Marta Silva teaches chemistry at a school in Porto. On Sundays she races her sailboat, the Gull. "
    "She collects old typewriters."
)
MARTA_QUESTIONS = [
    ("What is the name of her boat?", "Gull"),
    ("What does Marta collect?", "typewriters"),
    ("What does Marta teach?", "chemistry"),
]
UNANSWERABLE = ["Who won the 1998 World Cup?", "What is the capital of Australia?"]


async def _ingest(api: Api, session: str, headers: dict[str, str], chunks: list[str]) -> None:
    response = await api.client.post(f"/sessions/{session}/ingest", headers=headers, json={"chunks": chunks})
    assert response.status_code == 200, response.text
    assert all(chunk["status"] == "done" for chunk in response.json()["chunks"]), response.text


async def _answer(api: Api, session: str, headers: dict[str, str], question: str) -> dict[str, Any]:
    response = await api.client.get(f"/sessions/{session}/answer", params={"q": question}, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize("form", ["paragraph", "turns"])
async def test_five_fact_paragraph_is_answered_from_memory(api: Api, form: str) -> None:
    h = await api.tenant()
    await _ingest(api, "tomas", h, [TOMAS if form == "paragraph" else TOMAS_TURNS])
    for question, expected in TOMAS_QUESTIONS:
        body = await _answer(api, "tomas", h, question)
        assert expected.lower() in body["answer"].lower(), (question, body)
        # The /answer contract: evidence per kind, each with id, content and a positive score.
        evidence = body["evidence"]
        assert set(evidence) == {"core", "semantic", "episodic"}
        shown = evidence["semantic"] + evidence["episodic"]
        assert shown and all(set(e) == {"id", "content", "score"} and e["score"] > 0 for e in shown)
        assert any(expected.lower() in e["content"].lower() for e in shown)
    for question in UNANSWERABLE:
        body = await _answer(api, "tomas", h, question)
        assert body["answer"] == NO_INFORMATION, (question, body)
        # Nothing that shares no term with the question pads the context.
        assert body["evidence"]["semantic"] == [] and body["evidence"]["episodic"] == []


async def test_dated_facts_and_refusals_on_a_second_profile(api: Api) -> None:
    h = await api.tenant()
    await _ingest(api, "ren", h, [REN])
    for question, expected in REN_QUESTIONS:
        body = await _answer(api, "ren", h, question)
        assert expected.lower() in body["answer"].lower(), (question, body)
    assert (await _answer(api, "ren", h, "Who won the 1998 World Cup?"))["answer"] == NO_INFORMATION


async def test_a_question_word_finds_the_compound_in_memory(api: Api) -> None:
    h = await api.tenant()
    await _ingest(api, "marta", h, [MARTA])
    for question, expected in MARTA_QUESTIONS:
        body = await _answer(api, "marta", h, question)
        assert expected.lower() in body["answer"].lower(), (question, body)


async def test_small_memory_ranks_the_matching_item_first(api: Api) -> None:
    """With two items, the paper's Okapi idf is negative for every term, so the item that matches ranked
    below the one that does not; the default scorer puts it first and leaves the other out."""
    h = await api.tenant()
    await _ingest(api, "two", h, ["Mira keeps bees on her roof.", "Jonas repairs old bicycles in his shed."])
    body = await _answer(api, "two", h, "Who repairs bicycles?")
    shown = body["evidence"]["semantic"] + body["evidence"]["episodic"]
    assert [e["content"] for e in shown] == ["Jonas repairs old bicycles in his shed."]
    assert "Jonas" in body["answer"]
