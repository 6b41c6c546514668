"""What the sync and async clients share: base URL, key header, timeout, retry policy, user agent."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from app.client.calls import RetryPolicy

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_RETRY = RetryPolicy()


def client_version() -> str:
    try:
        return version("memalpha")
    except PackageNotFoundError:
        return "dev"


def client_options(base_url: str, api_key: str | None, timeout: float) -> dict[str, object]:
    headers = {"User-Agent": f"memalpha-client/{client_version()}"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return {"base_url": base_url.rstrip("/"), "headers": headers, "timeout": timeout}


__all__ = ["DEFAULT_RETRY", "DEFAULT_URL", "client_options", "client_version"]
