"""A tiny random-initialised Qwen2 with a word-level tokenizer, built in code: the CI model (no download).

The vocabulary is a handful of tool-call fragments in the `alpha` format (each one token, e.g. the whole
`✿FUNCTION✿: new_memory_insert\\n✿ARGS✿: {"memory_type": "semantic_memory", "content": "` prefix) plus the
most frequent words of some given texts. An untrained model samples almost uniformly over so small a
vocabulary, so its replies mix valid calls, broken calls and plain words: rewards vary across rollouts and
GRPO has a signal to learn from, through the very same prompt, parser, memory engine and QA path as a
real model. The result is saved as an ordinary transformers model directory.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from app.policy.parser import FN_ARGS, FN_NAME

IM_START, IM_END, END_OF_TEXT, UNK = "<|im_start|>", "<|im_end|>", "<|endoftext|>", "[UNK]"

CALL_FRAGMENTS = (
    f'{FN_NAME}: new_memory_insert\n{FN_ARGS}: {{"memory_type": "semantic_memory", "content": "',
    f'{FN_NAME}: new_memory_insert\n{FN_ARGS}: {{"memory_type": "episodic_memory", "content": "',
    f'{FN_NAME}: memory_update\n{FN_ARGS}: {{"memory_type": "core_memory", "new_content": "',
    f'{FN_NAME}: memory_delete\n{FN_ARGS}: {{"memory_type": "semantic_memory", "memory_id": "',
    '"}\n',
)

# Qwen's ChatML layout; newlines vanish in a word-level vocabulary, so none are written.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} {{ message['content'] }}<|im_end|>"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)

_WORD = re.compile(r"\w+|[^\w\s]")


def vocabulary(texts: Iterable[str], max_words: int) -> list[str]:
    """The `max_words` most frequent words and marks of `texts` (ties: first seen first)."""
    counts = Counter(piece for text in texts for piece in _WORD.findall(text))
    return [word for word, _ in counts.most_common(max_words)]


def build_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    specials = [UNK, END_OF_TEXT, IM_START, IM_END]
    pieces = list(dict.fromkeys([*specials, *CALL_FRAGMENTS, *words]))
    vocab = {piece: index for index, piece in enumerate(pieces)}
    fragments = "|".join(re.escape(fragment) for fragment in CALL_FRAGMENTS)
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # The matches are the tokens (fragments first); whitespace between them is dropped.
    backend.pre_tokenizer = pre_tokenizers.Split(
        Regex(f"{fragments}|{_WORD.pattern}"), behavior="removed", invert=True
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=UNK, eos_token=IM_END, pad_token=END_OF_TEXT
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IM_START]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(vocab_size: int, seed: int, *, eos_token_id: int, pad_token_id: int) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16384,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng():  # the caller's random stream stays untouched
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(config)


def create_tiny_model(out_dir: Path, texts: Iterable[str], *, seed: int = 0, max_words: int = 48) -> Path:
    """Build and save the tiny model and its tokenizer into `out_dir` (a transformers model directory)."""
    tokenizer = build_tokenizer(vocabulary(texts, max_words))
    model = build_model(
        len(tokenizer), seed, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
