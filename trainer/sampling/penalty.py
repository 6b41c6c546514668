"""The frequency penalty of OpenAI's API as vLLM applies it, for the trainer's sampler and update.

At each completion step the logit of token v is lowered by f × n(v), n(v) = how many times v already occurs
in the completion (the prompt's tokens never count: copying the chunk, which is in the prompt, must stay
free). vLLM subtracts it after the schema's mask (the two commute: a disallowed logit stays −∞) and before
the temperature, so the served policy is q(t) = softmax((mask(z) − f·n) / T), greedy argmax(mask(z) − f·n).
The sampler applies it inside `generate` (`CompletionPenalty`); the recorded and the update's log-probs
replay it from the completion's tokens (`penalised`), as the mask is replayed: n depends on earlier
completion tokens only, never on the weights, so the gradient flows through the logits alone.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


def penalised(
    logits: torch.Tensor, completion_ids: torch.Tensor, penalty: float, start: int = 0
) -> torch.Tensor:
    """The logits [n, V] of completion steps start … start + n − 1, each lowered by `penalty` × the count of
    every token among the completion's tokens before that step (out of place: autograd sees a constant
    shift). `completion_ids` holds at least the completion's first start + n − 1 tokens."""
    if penalty == 0:
        return logits
    steps = logits.shape[0]
    earlier = completion_ids[: start + steps - 1].to(logits.device)
    if len(earlier) == 0:
        return logits
    tokens, positions = torch.unique(earlier, return_inverse=True)
    seen = torch.zeros((len(earlier), len(tokens)), dtype=logits.dtype, device=logits.device)
    seen[torch.arange(len(earlier), device=logits.device), positions] = 1
    # counts[s] = occurrences before completion step s (row 0: nothing generated yet)
    counts = torch.cat([seen.new_zeros((1, len(tokens))), seen.cumsum(0)])[start : start + steps]
    return logits.index_add(1, tokens, counts, alpha=-penalty)


class CompletionPenalty(LogitsProcessor):
    """`generate`'s logits processor: each row's next-token logits lowered by `penalty` × the counts of the
    tokens that row generated so far (its tokens after the left-padded prompt width)."""

    def __init__(self, penalty: float, prompt_width: int) -> None:
        self.penalty = penalty
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_width :]
        counts = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones(generated.shape, dtype=scores.dtype, device=scores.device)
        )
        return scores - self.penalty * counts
