"""The repeat stop: a reply ends where it begins repeating itself (MEMALPHA_POLICY_REPEAT_STOP_CHARS).

A small policy model can loop: one content holding the chunk again and again, or the chunk re-sent call
after call, until the token budget. The rule: the reply's text is kept up to the start of its first stretch
of `window` characters that already occurred, verbatim, earlier in the reply (moved to the end of a word it
would split). Everything dropped is a copy of text the reply already holds. It is a function of the text alone, so the service (cutting the text it
received) and the trainer's samplers (stopping generation at the first token after which the rule applies)
keep exactly the same text, whichever tokenizer produced it: the first repeat of a text is also the first
repeat of any longer text that starts with it.
"""

from __future__ import annotations


def repeat_start(text: str, window: int, since: int = 0) -> int | None:
    """Where `text` begins repeating itself: the start of the first stretch of `window` characters (ending
    at the smallest end position) that already occurs earlier in `text` (overlaps allowed: a loop shorter
    than the window repeats too); None when there is none, or when `window` is 0 (the stop is off).
    `since`: end positions before it are known not to repeat (a growing text checks only its new ends)."""
    if window <= 0:
        return None
    first = max(window, since)
    # A window that occurred earlier holds a whole aligned block (of half its length, starting at a multiple
    # of it) that occurred earlier too. Most text repeats no block: one search per block instead of one per
    # character. Only the ends whose windows hold a repeated block are checked exactly, in increasing order,
    # so the first end found is the smallest.
    block = max(1, window // 2)
    scanned = first  # ends below this are checked (or known clean)
    for start in range(max(0, -(-(first - window) // block)) * block, len(text) - block + 1, block):
        if text.find(text[start : start + block], 0, start + block - 1) == -1:
            continue
        for end in range(max(scanned, start + block), min(len(text), start + window) + 1):
            # an occurrence inside text[: end - 1] starts at most at end - 1 - window: strictly earlier
            if text.find(text[end - window : end], 0, end - 1) != -1:
                return end - window
        scanned = max(scanned, start + window + 1)
    return None


def repeat_window(tool_format: str, chars: int) -> int:
    """The window the stop uses for a tool format: the text formats' setting; 0 for `native`, whose calls
    come back as structured fields the server parsed, not as text the service could cut in order."""
    return 0 if tool_format == "native" else chars


def applied_text(text: str, window: int) -> tuple[str, str | None]:
    """What of a reply is parsed and applied under the repeat stop (window 0: all of it), and the parse
    note that says where it was cut (None: not cut)."""
    start = repeat_start(text, window)
    if start is None:
        return text, None
    cut = _word_end(text, start, start + window)
    return text[:cut], f"reply stopped at character {cut}, where it began repeating {window} characters"


def _word_end(text: str, cut: int, limit: int) -> int:
    """`cut` moved past the rest of a word it would split. A repeated stretch can begin inside the end of a
    distinct fact (`Italy."` after `Normandy."` shares `y."`); the word is kept whole. The move stays inside
    the repeated window, which every text that reached the stop holds."""
    while 0 < cut < limit and text[cut - 1].isalnum() and text[cut].isalnum():
        cut += 1
    return cut
