"""Write one events CSV per center and run date, atomically and safe to open in a spreadsheet."""

import csv
import hashlib
import logging
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from center_pipeline.events.models import EVENT_CSV_COLUMNS, Event

logger = logging.getLogger(__name__)

# Maximum length of the readable part of a file name built from a slug, before the hash.
_MAX_SLUG_CHARS = 80
_HASH_CHARS = 12
_UNSAFE_CHARS_RE = re.compile(r"[^a-z0-9_-]+")
# A safe name that ends like a hash suffix gets its own hash too, so that no slug kept
# unchanged can equal the changed form of another slug.
_HASH_SUFFIX_RE = re.compile(rf"-[0-9a-f]{{{_HASH_CHARS}}}$")
# Leading characters that make a spreadsheet program read a cell as a formula.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_slug(slug: str) -> str:
    """Build a file-name-safe form of a center slug that no other slug shares.

    Letters are lowercased and stripped of accents, and runs of characters other than
    a-z, 0-9, "-" and "_" become "-". When that changes the slug or it must be cut to 80
    characters, a hash of the original slug is appended, so distinct slugs give distinct
    names (unless 48-bit SHA-256 prefixes collide).
    """
    decomposed = unicodedata.normalize("NFKD", slug)
    ascii_text = "".join(char for char in decomposed if not unicodedata.combining(char))
    safe = _UNSAFE_CHARS_RE.sub("-", ascii_text.lower()).strip("-_")
    unchanged = safe == slug and len(safe) <= _MAX_SLUG_CHARS
    if safe and unchanged and not _HASH_SUFFIX_RE.search(safe):
        return safe

    digest = hashlib.sha256(slug.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    base = safe[:_MAX_SLUG_CHARS].rstrip("-_") or "center"
    return f"{base}-{digest}"


def csv_path_for(output_dir: Path, slug: str, run_date: date) -> Path:
    """Return the CSV path of a center's events for one run date.

    Raises:
        ValueError: The path would resolve outside output_dir, e.g. through a symlink.
    """
    # One folder per center, one file per run date: a center's history sits together, a
    # re-run on the same date replaces that day's file, and a center's files can be removed
    # with its folder.
    root = Path(output_dir).resolve()
    path = root / safe_slug(slug) / f"{run_date.isoformat()}.csv"
    if not path.resolve().is_relative_to(root):
        raise ValueError(f"CSV path for slug {slug!r} resolves outside {root}")
    return path


def write_events_csv(path: Path, events: Iterable[Event]) -> int:
    """Write events to a CSV file atomically and return the number of rows written.

    Rows stream into a temporary file in the same folder, which then replaces `path`. If
    writing fails, an existing file at `path` is left as it was. The header row is always
    written, in EVENT_CSV_COLUMNS order, and the file is UTF-8 without a byte order mark.
    Cells that a spreadsheet would run as a formula get a leading "'".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    temp_path = Path(temp_name)
    rows = 0
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(EVENT_CSV_COLUMNS)
            for event in events:
                writer.writerow(_csv_row(event))
                rows += 1
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file with mode 0600, but other users read the CSVs too.
        os.chmod(temp_path, 0o644)
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    logger.debug("Wrote %d events to %s", rows, path)
    return rows


def read_events_csv(path: Path) -> list[dict[str, str]]:
    """Read an events CSV back into one dict per row, keyed by column name."""
    with Path(path).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def neutralize_formula(cell: str) -> str:
    """Prefix "'" to a cell that a spreadsheet would otherwise evaluate as a formula."""
    return f"'{cell}" if cell.startswith(_FORMULA_PREFIXES) else cell


def _csv_row(event: Event) -> list[str]:
    values = event.model_dump(mode="json")
    row = []
    for column in EVENT_CSV_COLUMNS:
        value = values.get(column)
        row.append("" if value is None else neutralize_formula(str(value)))
    return row


def _fsync_directory(directory: Path) -> None:
    """Persist the rename on disk. Some file systems do not support this, so it may fail."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
