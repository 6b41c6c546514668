"""Settings the service must honour when it builds its parts."""

from __future__ import annotations

from conftest import service_settings

from app.service import MemoryService


def test_retriever_cache_size_comes_from_settings() -> None:
    service = MemoryService(service_settings("sqlite+aiosqlite:///unused.db", retrieval_cache_entries=7))
    assert service.retriever.max_entries == 7
