"""Print the HTTP API's OpenAPI document (published as docs/openapi.json):
`python -m auditd.api.openapi > docs/openapi.json`. A test keeps the published copy current."""

from __future__ import annotations

import json


def build_spec() -> dict:
    from auditd.api.app import create_app

    # The document depends on the routes only: no database or metrics registry is touched.
    return create_app(None, None).openapi()  # type: ignore[arg-type]


def render() -> str:
    return json.dumps(build_spec(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
