"""Readers that turn source files (LoCoMo conversations, plain text) into policy chunks and QA items."""

from trainer.corpus.locomo import (
    SCORED_CATEGORIES,
    Conversation,
    QAItem,
    Turn,
    is_locomo_file,
    load_conversation,
    load_locomo,
    pack_lines,
)
from trainer.corpus.text import read_text_chunks

__all__ = [
    "SCORED_CATEGORIES",
    "Conversation",
    "QAItem",
    "Turn",
    "is_locomo_file",
    "load_conversation",
    "load_locomo",
    "pack_lines",
    "read_text_chunks",
]
