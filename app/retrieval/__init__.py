"""BM25 retrieval over memory items (SPEC §4), cached per memory version."""

from app.retrieval.bm25 import BM25Index, BM25Params
from app.retrieval.retriever import CacheInfo, KindIndex, Retriever, ScoredItem
from app.retrieval.tokens import bm25_tokens

__all__ = ["BM25Index", "BM25Params", "CacheInfo", "KindIndex", "Retriever", "ScoredItem", "bm25_tokens"]
