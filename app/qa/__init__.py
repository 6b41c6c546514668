"""Answering questions from memory (SPEC §4) and scoring answers (SPEC §5)."""

from app.qa.answer import AnswerResult, Evidence, answer_question
from app.qa.answerers import (
    NO_INFORMATION,
    Answer,
    Answerer,
    ExtractiveAnswerer,
    OpenAIAnswerer,
    make_answerer,
)
from app.qa.context import AnswerContext, assemble_context
from app.qa.prompt import ANSWER_SYSTEM_PROMPT, answer_messages

__all__ = [
    "ANSWER_SYSTEM_PROMPT", "NO_INFORMATION", "Answer", "AnswerContext", "AnswerResult", "Answerer", "Evidence",
    "ExtractiveAnswerer", "OpenAIAnswerer", "answer_messages", "answer_question", "assemble_context",
    "make_answerer",
]
