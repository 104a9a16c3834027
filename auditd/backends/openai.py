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


def completions_url(base_url: str) -> str:
    """The legacy text-completions endpoint of the same server (raw prompts, logprobs)."""
    return chat_completions_url(base_url).removesuffix("/chat/completions") + "/completions"


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
        self.completions_url = completions_url(base_url)
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
        return self._request(self.url, self._body(chat, params), self._parse)

    def _request(self, url: str, body: dict[str, Any], parse) -> Any:
        last = ""
        for attempt in range(self.retries + 1):
            response = None
            self._count("requests")
            try:
                response = self._client.post(url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {_excerpt(str(e)) or 'no detail'}"
            else:
                if response.status_code == 200:
                    return parse(response)
                last = f"HTTP {response.status_code}: {_excerpt(response.text)}"
                if response.status_code not in RETRY_STATUS:
                    raise BackendError(f"{url} refused the request ({last})")
            if attempt < self.retries:
                self._count("retries")
                wait = self._wait(attempt, response)
                log.warning("openai backend: %s from %s; retry %d/%d in %.1fs", last, url, attempt + 1,
                            self.retries, wait)  # fmt: skip
                time.sleep(wait)
        raise BackendError(f"{url} failed after {self.retries + 1} attempts ({last})")

    def _parse(self, response: httpx.Response) -> str:
        try:
            data = response.json()
            content = data["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"{self.url} sent an unexpected response: {_excerpt(response.text)}") from None
        usage = data.get("usage") or {}
        self._count("generated_tokens", int(usage.get("completion_tokens") or 0))
        return (content or "").strip()

    def _parse_text(self, response: httpx.Response) -> str:
        try:
            data = response.json()
            text = data["choices"][0]["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            excerpt = _excerpt(response.text)
            raise BackendError(f"{self.completions_url} sent an unexpected response: {excerpt}") from None
        self._count("generated_tokens", int((data.get("usage") or {}).get("completion_tokens") or 0))
        return (text or "").strip()

    def _parse_top_logprobs(self, response: httpx.Response) -> dict[str, float]:
        try:
            top = response.json()["choices"][0]["logprobs"]["top_logprobs"][0]
            return {str(k): float(v) for k, v in top.items()}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"{self.completions_url} sent no top logprobs: {_excerpt(response.text)}") from None

    def complete(self, prompts: list[str], params: GenerationParams) -> list[str]:
        """Raw prompts through `/v1/completions` (the server tokenizes them and adds its BOS)."""

        def one(prompt: str) -> str:
            body = self._body([], params) | {"prompt": prompt}
            body.pop("messages")
            return self._request(self.completions_url, body, self._parse_text)

        return self._map(one, prompts, params.batch_size)

    def next_token_logprobs(self, prompts: list[str], tokens: list[str], batch_size: int = 8) -> list[dict[str, float]]:
        """The server's top-20 next-token logprobs, restricted to `tokens`; a token outside the top 20
        is absent from its dict (the judge then reports an error, never a guess)."""

        def one(prompt: str) -> dict[str, float]:
            body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": 20}
            top = self._request(self.completions_url, body, self._parse_top_logprobs)
            return {t: top[t] for t in tokens if t in top}

        return self._map(one, prompts, batch_size)

    def generate(self, chats: list[Chat], params: GenerationParams) -> list[str]:
        return self._map(lambda chat: self._complete(chat, params), chats, params.batch_size)

    def _map(self, fn, items: list, batch_size: int) -> list:
        if not items:
            return []
        start = time.perf_counter()
        workers = max(1, min(self.concurrency, batch_size, len(items)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="auditd-openai")
        futures = [pool.submit(fn, item) for item in items]
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
