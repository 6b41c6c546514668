"""Short opaque item ids, unique per session.

Ids come from a per-session counter that never goes back, so a deleted id is never handed out again.
The counter is spread over the id space by an affine map with a factor coprime to 36, so neighbouring
items do not get look-alike ids (a model copies ids more reliably when they differ). Four base-36
characters cover 1.6 M items; after that ids grow to five characters, and so on.
"""

from __future__ import annotations

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_SPREAD = 1_000_003  # prime, coprime to 36: n -> n * _SPREAD mod 36**w is a bijection
_MIN_WIDTH = 4
_OFFSET = 1_234_567  # so that the first id is not "0000"


def _base36(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, rest = divmod(value, 36)
        digits.append(_ALPHABET[rest])
    return "".join(reversed(digits))


def item_id(counter: int) -> str:
    """The id of the `counter`-th item of a session (counter starts at 0)."""
    if counter < 0:
        raise ValueError("id counter must be >= 0")
    width = _MIN_WIDTH
    while counter >= 36**width:
        counter -= 36**width
        width += 1
    return _base36((counter * _SPREAD + _OFFSET) % 36**width, width)


def normalise_id(raw: object) -> str | None:
    """Ids as models echo them: `[k3x9]`, ` k3x9 `, `K3X9` all mean `k3x9`."""
    if isinstance(raw, int):
        raw = str(raw)
    if not isinstance(raw, str):
        return None
    text = raw.strip().strip("[]()<>`'\"").strip().lower()
    return text or None


def counter_of(item: str) -> int | None:
    """The counter whose id is `item` (the inverse of `item_id`); None for an id it never produces."""
    width = len(item)
    if width < _MIN_WIDTH or any(ch not in _ALPHABET for ch in item):
        return None
    modulus = 36**width
    counter = (int(item, 36) - _OFFSET) * pow(_SPREAD, -1, modulus) % modulus
    return counter + sum(36**w for w in range(_MIN_WIDTH, width))
