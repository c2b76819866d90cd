"""Strict JSON for everything that crosses the wire: client bodies and upstream answers.

Python's parser accepts what JSON does not: NaN, Infinity, numbers that overflow to infinity
(1e309), lone UTF-16 surrogates (`"\\ud800"`), and nesting deep enough to exhaust the stack.
Each of those parsed fine and failed later (when re-encoded upstream, or when a receipt was
written), after money was held. Refusing them while parsing keeps them at the edge.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 64  # far beyond any real request; deeper bodies are refused while parsing
# A lone surrogate can only arrive as a \uD800-\uDFFF escape: raw UTF-8 cannot encode one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_OPENERS = frozenset(b"[{")


class StrictJsonError(json.JSONDecodeError):
    """Not JSON as RFC 8259 defines it (a JSONDecodeError, so FastAPI maps it as one)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError(f"number out of range: {text[:40]}")
    return value


def _no_constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not a JSON value")


def _depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def loads(raw: bytes | str) -> Any:
    """Parse `raw` as strict JSON: UTF-8, finite numbers, valid Unicode strings, bounded
    nesting. Raises StrictJsonError (a json.JSONDecodeError) for anything else."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise StrictJsonError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StrictJsonError("the body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except StrictJsonError:
        raise
    except (ValueError, RecursionError) as exc:
        raise StrictJsonError(str(exc)[:200]) from None
    if _SURROGATE_ESCAPE.search(data):
        try:  # paired surrogates were joined by the parser; a lone one cannot be encoded
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise StrictJsonError("a string holds a lone UTF-16 surrogate") from None
    return value


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON that refuses non-finite numbers instead of writing NaN."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
