"""BM25 retrieval over memory items (SPEC §4), cached per memory version."""

from app.retrieval.bm25 import LUCENE, OKAPI, BM25Index, BM25Params
from app.retrieval.retriever import SCORERS, CacheInfo, KindIndex, Retriever, ScoredItem, Scorer, ScorerName
from app.retrieval.tokens import STOPWORDS, Analyzer, bm25_tokens, compound_of, compound_parts, stem

__all__ = [
    "LUCENE",
    "OKAPI",
    "SCORERS",
    "STOPWORDS",
    "Analyzer",
    "BM25Index",
    "BM25Params",
    "CacheInfo",
    "KindIndex",
    "Retriever",
    "ScoredItem",
    "Scorer",
    "ScorerName",
    "bm25_tokens",
    "compound_of",
    "compound_parts",
    "stem",
]
