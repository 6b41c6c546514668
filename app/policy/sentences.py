"""Sentence-level text helpers of the extractive writer: splitting, telling filler from information,
and picking out named entities."""

from __future__ import annotations

import re
from collections import Counter

_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "sr",
    "jr",
    "st",
    "mt",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "no",
    "fig",
    "inc",
    "ltd",
    "co",
    "corp",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "u.s",
    "u.k",
    "a.m",
    "p.m",
    "approx",
    "ca",
    "gen",
    "gov",
    "sen",
    "rep",
    "rev",
    "col",
    "lt",
    "capt",
}
# A sentence ends at . ! ? (or runs of them, maybe followed by a closing quote or bracket) before
# whitespace and an opening capital, digit, quote or bracket; or at a line break.
_BOUNDARY = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])|\n+")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")

_FILLER_WORDS = {
    "hey",
    "hi",
    "hello",
    "yo",
    "bye",
    "goodbye",
    "thanks",
    "thank",
    "you",
    "so",
    "much",
    "wow",
    "cool",
    "great",
    "awesome",
    "nice",
    "amazing",
    "yeah",
    "yes",
    "yep",
    "no",
    "nope",
    "ok",
    "okay",
    "lol",
    "haha",
    "hah",
    "oh",
    "ah",
    "aw",
    "aww",
    "sure",
    "right",
    "good",
    "to",
    "see",
    "hear",
    "that",
    "that's",
    "it's",
    "is",
    "was",
    "sounds",
    "really",
    "totally",
    "absolutely",
    "definitely",
    "indeed",
    "glad",
    "happy",
    "for",
    "love",
    "it",
    "this",
    "the",
    "a",
    "me",
    "too",
    "what",
    "day",
    "talk",
    "soon",
    "care",
    "take",
    "again",
    "all",
    "very",
    "and",
    "well",
    "true",
    "agreed",
    "exactly",
    "congrats",
    "congratulations",
    "same",
    "here",
    "there",
    "hmm",
    "how",
    "about",
    "are",
    "doing",
    "going",
    "been",
    "have",
    "has",
    "i",
    "i'm",
    "am",
    "we",
    "us",
    "your",
    "yours",
    "just",
    "be",
    "can't",
    "wait",
    "know",
    "let",
    "catch",
    "up",
    "later",
    "night",
    "morning",
    "ya",
}
_NON_ENTITY_CAPS = {
    "i",
    "i'm",
    "i've",
    "i'd",
    "i'll",
    "the",
    "a",
    "an",
    "it",
    "it's",
    "he",
    "she",
    "we",
    "they",
    "this",
    "that",
    "these",
    "those",
    "my",
    "our",
    "your",
    "his",
    "her",
    "their",
    "its",
    "hey",
    "hi",
    "hello",
    "wow",
    "thanks",
    "thank",
    "yes",
    "yeah",
    "no",
    "oh",
    "so",
    "but",
    "and",
    "or",
    "if",
    "when",
    "what",
    "how",
    "why",
    "where",
    "who",
    "which",
    "in",
    "on",
    "at",
    "for",
    "of",
    "to",
    "from",
    "by",
    "with",
    "as",
    "ok",
    "okay",
    "just",
    "also",
    "there",
    "here",
    "after",
    "before",
    "then",
    "once",
    "some",
    "many",
    "most",
    "all",
    "each",
    "every",
    "one",
    "not",
    "do",
    "does",
    "did",
    "is",
    "are",
    "was",
    "were",
    "be",
    "can",
    "could",
    "would",
    "should",
    "will",
    "may",
    "might",
    "must",
    "let",
    "let's",
    "that's",
    "you",
    "you're",
    "me",
    "mine",
    "sure",
    "great",
    "good",
    "cool",
    "awesome",
    "nice",
    "amazing",
    "haha",
    "lol",
    "congrats",
    "absolutely",
    "definitely",
    "totally",
    "really",
    "anyway",
    "btw",
    "since",
    "during",
    "while",
    "although",
    "though",
    "because",
    "however",
    "today",
    "yesterday",
    "tomorrow",
    "last",
    "next",
    "any",
    "both",
    "more",
    "other",
    "such",
    "than",
    "too",
    "very",
    "well",
    "much",
    "again",
    "about",
    "up",
    "out",
    "over",
    "into",
    "new",
    "first",
}
_MONTH_AND_DAY_NAMES = {
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
}
_SENTENCE_ENDS = set(".!?…:]\n\"'“‘(")
_CAPITALISED_RUN = re.compile(
    r"[A-Z][\w'’&.-]*(?:\s+(?:[A-Z][\w'’&.-]*|\d+|of|the|de|and|for)(?=\s|$|[,.;:!?)]))*"
)


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` in order; abbreviations like `Dr.` and `e.g.` do not end a sentence."""
    sentences: list[str] = []
    pending = ""
    position = 0
    for boundary in _BOUNDARY.finditer(text):
        piece = text[position : boundary.start()]
        position = boundary.end()
        candidate = f"{pending} {piece}".strip() if pending else piece.strip()
        last_word = candidate.rsplit(None, 1)[-1].rstrip(".").lower() if candidate else ""
        if "\n" not in boundary.group() and (
            last_word in _ABBREVIATIONS or re.fullmatch(r"[a-z]", last_word)
        ):
            pending = candidate
            continue
        if candidate:
            sentences.append(candidate)
        pending = ""
    rest = f"{pending} {text[position:]}".strip()
    if rest:
        sentences.append(rest)
    return sentences


def words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def is_filler(sentence: str, names: set[str] | frozenset[str] = frozenset()) -> bool:
    """Greetings, thanks, exclamations and short small-talk questions carry nothing worth remembering;
    `names` (lower-case) are the participants, whom small talk addresses."""
    tokens = words(sentence)
    if len(tokens) < 3:
        return True
    if all(token in _FILLER_WORDS or token in names for token in tokens):
        return True
    return sentence.rstrip().endswith("?") and len(tokens) < 7


def entities(text: str) -> list[tuple[str, int]]:
    """Named entities (runs of capitalised words) of `text` with their counts, most frequent first,
    ties in order of first mention. A single capitalised word counts only if it also appears inside
    a sentence: sentence-initial capitals ("Taking care…") are not names."""
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    inside: set[str] = set()
    for match in _CAPITALISED_RUN.finditer(text):
        parts = match.group().rstrip(".-'’").split()
        while parts and (parts[0].lower() in _NON_ENTITY_CAPS or parts[0].lower() in _MONTH_AND_DAY_NAMES):
            parts = parts[1:]
        while parts and parts[-1].lower() in {"of", "the", "de", "and", "for"}:
            parts = parts[:-1]
        if not parts or (len(parts) == 1 and len(parts[0]) < 2):
            continue
        name = " ".join(parts)
        counts[name] += 1
        first_seen.setdefault(name, match.start())
        before = text[: match.start()].rstrip()
        if len(parts) > 1 or (before and before[-1] not in _SENTENCE_ENDS):
            inside.add(name)
    names = [name for name in counts if name in inside]
    return sorted(((name, counts[name]) for name in names), key=lambda pair: (-pair[1], first_seen[pair[0]]))
