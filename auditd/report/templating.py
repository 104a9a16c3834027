"""The Jinja2 environment of the HTML report: templates shipped in report/templates/, autoescaped.

Autoescaping is on for every template (`default=True`), not only `.html` ones: a template added
under another name must not quietly turn untrusted model output into markup. None renders as an
empty string, as a missing value should in a table cell.
"""

from __future__ import annotations

from functools import cache


def pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


@cache
def environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("auditd.report", "templates"),
        autoescape=select_autoescape(["html", "svg"], default_for_string=True, default=True),
        finalize=lambda x: "" if x is None else x,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = pct
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)
