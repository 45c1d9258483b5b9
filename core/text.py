"""Text that reaches a person from a source we do not control (a task's progress message, a task's
error, a remote endpoint's answer), made safe to store and to print: the one cleaning rule, for
progress messages (core.tasks), run errors (core.executor, worker.webhook) and the command line's
output of errors stored before the rule (monitor_scheduler.console).

- control characters (C0, DEL, C1 such as U+009B, the terminal's CSI) and line/paragraph
  separators become spaces: a terminal or a log line shows them as a gap, never acts on them;
- format characters (bidi overrides such as U+202E, zero-width characters, BOM) and lone
  surrogates are dropped: invisible or misleading, and lone surrogates are not storable as UTF-8;
- the ends are stripped, and text longer than `limit` is cut to `limit` characters ending in "…".

The work is bounded by `limit`, not by the text: cleaning stops as soon as the kept text is known
to be longer than `limit`, and at most `limit * SCAN_FACTOR` characters are read at all (a text
whose first characters are nearly all blanks or dropped characters is cut at that point too).
"""

from __future__ import annotations

import unicodedata
from itertools import islice

from core.domain import ERROR_TEXT_LIMIT

SPACE_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})  # tabs, newlines, C0/C1, separators: a space
DROPPED_CATEGORIES = frozenset({"Cf", "Cs"})  # bidi overrides, zero-width, BOM, lone surrogates
ELLIPSIS = "…"
SCAN_FACTOR = 16
"""At most `limit * SCAN_FACTOR` characters of a text are read; what follows counts as cut off."""


def clean_text(text: str, limit: int) -> str:
    """`text` cleaned by the rule above and cut to at most `limit` characters."""
    budget = limit * SCAN_FACTOR
    kept: list[str] = []
    read = 0
    for ch in islice(text, budget):
        read += 1
        category = unicodedata.category(ch)
        if category in DROPPED_CATEGORIES:
            continue
        if category in SPACE_CATEGORIES:
            ch = " "
        if not kept and ch.isspace():
            continue  # the leading blanks strip() would remove
        kept.append(ch)
        if len(kept) > limit and not ch.isspace():
            return _cut("".join(kept), limit)  # longer than the limit once stripped, whatever follows
    cleaned = "".join(kept).rstrip()
    if cleaned and read == budget and len(text) > budget:
        return _cut(cleaned, limit)  # not read to its end: what is kept is only a beginning
    return _cut(cleaned, limit) if len(cleaned) > limit else cleaned


def _cut(cleaned: str, limit: int) -> str:
    return cleaned[: limit - 1].rstrip() + ELLIPSIS


def clean_error(text: str) -> str:
    """A run's error text as stored and printed: cleaned, at most ERROR_TEXT_LIMIT characters."""
    return clean_text(text, ERROR_TEXT_LIMIT)
