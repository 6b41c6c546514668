"""All configuration, read from `MEMALPHA_*` environment variables (and a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ToolFormat = Literal["alpha", "hermes", "native", "json"]
Backend = Literal["extractive", "openai"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEMALPHA_", env_file=".env", extra="ignore")

    # --- storage ---
    database_url: str = "sqlite+aiosqlite:///./memalpha.db"
    db_pool_size: int = 10
    # Migrate the schema at start-up. Unset: only on SQLite (the embedded default); a Postgres
    # deployment runs `memalpha migrate` (the service refuses to start on an out-of-date schema).
    auto_migrate: bool | None = None

    # --- HTTP server ---
    host: str = "127.0.0.1"
    port: int = 8000
    # "auto": auth off only when bound to a loopback address (the embedded default), on otherwise.
    auth: Literal["auto", "on", "off"] = "auto"
    # Optional key minted at start-up (docker-compose bootstrap); stored hashed like any other key.
    bootstrap_api_key: SecretStr | None = None
    bootstrap_tenant: str = "default"
    bootstrap_admin: bool = True

    # --- policy (memory writer) ---
    policy_backend: Backend = "extractive"
    policy_url: str | None = None  # OpenAI-compatible base URL, e.g. http://vllm:8000/v1
    policy_model: str = "Memalpha-4B"
    policy_api_key: SecretStr = SecretStr("EMPTY")
    policy_tool_format: ToolFormat = "alpha"
    policy_timeout_s: float = 120.0
    policy_max_retries: int = 2  # per HTTP call, inside one chunk attempt
    policy_retry_backoff_s: float = 0.5  # first wait between those retries; doubles per retry
    policy_max_tokens: int = 2048
    policy_temperature: float = 0.0
    policy_prompt_budget_tokens: int = 6144
    policy_max_calls: int = 32  # `json` tool format: most tool calls the constrained reply may hold

    # --- answerer ---
    answerer_backend: Backend = "extractive"
    answerer_url: str | None = None
    answerer_model: str = "Qwen3-32B"
    answerer_api_key: SecretStr = SecretStr("EMPTY")
    answerer_timeout_s: float = 120.0
    answerer_max_retries: int = 2  # per HTTP call (the SDK's backoff)
    answerer_max_tokens: int = 512
    answer_top_k: int = 20
    answer_context_tokens: int = 30000
    retrieval_cache_entries: int = 1024  # BM25 indexes kept, one per (session, kind, memory version)

    # --- token counting: a HF `tokenizer.json` of the policy model; word-based estimate when unset ---
    tokenizer_file: str | None = None

    # --- memory limits ---
    core_token_limit: int = 512
    max_item_tokens: int = 1024
    max_items_per_kind: int = 10000
    max_chunk_tokens: int = 2048  # longer input is split into chunks of at most this many tokens
    max_chunk_bytes: int = 1_000_000  # hard limit per chunk string: 413 beyond it
    max_request_bytes: int = 8_000_000
    max_session_id_length: int = 128

    # --- ingestion workers ---
    workers: int = 2  # asyncio worker tasks in this process
    run_workers: bool = True  # `serve` also runs workers; set false when `memalpha worker` runs apart
    lease_seconds: float = 60.0
    chunk_max_attempts: int = 3
    retry_backoff_s: float = 1.0
    poll_interval_s: float = 1.0
    ingest_wait_timeout_s: float = 30.0

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _openai_needs_url(self) -> "Settings":
        if self.policy_backend == "openai" and not self.policy_url:
            raise ValueError("MEMALPHA_POLICY_URL is required when MEMALPHA_POLICY_BACKEND=openai")
        if self.answerer_backend == "openai" and not (self.answerer_url or self.policy_url):
            raise ValueError("MEMALPHA_ANSWERER_URL is required when MEMALPHA_ANSWERER_BACKEND=openai")
        return self

    @property
    def auth_enabled(self) -> bool:
        if self.auth == "auto":
            return self.host not in {"127.0.0.1", "localhost", "::1"}
        if self.auth == "off" and self.host not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError("MEMALPHA_AUTH=off is only allowed when bound to 127.0.0.1")
        return self.auth == "on"


@lru_cache
def get_settings() -> Settings:
    return Settings()


__all__ = ["Settings", "get_settings", "ToolFormat", "Backend"]
