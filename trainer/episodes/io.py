"""Read and write episodes in the Memalpha interchange format (SPEC §7).

Parquet columns: `instance_id`, `prompt` (unused, kept empty), `chunks` (JSON list of strings),
`questions_and_answers` (JSON list of `{question, answer}`), `data_source`, `metadata` (JSON),
`num_chunks`, `num_questions`. JSONL rows carry the same keys with native lists/objects. Readers accept
either encoding per column (upstream files are not uniform); a LoCoMo category rides along as an extra
`category` key of a question, which upstream readers ignore.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trainer.episodes.model import QA, Episode

COLUMNS = (
    "instance_id",
    "prompt",
    "chunks",
    "questions_and_answers",
    "data_source",
    "metadata",
    "num_chunks",
    "num_questions",
)


def _qa_dict(qa: QA) -> dict[str, Any]:
    row: dict[str, Any] = {"question": qa.question, "answer": qa.answer}
    if qa.category is not None:
        row["category"] = qa.category
    return row


def episode_row(episode: Episode, *, encode_json: bool) -> dict[str, Any]:
    def enc(value: Any) -> Any:
        return json.dumps(value, ensure_ascii=False) if encode_json else value

    return {
        "instance_id": episode.instance_id,
        "prompt": "",
        "chunks": enc(list(episode.chunks)),
        "questions_and_answers": enc([_qa_dict(qa) for qa in episode.questions]),
        "data_source": episode.data_source,
        "metadata": enc(episode.metadata),
        "num_chunks": len(episode.chunks),
        "num_questions": len(episode.questions),
    }


def _decoded(value: Any) -> Any:
    if isinstance(value, str | bytes):
        return json.loads(value)
    if hasattr(value, "tolist"):  # numpy arrays from pyarrow's nested columns
        return value.tolist()
    return value


def _answer(raw: Any) -> str | list[str]:
    if isinstance(raw, list | tuple):
        return [str(item) for item in raw]
    if hasattr(raw, "tolist"):
        return [str(item) for item in raw.tolist()]
    return "" if raw is None else str(raw)


def episode_from_row(row: Mapping[str, Any]) -> Episode:
    questions = []
    for entry in _decoded(row["questions_and_answers"]) or []:
        category = entry.get("category")
        questions.append(
            QA(
                question=str(entry["question"]),
                answer=_answer(entry.get("answer")),
                category=int(category) if category is not None else None,
            )
        )
    metadata = _decoded(row.get("metadata")) or {}
    return Episode(
        instance_id=str(row["instance_id"]),
        data_source=str(row["data_source"]),
        chunks=[str(chunk) for chunk in _decoded(row["chunks"])],
        questions=questions,
        metadata=dict(metadata),
    )


def save_parquet(episodes: Iterable[Episode], path: str | Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [episode_row(episode, encode_json=True) for episode in episodes]
    table = pa.Table.from_pylist(rows) if rows else pa.table({name: [] for name in COLUMNS})
    pq.write_table(table, str(path))


def load_parquet(path: str | Path) -> list[Episode]:
    import pyarrow.parquet as pq

    return [episode_from_row(row) for row in pq.read_table(str(path)).to_pylist()]


def save_jsonl(episodes: Iterable[Episode], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(
            json.dumps(episode_row(episode, encode_json=False), ensure_ascii=False) + "\n"
            for episode in episodes
        )


def load_jsonl(path: str | Path) -> list[Episode]:
    with open(path, encoding="utf-8") as source:
        return [episode_from_row(json.loads(line)) for line in source if line.strip()]


def load_episodes(path: str | Path) -> list[Episode]:
    """By extension: `.parquet` or `.jsonl`/`.json` (one episode per line)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return load_parquet(path)
    if suffix in {".jsonl", ".json"}:
        return load_jsonl(path)
    raise ValueError(f"unknown episode file type {suffix!r} (expected .parquet or .jsonl)")


def save_episodes(episodes: Iterable[Episode], path: str | Path) -> None:
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        save_parquet(episodes, path)
    elif suffix in {".jsonl", ".json"}:
        save_jsonl(episodes, path)
    else:
        raise ValueError(f"unknown episode file type {suffix!r} (expected .parquet or .jsonl)")
