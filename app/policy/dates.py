"""Date expressions for the extractive writer: find absolute dates (`1:56 pm on 8 May, 2023`,
`May 8, 2023`), tell whether a sentence mentions a time, and resolve relative expressions
(`yesterday`, `last Saturday`, `two weekends ago`) against the date of the conversation, so that an
episodic item stays true when read later ("yesterday (7 May 2023)")."""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import date, timedelta

_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): number for number, name in enumerate(calendar.month_abbr) if name})
_MONTHS["sept"] = 9
_MONTH = r"(?:" + "|".join(sorted((re.escape(m) for m in _MONTHS), key=len, reverse=True)) + r")\.?"
_WEEKDAYS = {name.lower(): number for number, name in enumerate(calendar.day_name)}
_WEEKDAYS.update(
    {"mon": 0, "tue": 1, "tues": 1, "wed": 2, "thu": 3, "thur": 3, "thurs": 3, "fri": 4, "sat": 5, "sun": 6}
)
_WEEKDAY = r"(?:" + "|".join(sorted(_WEEKDAYS, key=len, reverse=True)) + r")"
_NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "a couple of": 2,
    "a few": 3,
    "couple of": 2,
    "few": 3,
}
_COUNT = (
    r"(?P<n>\d{1,2}|a couple of|couple of|a few|few|"
    + "|".join(sorted((w for w in _NUMBER_WORDS if " " not in w), key=len, reverse=True))
    + r")"
)

_DAY_MONTH_YEAR = re.compile(
    rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<m>{_MONTH}),?\s+(?P<y>\d{{4}})\b", re.IGNORECASE
)
_MONTH_DAY_YEAR = re.compile(
    rf"\b(?P<m>{_MONTH})\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y>\d{{4}})\b", re.IGNORECASE
)
_ISO = re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})\b")

_TIME_EXPRESSIONS = re.compile(
    r"\b(?:\d{1,2}:\d{2}\s*(?:[ap]\.?m\.?)?|\d{1,2}\s*[ap]\.?m\.?"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?\b|{_MONTH},?\s+\d{{4}}"
    r"|(?:in|since|by|from|until|till|during|around|before|after|circa|of|between)\s+(?:the\s+)?\d{4}s?"
    r"|\d{4}s|\d{4}\s*[-–]\s*\d{2,4}|\d{4}-\d{2}-\d{2}"
    r"|yesterday|today|tonight|tomorrow|(?:last|next|this|past)\s+(?:week|weekend|month|year|night|morning|"
    rf"evening|summer|winter|spring|fall|autumn|{_WEEKDAY})|ago"
    r"|(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)s?"
    r"|(?:January|February|March|April|June|July|August|September|October|November|December))\b",
    re.IGNORECASE,
)


def find_date(text: str) -> date | None:
    """The first absolute calendar date in `text`, if any."""
    for pattern in (_DAY_MONTH_YEAR, _MONTH_DAY_YEAR, _ISO):
        match = pattern.search(text)
        if match is None:
            continue
        month_text = match.group("m").lower().rstrip(".")
        month = int(month_text) if month_text.isdigit() else _MONTHS.get(month_text)
        try:
            return date(int(match.group("y")), month or 0, int(match.group("d")))
        except ValueError:
            continue
    return None


def mentions_time(sentence: str) -> bool:
    return _TIME_EXPRESSIONS.search(sentence) is not None


def format_date(day: date) -> str:
    return f"{day.day} {calendar.month_name[day.month]} {day.year}"


def _month_shift(anchor: date, months: int) -> str:
    index = anchor.year * 12 + anchor.month - 1 + months
    return f"{calendar.month_name[index % 12 + 1]} {index // 12}"


def _count(match: re.Match[str]) -> int:
    raw = match.group("n").lower()
    return int(raw) if raw.isdigit() else _NUMBER_WORDS[raw]


def _last_weekday(anchor: date, match: re.Match[str]) -> str:
    weekday = _WEEKDAYS[match.group("w").lower()]
    return f"the {calendar.day_name[weekday]} before {format_date(anchor)}"


_Resolver = Callable[[date, re.Match[str]], str]
_RELATIVE: tuple[tuple[re.Pattern[str], _Resolver], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), resolve)
    for pattern, resolve in (
        (r"\b(?:yesterday|last night)\b", lambda a, m: format_date(a - timedelta(days=1))),
        (r"\btomorrow\b", lambda a, m: format_date(a + timedelta(days=1))),
        (rf"\b{_COUNT} days? ago\b", lambda a, m: format_date(a - timedelta(days=_count(m)))),
        (rf"\b{_COUNT} weekends? ago\b", lambda a, m: f"{m.group('n')} weekends before {format_date(a)}"),
        (rf"\b{_COUNT} weeks? ago\b", lambda a, m: f"{m.group('n')} weeks before {format_date(a)}"),
        (rf"\b{_COUNT} months? ago\b", lambda a, m: _month_shift(a, -_count(m))),
        (rf"\b{_COUNT} years? ago\b", lambda a, m: str(a.year - _count(m))),
        (r"\b(?:last|this past|past) weekend\b", lambda a, m: f"the weekend before {format_date(a)}"),
        (r"\b(?:last|this past|past) week\b", lambda a, m: f"the week before {format_date(a)}"),
        (r"\bthis week\b", lambda a, m: f"the week of {format_date(a)}"),
        (r"\bnext week\b", lambda a, m: f"the week after {format_date(a)}"),
        (rf"\b(?:last|this past|past) (?P<w>{_WEEKDAY})\b", _last_weekday),
        (r"\b(?:last|this past|past) month\b", lambda a, m: _month_shift(a, -1)),
        (r"\bthis month\b", lambda a, m: _month_shift(a, 0)),
        (r"\bnext month\b", lambda a, m: _month_shift(a, 1)),
        (r"\blast year\b", lambda a, m: str(a.year - 1)),
        (r"\bthis year\b", lambda a, m: str(a.year)),
        (r"\bnext year\b", lambda a, m: str(a.year + 1)),
    )
)


def resolve_relative(text: str, anchor: date) -> str:
    """Annotate relative time expressions with what they mean at `anchor`: `yesterday (7 May 2023)`."""
    spans: list[tuple[int, int, str]] = []
    for pattern, resolve in _RELATIVE:
        for match in pattern.finditer(text):
            if any(start < match.end() and match.start() < end for start, end, _ in spans):
                continue  # an earlier, more specific pattern already covers it
            spans.append((match.start(), match.end(), resolve(anchor, match)))
    for start, end, meaning in sorted(spans, reverse=True):
        text = f"{text[:end]} ({meaning}){text[end:]}"
    return text
