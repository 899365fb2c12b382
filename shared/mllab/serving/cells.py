"""A raw cell as the lab reads it (frontend/js/data.js, normalizeCell and key), in Python: the server
must turn `"  3.50 "`, `"NA"`, `"TRUE"` and `3.0` into exactly what the browser made of them while
training, or a category would land in the wrong one-hot slot. Every rule here mirrors the page's."""

from __future__ import annotations

import math
import re
from typing import Any

MISSING = "__missing__"  # the category of a missing value (data.js MISSING)
UNSEEN = "__unseen__"  # the one-hot slot of a category the training rows never had (data.js UNSEEN)
MAX_SAFE_INTEGER = 2**53 - 1  # text beyond this stays text, as with Papa Parse's dynamicTyping

# JavaScript's \d is ASCII only; Python's would take any Unicode digit.
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", re.ASCII)
_NA = frozenset(["", "na", "n/a", "nan", "-nan", "#n/a", "<na>", "null", "none", "?"])
# String.prototype.trim() removes WhiteSpace and LineTerminator, which is not str.strip()'s set
# (JavaScript trims U+FEFF, Python does not; Python strips U+001C..U+001F, JavaScript does not).
_JS_SPACE = (
    "\t\n\v\f\r \u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def js_number_text(value: float) -> str:
    """`String(value)` in JavaScript for a finite number: the shortest digits that round-trip (which
    Python's repr also gives), laid out by ECMAScript's Number::toString (exponent only below 1e-6 or
    from 1e21 on, `1e-7`, `1.5e+21`, integers without `.0`)."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(float(value))).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)  # value = 0.<digits> * 10**point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k, n = len(digits), point
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        text = (digits[0] + ("." + digits[1:] if k > 1 else "")) + ("e+" if e >= 0 else "e-") + str(abs(e))
    return sign + text


def normalize(value: Any) -> Any:
    """data.js normalizeCell: text is trimmed, missing markers become None, numbers within the safe
    integer range and true/false are converted; other text stays text. JSON numbers pass through
    (a non-finite one is missing); anything else (a list, an object) is returned as it came."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value if _finite(value) else None
    if not isinstance(value, str):
        return value
    s = value.strip(_JS_SPACE)
    lower = s.lower()
    if lower in _NA:
        return None
    if NUMBER.fullmatch(s):
        n = float(s)  # the regex admits only decimal notation, which float() and Number() read alike
        if _finite(n) and abs(n) <= MAX_SAFE_INTEGER:
            return n
    if lower in ("true", "false"):
        return lower == "true"
    return s


def key(value: Any) -> str:
    """data.js key: the category a (normalized) cell falls in, as the vocabulary spells it."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return js_number_text(float(value))
    return str(value)


def as_float(value: int | float) -> float:
    """A JSON number as JavaScript holds it: an integer beyond any double is infinity."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _finite(value: int | float) -> bool:
    f = as_float(value)
    return f - f == 0.0  # False for inf and nan
