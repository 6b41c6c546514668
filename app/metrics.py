"""Prometheus metrics of the service (names are a contract with the dashboards in deploy/ and ops/).
No per-session labels: sessions are unbounded."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUEST_DURATION = Histogram(
    "memalpha_http_request_duration_seconds",
    "HTTP request latency",
    ("method", "route", "status"),
    buckets=_LATENCY_BUCKETS,
)
CHUNK_QUEUE_WAIT = Histogram(
    "memalpha_chunk_queue_wait_seconds",
    "Time from a chunk's acceptance to the start of its processing",
    buckets=_LATENCY_BUCKETS,
)
POLICY_LATENCY = Histogram(
    "memalpha_policy_latency_seconds", "Latency of one policy call (one chunk)", buckets=_LATENCY_BUCKETS
)
APPLY_LATENCY = Histogram(
    "memalpha_apply_latency_seconds",
    "Applying one chunk's operations and committing them",
    buckets=_LATENCY_BUCKETS,
)
POLICY_TOKENS = Counter("memalpha_policy_tokens_total", "Tokens used by the policy", ("kind",))
OPERATIONS = Counter("memalpha_operations_total", "Memory operations", ("tool", "memory_type", "status"))
PARSE_FAILURES = Counter("memalpha_parse_failures_total", "Policy replies with parse errors")
PENDING_CHUNKS = Gauge("memalpha_pending_chunks", "Chunks accepted and not yet done or failed")
ANSWER_LATENCY = Histogram(
    "memalpha_answer_latency_seconds",
    "Answering one question (retrieval + answerer)",
    buckets=_LATENCY_BUCKETS,
)
RETRIEVAL_LATENCY = Histogram(
    "memalpha_retrieval_latency_seconds", "BM25 retrieval for one question", buckets=_LATENCY_BUCKETS
)
POLICY_UP = Gauge(
    "memalpha_policy_up", "1 when the policy server answered the last readiness check (GET /readyz?full=1)"
)
