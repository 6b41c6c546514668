"""Load the base model and its tokenizer, and put a PEFT LoRA adapter (new or saved) on it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from trainer.config import LoraConfig, ModelConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedPolicy:
    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    base_path: str  # what the base weights were loaded from (directory or GGUF file)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def chat_template_sha256(tokenizer: PreTrainedTokenizerBase) -> str:
    template = tokenizer.chat_template
    if not isinstance(template, str):
        raise TypeError("the tokenizer has no (single) chat template")
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def load_base(
    config: ModelConfig, tiny_dir: Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """The base model and tokenizer. A `tiny` model is read from `tiny_dir`, where the caller built it."""
    dtype = _DTYPES[config.dtype]
    if config.source == "gguf":
        gguf = Path(config.path or "").expanduser()
        # transformers dequantises the GGUF tensors into ordinary (trainable) weights.
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        return model, tokenizer, str(gguf)
    directory = tiny_dir if config.source == "tiny" else Path(config.path or "").expanduser()
    if directory is None:
        raise ValueError("a tiny model needs the directory it was built in")
    # The tiny word-level tokenizer must not be re-created as Qwen2's BPE class from the model type.
    loader = PreTrainedTokenizerFast if config.source == "tiny" else AutoTokenizer
    tokenizer = loader.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    return model, tokenizer, str(directory)


def peft_config(lora: LoraConfig) -> PeftLoraConfig:
    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_policy(
    config: ModelConfig,
    lora: LoraConfig,
    *,
    adapter_dir: Path | None = None,
    trainable: bool = True,
    tiny_dir: Path | None = None,
    device: torch.device | None = None,
) -> LoadedPolicy:
    """Base model + LoRA adapter: a fresh one, or the one saved in `adapter_dir`; on `device` (default:
    `config.device`)."""
    base, tokenizer, base_path = load_base(config, tiny_dir)
    device = device or pick_device(config.device)
    base.to(device)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=trainable)
    else:
        model = get_peft_model(base, peft_config(lora))
    model.eval()  # rollouts and log-prob passes; the update switches to train mode itself
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedPolicy(model=model, tokenizer=tokenizer, device=device, base_path=base_path)
