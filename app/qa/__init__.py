"""Answering questions from memory (SPEC §4) and scoring answers (SPEC §5)."""

from app.qa.answer import AnswerResult, Evidence, answer_question
from app.qa.answerers import Answer, Answerer, ExtractiveAnswerer, OpenAIAnswerer
from app.qa.context import AnswerContext, ContextMode, assemble_context
from app.qa.extract import NO_INFORMATION
from app.qa.prompt import ANSWER_SYSTEM_PROMPT, answer_messages

__all__ = [
    "ANSWER_SYSTEM_PROMPT",
    "NO_INFORMATION",
    "Answer",
    "AnswerContext",
    "AnswerResult",
    "Answerer",
    "ContextMode",
    "Evidence",
    "ExtractiveAnswerer",
    "OpenAIAnswerer",
    "answer_messages",
    "answer_question",
    "assemble_context",
]
