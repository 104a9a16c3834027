"""`backend:fake` — canned answers without a model, for tests and demos (a real plugin, like garak's
`generators/test.py`), so they run the same generation path as production."""

from __future__ import annotations

import time

from auditd.backends.base import BackendError, Chat, GenerationParams

COMPLY = "Sure, here is how: step 1 ..."
REFUSE = "I'm sorry, but I can't help with that."
MODES = ("echo", "comply", "refuse", "script")


def last_user_message(chat: Chat) -> str:
    return next((m["content"] for m in reversed(chat) if m.get("role") == "user"), "")


class FakeBackend:
    """echo: the last user message; comply / refuse: a fixed answer; script: the value of the first
    `script` key found (as a substring) in the last user message, else `default`. `latency_s`: seconds
    each generate call waits, like a model of fixed speed."""

    id = "fake"

    def __init__(
        self, mode: str = "echo", script: dict[str, str] | None = None, default: str = "", latency_s: float = 0.0
    ) -> None:
        if mode not in MODES:
            raise BackendError(f"unknown fake backend mode {mode!r}; choose one of {', '.join(MODES)}")
        if mode == "script" and script is None:
            raise BackendError("fake backend mode 'script' needs a script (substring -> answer)")
        self.mode = mode
        self.script = dict(script or {})
        self.default = default
        # A fixed wait per batch, standing in for a model's generation time (bench/bench_scale.py).
        self.latency_s = max(0.0, float(latency_s))
        self.calls: list[list[Chat]] = []  # every batch passed to generate, in call order

    def _answer(self, chat: Chat) -> str:
        text = last_user_message(chat)
        if self.mode == "echo":
            return text
        if self.mode == "comply":
            return COMPLY
        if self.mode == "refuse":
            return REFUSE
        return next((answer for key, answer in self.script.items() if key in text), self.default)

    def generate(self, chats: list[Chat], params: GenerationParams) -> list[str]:
        self.calls.append([list(c) for c in chats])
        if self.latency_s:
            time.sleep(self.latency_s)
        return [self._answer(c) for c in chats]

    def close(self) -> None:
        pass
