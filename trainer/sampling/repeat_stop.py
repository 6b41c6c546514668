"""The service's repeat stop (app/policy/repeats.py) on the trainer's token side.

The service cuts the text it received where the text begins repeating itself. A sampler instead stops a
completion at the first token after which its decoded text holds such a repeat: the tokens before are the
ones the service's reply starts with (a stop changes no earlier token's distribution), the cut text is the
same (the first repeat of a text is the first repeat of every longer text starting with it), and the stop is
decided by the tokens so far, so the completion up to that token is an ended action whose log-prob is exact.
Its reward is computed from the same cut text as the service's (`SampledReply.of`). The transformers sampler
checks while generating (`RepeatStopCriteria`); the vLLM rollouts find the same token after the reply
returns (`repeat_stop_length`).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria

from app.policy.repeats import repeat_start

# A token may end inside a multi-byte character, which decodes as U+FFFD until its last byte arrives: the
# text is checked without it, so a stop never depends on a character the service's text does not hold.
_PARTIAL = "\ufffd"


class RepeatWatch:
    """One completion's detector: fed its growing token ids, says once its text has begun repeating."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, window: int) -> None:
        self.tokenizer = tokenizer
        self.window = window
        self._checked = 0  # end positions of the text already known not to repeat

    def repeats(self, completion_ids: list[int]) -> bool:
        text = str(self.tokenizer.decode(completion_ids, skip_special_tokens=True)).rstrip(_PARTIAL)
        if repeat_start(text, self.window, self._checked) is not None:
            return True
        self._checked = len(text) + 1
        return False


def repeat_stop_length(
    tokenizer: PreTrainedTokenizerBase, completion_ids: list[int], window: int
) -> int | None:
    """How many of a completion's tokens a sampler with the repeat stop would have generated: up to and
    including the first token after which the text repeats itself; None when it never does (or window 0)."""
    if window <= 0:
        return None
    watch = RepeatWatch(tokenizer, window)
    for length in range(1, len(completion_ids) + 1):
        if watch.repeats(completion_ids[:length]):
            return length
    return None


class RepeatStopCriteria(StoppingCriteria):
    """`generate`'s stop for each row whose completion (its tokens after the left-padded prompt width) has
    begun repeating itself; `done_at[row]` is how many tokens that row had generated then."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, window: int, prompt_width: int, rows: int) -> None:
        self.prompt_width = prompt_width
        self.watches = [RepeatWatch(tokenizer, window) for _ in range(rows)]
        self.done_at: list[int | None] = [None] * rows

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_width
        for row, watch in enumerate(self.watches):
            if self.done_at[row] is None and watch.repeats(input_ids[row, self.prompt_width :].tolist()):
                self.done_at[row] = generated
        done = [at is not None for at in self.done_at]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
