"""Time adding and removing many `centers` partitions on a fresh Dagster instance.

Measures `sync_center_partitions` adding N keys, syncing again with nothing to change, and
removing all N keys, next to Dagster's own `delete_dynamic_partition` called once per key
on a sample of the keys, scaled to N as an estimate. See docs/BENCHMARKS.md.
"""

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from center_pipeline.partitions import center_partitions, sync_center_partitions

logger = logging.getLogger("benchmarks.partitions")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time adding and removing many center partitions.",
    )
    parser.add_argument(
        "--keys", type=int, default=50_000,
        help="partitions to add and remove (default: %(default)s)",
    )
    parser.add_argument(
        "--per-key-sample", type=int, default=500,
        help="keys deleted one call at a time with Dagster's public API, for comparison "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--postgres-url",
        help="PostgreSQL server for the instance storage. A fresh database is created and "
        "dropped (default: the SQLite storage in a temporary folder)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.keys < 1 or not 0 <= args.per_key_sample <= args.keys:
        parser.error("--keys must be at least 1 and --per-key-sample between 0 and --keys")

    home = Path(tempfile.mkdtemp(prefix="center-pipeline-partitions-"))
    database = f"center_pipeline_bench_{uuid.uuid4().hex[:12]}" if args.postgres_url else None
    try:
        storage_yaml = _create_storage(args.postgres_url, database)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + storage_yaml)
        os.environ["DAGSTER_HOME"] = str(home)
        with DagsterInstance.get() as instance:
            timings = _measure(instance, args.keys, args.per_key_sample)
    finally:
        if database is not None:
            _drop_database(args.postgres_url, database)
        shutil.rmtree(home, ignore_errors=True)

    storage = "PostgreSQL" if args.postgres_url else "SQLite"
    print(f"\n{args.keys:,} partitions on the {storage} storage, {os.cpu_count()} CPUs")
    for name, seconds in timings:
        print(f"  {name:<58} {seconds:>9.2f} s")
    return 0


def _measure(instance: DagsterInstance, keys: int, per_key_sample: int) -> list[tuple[str, float]]:
    slugs = [f"center-{number:06d}" for number in range(keys)]
    timings = []

    started = time.perf_counter()
    changes = sync_center_partitions(instance, slugs)
    timings.append((f"add {len(changes.added):,} (sync_center_partitions)", _since(started)))

    started = time.perf_counter()
    sync_center_partitions(instance, slugs)
    timings.append(("sync again, nothing to change", _since(started)))

    if per_key_sample:
        started = time.perf_counter()
        for slug in slugs[:per_key_sample]:
            instance.delete_dynamic_partition(center_partitions.name, slug)
        seconds = _since(started)
        timings.append((f"remove {per_key_sample:,} with delete_dynamic_partition", seconds))
        timings.append(
            (f"  scaled to {keys:,} keys (estimate)", seconds / per_key_sample * keys)
        )

    started = time.perf_counter()
    changes = sync_center_partitions(instance, [])
    timings.append((f"remove {len(changes.removed):,} (sync_center_partitions)", _since(started)))

    left = len(instance.get_dynamic_partitions(center_partitions.name))
    if left:
        raise SystemExit(f"error: {left} partitions were left after removing all of them")
    return timings


def _create_storage(postgres_url: str | None, database: str | None) -> str:
    if postgres_url is None or database is None:
        return ""
    import psycopg

    server = make_url(postgres_url).set(drivername="postgresql")
    with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    # dagster-postgres 0.29 needs psycopg2, not the psycopg 3 that SQLAlchemy 2.1 picks.
    url = server.set(drivername="postgresql+psycopg2", database=database)
    url = url.render_as_string(hide_password=False)
    return f'storage:\n  postgres:\n    postgres_url: "{url}"\n'


def _drop_database(postgres_url: str, database: str) -> None:
    import psycopg

    server = make_url(postgres_url).set(drivername="postgresql")
    with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _since(started: float) -> float:
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
