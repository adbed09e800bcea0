"""Measure sync-then-batch against the bound that remote latency and concurrency set.

The script serves a synthetic network of N centers from the sample servers on 127.0.0.1,
with latency injected into every location API and LLM response. It runs `sync_centers`
and then `run_batch` through real Dagster runs on a fresh instance, each job in a fresh
process (`phase.py`), and prints for each job:

- the wall time, from the Dagster run's start to its end and around the call;
- the ideal: the slug call plus ceil(N / LOCATION_API_CONCURRENCY) detail latencies for
  the sync, and ceil(N / LLM_CONCURRENCY) LLM latencies for the batch;
- the ratio of the two;
- the bookkeeping time: the same run with zero latency, so Dagster, the database and the
  CSVs account for all of it;
- the peak RSS of the process that ran the job;
- the same jobs one call at a time (both concurrencies 1) at a smaller N, for comparison.

See docs/BENCHMARKS.md for the commands and the recorded results.
"""

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy.engine import make_url

from center_pipeline.sample_servers.faults import FaultPlan
from center_pipeline.sample_servers.server import SampleServers, make_synthetic_network

logger = logging.getLogger("benchmarks.sync_and_batch")

PHASE_SCRIPT = Path(__file__).with_name("phase.py")
JOBS = ("sync_centers", "run_batch")
# Targets: a job's wall time may be at most this factor times the ideal, plus the
# bookkeeping time.
SYNC_BOUND_FACTOR = 1.5
BATCH_BOUND_FACTOR = 1.10
MEMORY_LIMIT_MB = 500.0
# Variables of the caller's environment that would point a phase at other servers, keys or
# folders. Each phase gets its own.
_PIPELINE_VARIABLE_PREFIXES = (
    "LOCATION_", "LLM_", "OPENAI_", "XAI_", "CRON_", "EVENT", "DATABASE_URL", "DAGSTER_HOME",
)


@dataclass(frozen=True)
class Configuration:
    """One measured setting: the network size, the injected latencies and the concurrency."""

    name: str
    centers: int
    location_latency_ms: float
    llm_latency_ms: float
    location_concurrency: int
    llm_concurrency: int
    location_requests_per_second: float | None = None
    llm_requests_per_minute: float | None = None

    def ideal_seconds(self, job: str) -> float:
        """Time the job would take if only the remote latency and the limits cost time."""
        if job == "sync_centers":
            latency = self.location_latency_ms / 1000
            details = math.ceil(self.centers / self.location_concurrency) * latency
            if self.location_requests_per_second:
                spaced = (self.centers - 1) / self.location_requests_per_second + latency
                details = max(details, spaced)
            return latency + details
        latency = self.llm_latency_ms / 1000
        calls = math.ceil(self.centers / self.llm_concurrency) * latency
        if self.llm_requests_per_minute:
            spaced = (self.centers - 1) * 60 / self.llm_requests_per_minute + latency
            calls = max(calls, spaced)
        return calls


@dataclass
class PhaseResult:
    """The measurements `phase.py` printed for one job."""

    job: str
    success: bool
    call_seconds: float
    run_seconds: float | None
    max_rss_mb: float
    outcome: dict
    breakdown: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def wall_seconds(self) -> float:
        return self.run_seconds if self.run_seconds is not None else self.call_seconds


@dataclass
class ConfigurationResult:
    configuration: Configuration
    phases: dict[str, PhaseResult] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("httpx", "uvicorn", "uvicorn.error", "center_pipeline.sample_servers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    measured, bookkeeping, baseline = _configurations(args)
    results: dict[str, ConfigurationResult] = {}
    for configuration in (measured, bookkeeping, baseline):
        if configuration is None:
            continue
        logger.info("Running %s: %d centers", configuration.name, configuration.centers)
        results[configuration.name] = _run_configuration(configuration, args)

    report = _report(args, measured, bookkeeping, baseline, results)
    print(_format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        logger.info("Wrote the results to %s", args.json)

    failed = [
        f"{name} {job}"
        for name, result in results.items()
        for job, phase in result.phases.items()
        if not _phase_succeeded(phase, result.configuration.centers)
    ]
    if failed:
        logger.error("Runs that failed or left centers out: %s", ", ".join(failed))
        return 1
    return 0 if report["targets_met"] else 3


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure sync_centers and run_batch against the latency bound.",
    )
    parser.add_argument(
        "--centers", type=int, default=1000,
        help="centers in the network (N) (default: %(default)s)",
    )
    parser.add_argument(
        "--location-latency-ms", type=float, default=50.0,
        help="delay of every location API response, in milliseconds (default: %(default)s)",
    )
    parser.add_argument(
        "--llm-latency-ms", type=float, default=2000.0,
        help="delay of every LLM response, in milliseconds (default: %(default)s)",
    )

    parser.add_argument(
        "--location-concurrency", type=int, default=16,
        help="detail requests at once, LOCATION_API_CONCURRENCY (default: %(default)s)",
    )
    parser.add_argument(
        "--llm-concurrency", type=int, default=16,
        help="LLM calls at once, LLM_CONCURRENCY (default: %(default)s)",
    )
    parser.add_argument(
        "--location-requests-per-second", type=float,
        help="detail requests started per second, LOCATION_API_REQUESTS_PER_SECOND "
        "(default: no limit)",
    )
    parser.add_argument(
        "--llm-requests-per-minute", type=float,
        help="LLM calls started per minute, LLM_REQUESTS_PER_MINUTE (default: no limit)",
    )

    parser.add_argument(
        "--baseline-centers", type=int, default=20,
        help="centers of the one-call-at-a-time comparison run (default: %(default)s)",
    )
    parser.add_argument(
        "--skip-baseline", action="store_true", help="leave out the one-call-at-a-time run"
    )
    parser.add_argument(
        "--skip-bookkeeping", action="store_true",
        help="leave out the zero-latency run that measures the bookkeeping time",
    )

    parser.add_argument(
        "--postgres-url",
        help=(
            "PostgreSQL server for the application database and the Dagster instance "
            "storage, e.g. postgresql://postgres@127.0.0.1:5432/postgres; each run gets "
            "fresh databases, dropped afterwards (default: SQLite files in the temporary "
            "folder)"
        ),
    )
    parser.add_argument(
        "--run-date", default=date.today().isoformat(),
        help="run date of the batches as YYYY-MM-DD (default: today)"
    )
    parser.add_argument(
        "--phase-timeout-seconds", type=float, default=3600.0,
        help="maximum seconds one job may take before the script stops it (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument(
        "--keep-temp", action="store_true",
        help="keep the temporary folder with the instances, databases, CSVs and job logs",
    )
    return parser


def _configurations(
    args: argparse.Namespace,
) -> tuple[Configuration, Configuration | None, Configuration | None]:
    if args.centers < 1 or args.baseline_centers < 1:
        raise SystemExit("error: --centers and --baseline-centers must be at least 1")
    measured = Configuration(
        name="concurrent",
        centers=args.centers,
        location_latency_ms=args.location_latency_ms,
        llm_latency_ms=args.llm_latency_ms,
        location_concurrency=args.location_concurrency,
        llm_concurrency=args.llm_concurrency,
        location_requests_per_second=args.location_requests_per_second,
        llm_requests_per_minute=args.llm_requests_per_minute,
    )
    no_latency = measured.location_latency_ms == 0 and measured.llm_latency_ms == 0
    bookkeeping = None
    if not args.skip_bookkeeping and not no_latency:
        bookkeeping = Configuration(
            name="zero latency",
            centers=args.centers,
            location_latency_ms=0,
            llm_latency_ms=0,
            location_concurrency=args.location_concurrency,
            llm_concurrency=args.llm_concurrency,
        )
    baseline = None
    if not args.skip_baseline:
        baseline = Configuration(
            name="one call at a time",
            centers=args.baseline_centers,
            location_latency_ms=args.location_latency_ms,
            llm_latency_ms=args.llm_latency_ms,
            location_concurrency=1,
            llm_concurrency=1,
        )
    return measured, bookkeeping, baseline


def _run_configuration(
    configuration: Configuration, args: argparse.Namespace
) -> ConfigurationResult:
    """Serve the network, then run the sync and the batch, each in a fresh process."""
    result = ConfigurationResult(configuration)
    folder = Path(tempfile.mkdtemp(prefix="center-pipeline-bench-"))
    try:
        with _databases(args.postgres_url) as (app_url, dagster_url):
            _write_instance_yaml(folder / "dagster_home", dagster_url)
            servers = SampleServers(
                network=make_synthetic_network(configuration.centers),
                location_faults=FaultPlan(latency_ms=configuration.location_latency_ms),
                llm_faults=FaultPlan(latency_ms=configuration.llm_latency_ms),
            )
            with servers:
                env = _phase_env(configuration, servers, folder, app_url)
                for job in JOBS:
                    phase = _run_phase(job, env, folder, args)
                    result.phases[job] = phase
                    if not phase.success:
                        break
    finally:
        if args.keep_temp:
            logger.info("Kept %s", folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return result


@contextmanager
def _databases(postgres_url: str | None) -> Iterator[tuple[str | None, str | None]]:
    """Yield the application database URL and the Dagster storage URL, both fresh.

    With no PostgreSQL server given, yields (None, None). The phase then uses a SQLite file
    for the application and the default SQLite storage for Dagster.
    """
    if postgres_url is None:
        yield None, None
        return

    import psycopg

    server = make_url(postgres_url)
    admin_url = server.set(drivername="postgresql").render_as_string(hide_password=False)
    suffix = uuid.uuid4().hex[:12]
    names = [f"center_pipeline_bench_{suffix}_app", f"center_pipeline_bench_{suffix}_dagster"]
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as connection:
        for name in names:
            connection.execute(f'CREATE DATABASE "{name}"')
    try:
        app_url = server.set(drivername="postgresql", database=names[0])
        # dagster-postgres 0.29 fails on psycopg 3, which SQLAlchemy 2.1 picks for a plain
        # postgresql:// URL, so the instance storage names the psycopg2 driver.
        dagster_url = server.set(drivername="postgresql+psycopg2", database=names[1])
        yield (
            app_url.render_as_string(hide_password=False),
            dagster_url.render_as_string(hide_password=False),
        )
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as connection:
            for name in names:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _write_instance_yaml(home: Path, dagster_url: str | None) -> None:
    home.mkdir(parents=True)
    lines = ["telemetry:", "  enabled: false"]
    if dagster_url is not None:
        lines += ["storage:", "  postgres:", f"    postgres_url: {json.dumps(dagster_url)}"]
    (home / "dagster.yaml").write_text("\n".join(lines) + "\n")


def _phase_env(
    configuration: Configuration, servers: SampleServers, folder: Path, app_url: str | None
) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_PIPELINE_VARIABLE_PREFIXES)
    }
    env.update(servers.env())
    env.update(
        {
            "DAGSTER_HOME": str(folder / "dagster_home"),
            "DATABASE_URL": app_url or f"sqlite:///{folder / 'stage.db'}",
            "EVENTS_OUTPUT_DIR": str(folder / "events"),
            "LOCATION_API_CONCURRENCY": str(configuration.location_concurrency),
            "LLM_CONCURRENCY": str(configuration.llm_concurrency),
        }
    )
    if configuration.location_requests_per_second:
        env["LOCATION_API_REQUESTS_PER_SECOND"] = str(configuration.location_requests_per_second)
    if configuration.llm_requests_per_minute:
        env["LLM_REQUESTS_PER_MINUTE"] = str(configuration.llm_requests_per_minute)
    return env


def _run_phase(
    job: str, env: dict[str, str], folder: Path, args: argparse.Namespace
) -> PhaseResult:
    log_path = folder / f"{job}.log"
    command = [sys.executable, str(PHASE_SCRIPT), job, "--run-date", args.run_date]
    with log_path.open("w") as log:
        try:
            completed = subprocess.run(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=args.phase_timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return _failed_phase(job, f"timed out after {args.phase_timeout_seconds:g} s", log_path)

    lines = completed.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return _failed_phase(job, f"exited with code {completed.returncode}", log_path)
    logger.info(
        "%s: %s in %.1f s, peak RSS %.0f MB",
        job, "succeeded" if report["success"] else "failed", report["call_seconds"],
        report["max_rss_mb"],
    )
    return PhaseResult(
        job=job,
        success=report["success"],
        call_seconds=report["call_seconds"],
        run_seconds=report["run_seconds"],
        max_rss_mb=report["max_rss_mb"],
        outcome=report["outcome"],
        breakdown=report.get("breakdown_seconds", {}),
        error=None if report["success"] else f"the Dagster run failed; see {log_path}",
    )


def _failed_phase(job: str, reason: str, log_path: Path) -> PhaseResult:
    tail = log_path.read_text(errors="replace").splitlines()[-20:]
    logger.error("%s %s. Last lines of its log:\n%s", job, reason, "\n".join(tail))
    return PhaseResult(job, False, float("nan"), None, float("nan"), {}, error=reason)


def _phase_succeeded(phase: PhaseResult, centers: int) -> bool:
    if not phase.success:
        return False
    if phase.job == "sync_centers":
        return phase.outcome.get("inserted") == centers and phase.outcome.get("failed") == 0
    return phase.outcome.get("successful_centers") == centers


def _report(
    args: argparse.Namespace,
    measured: Configuration,
    bookkeeping: Configuration | None,
    baseline: Configuration | None,
    results: dict[str, ConfigurationResult],
) -> dict:
    """Collect the rows of the table and check each job against its bound."""
    rows = []
    targets = []
    factors = {"sync_centers": SYNC_BOUND_FACTOR, "run_batch": BATCH_BOUND_FACTOR}
    for job in JOBS:
        for configuration in (measured, bookkeeping, baseline):
            if configuration is None or job not in results[configuration.name].phases:
                continue
            phase = results[configuration.name].phases[job]
            ideal = configuration.ideal_seconds(job)
            rows.append(
                {
                    "job": job,
                    "run": configuration.name,
                    "centers": configuration.centers,
                    "concurrency": (
                        configuration.location_concurrency
                        if job == "sync_centers"
                        else configuration.llm_concurrency
                    ),
                    "run_seconds": phase.run_seconds,
                    "call_seconds": phase.call_seconds,
                    "ideal_seconds": ideal,
                    "ratio": phase.wall_seconds / ideal if ideal > 0 else None,
                    "seconds_per_center": phase.wall_seconds / configuration.centers,
                    "max_rss_mb": phase.max_rss_mb,
                    "ok": _phase_succeeded(phase, configuration.centers),
                    "outcome": phase.outcome,
                    "breakdown_seconds": phase.breakdown,
                }
            )

        main_phase = results[measured.name].phases.get(job)
        zero_phase = results[bookkeeping.name].phases.get(job) if bookkeeping else None
        if main_phase is None or not main_phase.success:
            continue
        ideal = measured.ideal_seconds(job)
        overhead = zero_phase.wall_seconds if zero_phase and zero_phase.success else None
        # With no latency there is no bound to check, because the run is its own bookkeeping.
        if ideal == 0 or overhead is None:
            continue
        bound = factors[job] * ideal + overhead
        targets.append(
            {
                "job": job,
                "wall_seconds": main_phase.wall_seconds,
                "factor": factors[job],
                "ideal_seconds": ideal,
                "bookkeeping_seconds": overhead,
                "bound_seconds": bound,
                "met": main_phase.wall_seconds <= bound,
            }
        )

    peaks = [
        row["max_rss_mb"]
        for row in rows
        if row["run"] == measured.name and not math.isnan(row["max_rss_mb"])
    ]
    peak = max(peaks, default=None)
    memory_met = peak is not None and peak <= MEMORY_LIMIT_MB
    return {
        "date": date.today().isoformat(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "storage": "postgresql" if args.postgres_url else "sqlite",
        "configuration": vars(measured),
        "rows": rows,
        "targets": targets,
        "peak_rss_mb": peak,
        "memory_limit_mb": MEMORY_LIMIT_MB,
        "targets_met": all(target["met"] for target in targets) and memory_met,
        "baseline_estimate_seconds": _baseline_estimates(rows, measured.centers),
    }


def _baseline_estimates(rows: list[dict], centers: int) -> dict[str, float]:
    """Scale the one-call-at-a-time seconds per center to N centers, as an estimate."""
    return {
        row["job"]: row["seconds_per_center"] * centers
        for row in rows
        if row["run"] == "one call at a time" and row["ok"]
    }


def _format_report(report: dict) -> str:
    configuration = report["configuration"]
    lines = [
        "",
        f"{configuration['centers']} centers; location API"
        f" {configuration['location_latency_ms']:g} ms a request,"
        f" {configuration['location_concurrency']} at once; LLM"
        f" {configuration['llm_latency_ms']:g} ms a request, {configuration['llm_concurrency']} at"
        f" once; {report['storage']} storage; {report['cpus']} CPUs; Python {report['python']};"
        f" {report['date']}",
        "",
    ]
    header = (
        f"{'job':<13} {'run':<19} {'centers':>7} {'conc':>4} {'run s':>8} {'call s':>8} "
        f"{'ideal s':>8} {'ratio':>6} {'s/center':>9} {'peak MB':>8} {'ok':>3}"
    )
    lines += [header, "-" * len(header)]
    for row in report["rows"]:
        lines.append(
            f"{row['job']:<13} {row['run']:<19} {row['centers']:>7} {row['concurrency']:>4} "
            f"{_number(row['run_seconds'], 8, 2)} {_number(row['call_seconds'], 8, 2)} "
            f"{_number(row['ideal_seconds'], 8, 2)} {_number(row['ratio'], 6, 2)} "
            f"{_number(row['seconds_per_center'], 9, 4)} {_number(row['max_rss_mb'], 8, 0)} "
            f"{'yes' if row['ok'] else 'NO':>3}"
        )

    lines += [
        "",
        "Where the call's time went (s): to the run's start, the step, after the asset body:",
    ]
    for row in report["rows"]:
        breakdown = row["breakdown_seconds"]
        parts = [
            f"{name} {_number(breakdown.get(name), 0, 2).strip()}"
            for name in ("to_run_start", "step", "after_asset")
        ]
        lines.append(f"  {row['job']:<13} {row['run']:<19} " + ", ".join(parts))

    lines += ["", "Bounds (run s of the concurrent run <= factor x ideal + zero-latency run s):"]
    for target in report["targets"]:
        lines.append(
            f"  {target['job']:<13} {target['wall_seconds']:.2f} s <= {target['factor']:.2f} x "
            f"{target['ideal_seconds']:.2f} s + {target['bookkeeping_seconds']:.2f} s = "
            f"{target['bound_seconds']:.2f} s: {'met' if target['met'] else 'NOT met'}"
        )
    if report["peak_rss_mb"] is not None:
        met = report["peak_rss_mb"] <= report["memory_limit_mb"]
        lines.append(
            f"  peak RSS      {report['peak_rss_mb']:.0f} MB <= "
            f"{report['memory_limit_mb']:.0f} MB: {'met' if met else 'NOT met'}"
        )
    for job, seconds in report["baseline_estimate_seconds"].items():
        lines.append(
            f"  one call at a time, scaled to {configuration['centers']} centers (estimate): "
            f"{job} {seconds:,.0f} s"
        )
    return "\n".join(lines)


def _number(value: float | None, width: int, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width},.{digits}f}"


if __name__ == "__main__":
    started = time.monotonic()
    exit_code = main()
    logger.info("Benchmark finished in %.0f s", time.monotonic() - started)
    sys.exit(exit_code)
