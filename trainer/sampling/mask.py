"""Packed token masks of constrained decoding (xgrammar's layout: token k is allowed iff bit k % 32 of
word k // 32 is set), applied to logits. Pure torch: the update uses it without the grammar library."""

from __future__ import annotations

import torch


def unpack_allowed(packed: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """A packed [..., width] int32 mask as booleans [..., vocab_size]."""
    shifts = torch.arange(32, dtype=torch.int32, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.flatten(-2)[..., :vocab_size].bool()


def masked(logits: torch.Tensor, packed: torch.Tensor | None) -> torch.Tensor:
    """Logits with the disallowed tokens at −inf (out of place, so autograd sees it); None: unchanged."""
    if packed is None:
        return logits
    return logits.masked_fill(~unpack_allowed(packed, logits.shape[-1]), float("-inf"))
