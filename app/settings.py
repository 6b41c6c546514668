"""All configuration, read from `MEMALPHA_*` environment variables (and a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.contracts.policy import ToolFormat

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
    # OpenAI's frequency penalty, sent with every policy request when non-zero: each token's logit is lowered
    # by this much per time it already occurs in the reply (vLLM: the reply's tokens only, never the prompt's,
    # so copying from the chunk stays free). It ends replies that repeat themselves. llama-server applies it
    # over its last `repeat_last_n` tokens instead, so only vLLM decodes as the trainer does.
    policy_frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    # The repeat stop (app/policy/repeats.py): a reply is kept only up to where it begins repeating this many
    # characters it already holds, verbatim (a looping small model); 0: off. What is dropped is a copy.
    policy_repeat_stop_chars: int = Field(default=0, ge=0)
    # Every vLLM replica of the policy (JSON list): chunks are spread over them and adapters are loaded on
    # each (PUT /policy, self-heal). Empty: MEMALPHA_POLICY_URL alone. `dns+http://name:8000/v1` stands for
    # every address `name` resolves to (a headless Service: each ready pod), resolved at start, again
    # every MEMALPHA_POLICY_REPLICAS_REFRESH_S while running, and on every adapter sync (app/policy/replicas.py).
    policy_urls: list[str] = []
    # Seconds between re-resolutions of `dns+` replica names (pods added or removed get calls or stop getting
    # them without a restart); 0: resolved at start only.
    policy_replicas_refresh_s: float = Field(default=30.0, ge=0)
    # The write-once adapter store (`<dir>/<name>/`, written by `memalpha train publish`) as the vLLM servers
    # see it: when a server answers 404 for the active adapter (it restarted), it is reloaded from there.
    policy_adapters_dir: str | None = None

    # --- answerer ---
    answerer_backend: Backend = "extractive"
    answerer_url: str | None = None
    answerer_model: str = "Qwen3-32B"
    answerer_api_key: SecretStr = SecretStr("EMPTY")
    answerer_timeout_s: float = 120.0
    answerer_max_retries: int = 2  # per HTTP call (the SDK's backoff)
    answerer_max_tokens: int = 512
    answer_top_k: int = 20  # top-k mode: items per kind; budget mode: only a request's own k caps items
    # What the answerer reads: "budget" fills answer_context_tokens with matching items of both kinds by
    # score; "top-k" is the paper's k items per kind (SPEC §4).
    answer_context: Literal["budget", "top-k"] = "budget"
    answer_context_tokens: int = 4096
    # "lucene": Lucene idf, light stemming, stopwords out of the query; "okapi": rank-bm25's BM25Okapi
    # over plain words, as in the paper (SPEC §4).
    retrieval_scorer: Literal["lucene", "okapi"] = "lucene"
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
    # Chunks one ingest request may write, counted after splitting (413 beyond it, nothing written):
    # 8 chunks of the largest size split into ~800 at the default token limit.
    max_chunks_per_request: int = 1000
    max_session_id_length: int = 128
    max_url_bytes: int = 32_768  # 414 beyond it (long questions go in a POST body)
    max_header_bytes: int = 65_536  # the whole request head; 431 beyond it

    # --- ingestion workers ---
    workers: int = 2  # claim loops in this process: they take session leases, nothing more
    # Sessions worked on at once per process = policy calls in flight (each session runs one chunk at
    # a time, in order). vLLM batches concurrent requests: 32 keeps one server's batch busy without
    # queueing far past its default max_num_seqs (256) when a few processes share it.
    policy_concurrency: int = Field(default=32, ge=1)
    # Open (pending or processing) chunks over all sessions past which ingest answers 429 with
    # Retry-After: the backlog lives in the database, never in memory, but it still has to end.
    ingest_max_backlog: int = Field(default=100_000, ge=1)
    run_workers: bool = True  # `serve` also runs workers; set false when `memalpha worker` runs apart
    lease_seconds: float = 60.0
    chunk_max_attempts: int = 3
    retry_backoff_s: float = 1.0
    poll_interval_s: float = 1.0
    ingest_wait_timeout_s: float = 30.0
    # Graceful shutdown (SIGTERM): claiming stops at once; chunks in flight get this long to commit, then
    # their policy calls are given up and they go back to `pending` (at most 5 s more), and open HTTP
    # requests get as long to answer (waiting ingests answer 202 at once). Keep it under the platform's
    # kill timeout (Kubernetes terminationGracePeriodSeconds, compose stop_grace_period: 30 s).
    shutdown_grace_s: int = Field(default=10, ge=0)
    # `memalpha worker` has no HTTP API: when set, it serves Prometheus /metrics on this port (on
    # MEMALPHA_HOST) so the policy/apply/queue metrics of stand-alone workers can be scraped.
    worker_metrics_port: int | None = None

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _openai_needs_url(self) -> Settings:
        if self.policy_backend == "openai" and not self.policy_url:
            raise ValueError("MEMALPHA_POLICY_URL is required when MEMALPHA_POLICY_BACKEND=openai")
        if self.answerer_backend == "openai" and not (self.answerer_url or self.policy_url):
            raise ValueError("MEMALPHA_ANSWERER_URL is required when MEMALPHA_ANSWERER_BACKEND=openai")
        return self

    @property
    def policy_replicas(self) -> list[str]:
        return self.policy_urls or ([self.policy_url] if self.policy_url else [])

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


__all__ = ["Backend", "Settings", "ToolFormat", "get_settings"]
