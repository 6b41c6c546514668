"""In-context classification (TREC, BANKING77, CLINC150, HWU64): labelled samples stream in as chunks
of `Sample: …; Label: <int>` lines; held-out samples are the questions, answered as `\\boxed{<int>}`.

Labels are shown as integers through a seeded per-episode label map, so the answer cannot be guessed
from a label's name: it has to come from the memorised samples (the MemoryAgentBench convention)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from trainer.episodes.config import CLASSIFICATION_CHUNK_TOKENS, BuildConfig, pick_questions
from trainer.episodes.model import QA, Episode
from trainer.episodes.packing import pack_units

Example = tuple[str, str]  # (text, label name)


@dataclass(frozen=True)
class ClassificationSet:
    name: str  # the CLI name
    data_source: str  # selects the scorer (SPEC §5: boxed integer)
    train: list[Example]
    held_out: list[Example] | None  # None: hold questions out of `train` itself (TREC has one file)


def _read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    return path.read_text(encoding=encoding).splitlines()


def _intent_split(root: Path, split: str) -> list[Example]:
    texts = _read_lines(root / split / "seq.in")
    labels = _read_lines(root / split / "label")
    if len(texts) != len(labels):
        raise ValueError(f"{root / split}: {len(texts)} utterances but {len(labels)} labels")
    return [(text.strip(), label.strip()) for text, label in zip(texts, labels, strict=True) if text.strip()]


def load_intent(data_dir: Path, name: str) -> ClassificationSet:
    root = data_dir / "intent" / name
    return ClassificationSet(name, name, _intent_split(root, "train"), _intent_split(root, "valid"))


def load_trec(data_dir: Path, fine: bool) -> ClassificationSet:
    examples = []
    for line in _read_lines(data_dir / "trec" / "train_5500.label", encoding="latin-1"):
        label, _, text = line.strip().partition(" ")
        if text:
            examples.append((text.strip(), label if fine else label.split(":")[0]))
    name = "trec-fine" if fine else "trec"
    return ClassificationSet(name, "trec_fine" if fine else "trec_coarse", examples, None)


def sample_line(text: str, label: int) -> str:
    return f"Sample: {text}; Label: {label}"


def classification_question(text: str) -> str:
    """The task hint rides inside the question (the answer prompt is the same for every source)."""
    return (
        "Classify the sample below with one of the integer labels of the labelled samples in memory. "
        f"Answer with the label only, as \\boxed{{label}}.\nSample: {text}"
    )


def _episode(dataset: ClassificationSet, config: BuildConfig, number: int) -> Episode:
    rng = config.rng(dataset.name, number)
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in dataset.train:
        by_label[label].append(text)
    names = sorted(by_label)
    if config.labels is not None and config.labels < len(names):
        names = sorted(rng.sample(names, config.labels))
    numbers = list(range(len(names)))
    rng.shuffle(numbers)
    label_map = dict(zip(names, numbers, strict=True))

    shown: list[tuple[str, int]] = []
    used: set[str] = set()
    for name in names:
        texts = by_label[name]
        for text in rng.sample(texts, min(config.shots, len(texts))):
            shown.append((text, label_map[name]))
            used.add(text)
    rng.shuffle(shown)

    pool = dataset.held_out if dataset.held_out is not None else dataset.train
    candidates = [(text, label) for text, label in pool if label in label_map and text not in used]
    rng.shuffle(candidates)
    questions = [
        QA(question=classification_question(text), answer=str(label_map[label]), query=text)
        for text, label in candidates
    ]
    return Episode(
        instance_id=f"{dataset.name}-{number:03d}",
        data_source=dataset.data_source,
        chunks=pack_units(
            (sample_line(text, label) for text, label in shown),
            config.chunk_limit(CLASSIFICATION_CHUNK_TOKENS),
            config.counter,
            separator="\n",
        ),
        questions=pick_questions(questions, config.questions, rng),
        metadata={"label_map": label_map, "samples": len(shown)},
    )


def build_classification(dataset: ClassificationSet, config: BuildConfig) -> list[Episode]:
    count = config.episodes if config.episodes is not None else 1
    return [_episode(dataset, config, number) for number in range(count)]
