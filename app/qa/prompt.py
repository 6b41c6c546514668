"""The answerer's prompt (SPEC §4): memory context (core, numbered semantic, numbered episodic, no
ids) and the question. Task hints such as "answer as \\boxed{label}" arrive inside the question."""

from __future__ import annotations

from app.memory import TokenCounter

ANSWER_SYSTEM_PROMPT = """\
You answer questions from a memory. An assistant wrote this memory while it read a long text or \
conversation: a core summary, semantic memory (facts and knowledge) and episodic memory (events with \
their time). Only the items most relevant to the question are shown.

Answer from the memory alone. Be brief: give the answer itself (a name, a date, a number or a short \
phrase) unless the question asks for more. If the question asks for a format, such as \\boxed{label}, \
use it. If the memory does not hold the information the question needs, say that the memory does not \
contain it."""


def answer_user_message(context: str, question: str) -> str:
    return f"<memory>\n{context}\n</memory>\n\nQuestion: {question}"


def answer_messages(context: str, question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": ANSWER_SYSTEM_PROMPT},
        {"role": "user", "content": answer_user_message(context, question)},
    ]


def prompt_tokens(messages: list[dict[str, str]], counter: TokenCounter) -> int:
    """Tokens of the messages' text (the chat template adds a handful more; budgets leave room)."""
    return sum(counter.count(message["content"]) for message in messages)
