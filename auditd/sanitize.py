"""Error text that may be stored and served: no raw bytes of files nobody vetted.

Parser errors (json, safetensors, tokenizers, GGUF) like to quote what they choke on: a bytes
literal of the file's first bytes, or a decoded snippet. Stored errors are readable on
GET /v1/audits, so such quotes are cut out, and control characters dropped.
"""

from __future__ import annotations

import re

_BYTES_LITERAL = re.compile(r"""b(['"])(?:\\.|(?!\1).){0,4096}?\1""")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CODEC = re.compile(r"can't decode byte 0x[0-9a-f]{2}", re.I)


def sanitize(text: str) -> str:
    text = _BYTES_LITERAL.sub("b'<bytes omitted>'", text)
    text = _CODEC.sub("can't decode a byte", text)
    return _CONTROL.sub("", text)
