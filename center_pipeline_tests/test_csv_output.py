"""Tests of the events CSV: paths from hostile slugs, atomic writes and formula cells."""

import csv
import os
import re
import stat
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from center_pipeline.events.csv_output import (
    csv_path_for,
    neutralize_formula,
    read_events_csv,
    safe_slug,
    write_events_csv,
)
from center_pipeline.events.models import EVENT_CSV_COLUMNS, Event

RUN_DATE = date(2026, 12, 4)

HOSTILE_SLUGS = [
    "austin-downtown",
    "Austin-Downtown",
    "austin downtown",
    "austin/downtown",
    "austin\\downtown",
    "austin_downtown",
    "austin--downtown",
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "",
    " ",
    "%2F..%2Fescape",
    "..%2f..%2fescape",
    "a,b|c;d",
    "line\nbreak",
    "line\rbreak",
    "nul\x00byte",
    "café-münster",
    "cafe-munster",
    "東京",
    "北京",
    "x" * 500,
    "x" * 499 + "y",
    "x" * 80,
    "x" * 81,
    "-leading-dash",
    "leading-dash",
    "abc-0123456789ab",
    "CON",
    "con",
]


def _event(**fields) -> Event:
    values = {"name": "Holiday Market", "date": "2026-12-12"}
    values.update(fields)
    return Event(**values)


# --- paths --------------------------------------------------------------------------------


def test_hostile_slugs_stay_inside_output_dir(tmp_path: Path) -> None:
    output_dir = tmp_path / "out"
    root = output_dir.resolve()

    for slug in HOSTILE_SLUGS:
        path = csv_path_for(output_dir, slug, RUN_DATE)

        assert path.resolve().is_relative_to(root), slug
        assert path.parent.parent == root, slug
        assert path.name == "2026-12-04.csv", slug
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", path.parent.name), slug
        assert len(path.parent.name) <= 93, slug


def test_hostile_slugs_do_not_collide(tmp_path: Path) -> None:
    paths = [csv_path_for(tmp_path, slug, RUN_DATE) for slug in HOSTILE_SLUGS]

    assert len(set(paths)) == len(HOSTILE_SLUGS)


def test_clean_slug_is_kept() -> None:
    assert safe_slug("austin-downtown_2") == "austin-downtown_2"


def test_changed_slug_gets_hash() -> None:
    assert re.fullmatch(r"austin-downtown-[0-9a-f]{12}", safe_slug("Austin Downtown"))
    assert re.fullmatch(r"cafe-munster-[0-9a-f]{12}", safe_slug("Café Münster"))
    assert re.fullmatch(r"center-[0-9a-f]{12}", safe_slug("../.."))


def test_slug_is_stable() -> None:
    assert safe_slug("a/b") == safe_slug("a/b")


def test_symlink_out_of_output_dir_is_rejected(tmp_path: Path) -> None:
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (output_dir / "evil").symlink_to(elsewhere, target_is_directory=True)

    with pytest.raises(ValueError, match="outside"):
        csv_path_for(output_dir, "evil", RUN_DATE)


def test_dates_give_separate_files(tmp_path: Path) -> None:
    first = csv_path_for(tmp_path, "austin", date(2026, 12, 4))
    second = csv_path_for(tmp_path, "austin", date(2026, 12, 5))

    assert first != second
    assert first.parent == second.parent


# --- writing ------------------------------------------------------------------------------


def test_zero_events_give_header_only(tmp_path: Path) -> None:
    path = tmp_path / "center" / "2026-12-04.csv"

    rows = write_events_csv(path, [])

    assert rows == 0
    assert path.read_bytes() == (",".join(EVENT_CSV_COLUMNS) + "\r\n").encode()
    assert read_events_csv(path) == []


def test_rows_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "2026-12-04.csv"
    events = [
        _event(
            end_date="2026-12-14",
            start_time="10:00",
            venue="Republic Square",
            address="422 Guadalupe St",
            city="Austin",
            state="TX",
            url="https://example.org/market",
            description='Makers, "food" trucks,\nand music.',
            category="market",
        ),
        _event(name="Café Crème Night", date="2026-12-19"),
    ]

    rows = write_events_csv(path, events)

    assert rows == 2
    read = read_events_csv(path)
    assert list(read[0].keys()) == list(EVENT_CSV_COLUMNS)
    assert read[0]["date"] == "2026-12-12"
    assert read[0]["end_date"] == "2026-12-14"
    assert read[0]["description"] == 'Makers, "food" trucks,\nand music.'
    assert read[1]["name"] == "Café Crème Night"
    assert read[1]["end_date"] == ""
    assert read[1]["url"] == ""


def test_rows_stream_from_a_generator(tmp_path: Path) -> None:
    path = tmp_path / "2026-12-04.csv"

    rows = write_events_csv(path, (_event(name=f"Event {index}") for index in range(500)))

    assert rows == 500
    assert len(read_events_csv(path)) == 500


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@"])
def test_formula_cells_are_neutralized(tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "2026-12-04.csv"
    cell = f'{prefix}HYPERLINK("http://evil.example","x")'

    write_events_csv(path, [_event(name=cell, venue=cell, description=cell, category=cell)])

    row = read_events_csv(path)[0]
    for column in ("name", "venue", "description", "category"):
        assert row[column] == "'" + cell, column
    assert row["date"] == "2026-12-12"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("=1+1", "'=1+1"),
        ("plain text", "plain text"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_neutralize_formula(cell: str, expected: str) -> None:
    assert neutralize_formula(cell) == expected


def test_failed_write_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "center" / "2026-12-04.csv"
    write_events_csv(path, [_event(name="Old Event")])
    old_content = path.read_bytes()

    def failing_events() -> Iterator[Event]:
        yield _event(name="New Event 1")
        yield _event(name="New Event 2")
        raise RuntimeError("LLM stream broke")

    with pytest.raises(RuntimeError, match="stream broke"):
        write_events_csv(path, failing_events())

    assert path.read_bytes() == old_content
    assert sorted(os.listdir(path.parent)) == ["2026-12-04.csv"]


def test_failed_first_write_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "2026-12-04.csv"

    with pytest.raises(AttributeError):
        write_events_csv(path, [object()])  # type: ignore[list-item]

    assert os.listdir(tmp_path) == []


def test_rewrite_replaces_file(tmp_path: Path) -> None:
    path = tmp_path / "2026-12-04.csv"
    write_events_csv(path, [_event(name="Old Event")])

    write_events_csv(path, [_event(name="New Event")])

    assert [row["name"] for row in read_events_csv(path)] == ["New Event"]
    assert sorted(os.listdir(tmp_path)) == ["2026-12-04.csv"]


def test_written_file_is_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "2026-12-04.csv"

    write_events_csv(path, [])

    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_multiline_cell_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "2026-12-04.csv"
    write_events_csv(path, [_event(description="line one\r\nline two, with comma")])

    with path.open(encoding="utf-8", newline="") as handle:
        records = list(csv.reader(handle))

    assert len(records) == 2
    assert records[1][EVENT_CSV_COLUMNS.index("description")] == "line one\r\nline two, with comma"
