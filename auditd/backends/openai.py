"""`backend:openai` — any OpenAI-compatible chat server (vLLM, TGI, `transformers serve`, OpenAI).

One POST to `{base_url}/v1/chat/completions` per chat, at most `min(concurrency, params.batch_size)`
in flight (a thread pool over one `httpx.Client`), outputs in the callers' order. 429, 5xx,
connection errors and timeouts are retried with exponential backoff; other 4xx fail at once. Any
request still failing fails the whole call with a `BackendError`, so an audit never scores a
partial set. The API key is read from the environment variable named by `api_key_env` and never
appears in messages or logs.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from auditd.backends.base import BackendError, Chat, GenerationParams

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
MAX_BACKOFF_S = 30.0


def chat_completions_url(base_url: str) -> str:
    """`http://h:8000`, `http://h:8000/` and `http://h:8000/v1` all mean the same server."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


def _excerpt(text: str, n: int = 200) -> str:
    return " ".join(text.split())[:n]


class OpenAIBackend:
    """Chat completions over HTTP; `backoff_s` is the first retry's wait (doubled each retry)."""

    id = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "AUDITD_OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 60,
        retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        if concurrency < 1:
            raise BackendError(f"concurrency must be >= 1, got {concurrency}")
        if retries < 0:
            raise BackendError(f"retries must be >= 0, got {retries}")
        self.url = chat_completions_url(base_url)
        self.model = model
        self.concurrency = concurrency
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env) if api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.stats: dict[str, Any] = {"requests": 0, "retries": 0, "generated_tokens": 0, "generate_seconds": 0.0}
        self._lock = threading.Lock()  # guards stats; requests run in worker threads

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _body(self, chat: Chat, params: GenerationParams) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": chat,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "stream": False,
        }

    def _wait(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                return min(float(retry_after), MAX_BACKOFF_S)
            except ValueError:
                pass
        # Exponential backoff with jitter, so many workers do not hit a recovering server in step.
        return min(self.backoff_s * 2**attempt, MAX_BACKOFF_S) * (1 + 0.1 * random.random())

    def _complete(self, chat: Chat, params: GenerationParams) -> str:
        body = self._body(chat, params)
        last = ""
        for attempt in range(self.retries + 1):
            response = None
            self._count("requests")
            try:
                response = self._client.post(self.url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {_excerpt(str(e)) or 'no detail'}"
            else:
                if response.status_code == 200:
                    return self._parse(response)
                last = f"HTTP {response.status_code}: {_excerpt(response.text)}"
                if response.status_code not in RETRY_STATUS:
                    raise BackendError(f"{self.url} refused the request ({last})")
            if attempt < self.retries:
                self._count("retries")
                wait = self._wait(attempt, response)
                log.warning("openai backend: %s from %s; retry %d/%d in %.1fs", last, self.url, attempt + 1,
                            self.retries, wait)  # fmt: skip
                time.sleep(wait)
        raise BackendError(f"{self.url} failed after {self.retries + 1} attempts ({last})")

    def _parse(self, response: httpx.Response) -> str:
        try:
            data = response.json()
            content = data["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"{self.url} sent an unexpected response: {_excerpt(response.text)}") from None
        usage = data.get("usage") or {}
        self._count("generated_tokens", int(usage.get("completion_tokens") or 0))
        return (content or "").strip()

    def generate(self, chats: list[Chat], params: GenerationParams) -> list[str]:
        if not chats:
            return []
        start = time.perf_counter()
        workers = max(1, min(self.concurrency, params.batch_size, len(chats)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="auditd-openai")
        futures = [pool.submit(self._complete, chat, params) for chat in chats]
        try:
            outputs = [f.result() for f in futures]
        finally:
            # On the first failure, drop the queued requests and return without waiting for the rest.
            pool.shutdown(wait=False, cancel_futures=True)
            with self._lock:
                self.stats["generate_seconds"] += time.perf_counter() - start
        return outputs

    def close(self) -> None:
        self._client.close()
