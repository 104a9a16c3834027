"""Rendering an untrusted chat template, bounded.

transformers renders chat templates in Jinja's ImmutableSandboxedEnvironment (no attribute access to
internals, no mutation, `range` capped at 100,000 items). That stops code execution, not resource
use: `{{ messages[0].content * 100000 }}` or nested loops repeating the prompt build a prompt of
gigabytes that the tokenizer and the model then try to hold. So auditd renders with the same
sandbox and globals as transformers (apply_chat_template's environment: trim_blocks, lstrip_blocks,
loopcontrols, raise_exception, strftime_now, tojson) plus:
- string/list repetition (`*`) and powers (`**`) are checked before they are computed;
- the output is streamed and rendering stops once it exceeds `max_chars`;
- rendering runs under `stage("chat template rendering")`, so the audit supervisor's deadline names
  the stage when a template loops without output.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from jinja2 import TemplateError, ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from auditd.backends.base import BackendError
from auditd.stage import stage

MAX_REPEAT_CHARS = 1_000_000  # largest string/list a single `*` may build
MAX_EXPONENT = 1024


class TemplateLimitError(BackendError):
    """A chat template exceeded a limit (output size, repetition) or failed to render."""


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_REPEAT_CHARS:
                    raise TemplateLimitError(
                        f"chat template repeats a value {n:,} times (over {MAX_REPEAT_CHARS:,} items)"
                    )
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise TemplateLimitError(f"chat template raises to the power {right}")
        return super().call_binop(context, operator, left, right)


def _raise(message):
    raise TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _transformers_environment():
    """transformers' own chat-template environment, to copy its extensions, filters and globals from
    (the `{% generation %}` tag, `namespace`, `dict`, ...), so templates render exactly as there."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        return _compile_jinja_template("").environment
    except Exception:  # a transformers without it: the documented globals below
        return None


@lru_cache(maxsize=16)
def compile_template(source: str):
    base = _transformers_environment()
    extensions = [type(e) for e in base.extensions.values()] if base is not None else [ext.loopcontrols]
    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=extensions)
    env.filters["tojson"] = base.filters["tojson"] if base is not None else _tojson
    env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    if base is not None:
        env.globals.update(
            {k: base.globals[k] for k in ("raise_exception", "strftime_now", "dict", "namespace") if k in base.globals}
        )
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise TemplateLimitError(f"chat template does not compile: {type(exc).__name__}") from None


def render_bounded(source: str, max_chars: int, **context) -> str:
    """Render `source` with `context`; TemplateLimitError past `max_chars` characters of output."""
    template = compile_template(source)
    out: list[str] = []
    n = 0
    with stage("chat template rendering"):
        try:
            for chunk in template.generate(**context):
                n += len(chunk)
                if n > max_chars:
                    raise TemplateLimitError(
                        f"chat template output exceeds {max_chars:,} characters (max_prompt_chars)"
                    )
                out.append(chunk)
        except TemplateLimitError:
            raise
        except (TemplateError, TypeError, ValueError, OverflowError, RecursionError, AttributeError, KeyError) as exc:
            raise TemplateLimitError(f"chat template failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    return "".join(out)


def render_chat(tokenizer, chat, max_chars: int, add_generation_prompt: bool = True) -> str:
    """What tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=...) returns,
    rendered with the limits above."""
    getter = getattr(tokenizer, "get_chat_template", None)
    source = getter() if callable(getter) else tokenizer.chat_template
    specials = dict(getattr(tokenizer, "special_tokens_map", {}) or {})
    return render_bounded(
        source,
        max_chars,
        **specials,
        messages=chat,
        tools=None,
        documents=None,
        add_generation_prompt=add_generation_prompt,
    )
