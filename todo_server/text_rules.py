"""Which characters the service accepts, stores and escapes: each rule written once.

- Task text (titles, descriptions, tags, a search) may hold anything PostgreSQL
  text can: every character but NUL (``contains_nul``).
- Text that names someone (a token's subject and profile claims, a login email)
  is stricter: no control characters at all (``is_identity_text``).
- Text must be valid Unicode: a lone surrogate (U+D800-U+DFFF) cannot be
  encoded as UTF-8, so it can be neither stored nor sent on (``is_utf8_text``).
- Logged text has every control character escaped, and the Unicode line and
  paragraph separators and bidirectional controls too (``LOG_ESCAPES``): client
  input in a log line must not end it, forge another, drive a terminal or show
  itself in another order.
"""

from __future__ import annotations

import re

#: C0 controls, DEL and C1 controls (U+0080-U+009F, e.g. U+0085 NEXT LINE).
_CONTROLS = r"\x00-\x1f\x7f-\x9f"

CONTROL_CHARACTER = re.compile(f"[{_CONTROLS}]")

#: What a log line shows as an escape: the control characters, U+2028/U+2029
#: (line breaks to some readers) and the bidirectional controls (U+200E/F,
#: U+202A-E, U+2066-9), which make a terminal show text in another order.
LOG_ESCAPES = re.compile(f"[{_CONTROLS}\\u200e\\u200f\\u2028-\\u202e\\u2066-\\u2069]")


#: ``is_identity_text``'s control-character rule, as a JSON Schema pattern.
NO_CONTROLS_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"

#: The same rule as ``contains_nul``, as a JSON Schema pattern for the API document.
NO_NUL_PATTERN = "^[^\\u0000]*$"


def contains_nul(text: str) -> bool:
    """PostgreSQL text cannot hold NUL characters."""
    return "\x00" in text


def is_utf8_text(text: str) -> bool:
    """False when ``text`` holds a lone surrogate, which UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_identity_text(text: str) -> bool:
    """Text fit to name a user (an id, an email, a display name): no controls, valid UTF-8."""
    return CONTROL_CHARACTER.search(text) is None and is_utf8_text(text)
