"""The production setup on PostgreSQL, with real runs launched by the daemon's run queue.

One deployment serves the module: a Dagster home whose dagster.yaml is
deploy/dagster-postgres.yaml, instance storage in one new PostgreSQL database, DATABASE_URL
on another, the sample servers, and `dagster-daemon run` as a subprocess. Runs are submitted
with `dagster job launch`, so they wait in the queue until the daemon launches them.
"""

import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.scheduler.instigation import InstigatorType
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL, make_url

from center_pipeline.cli import main
from center_pipeline.dagster_env import EVENT_STORAGE_DEFAULTS
from center_pipeline.db.engine import DatabaseUnavailable, create_database_engine
from center_pipeline.db.tables import batch_runs, centers
from center_pipeline.jobs import CENTERS_TABLE_TAG
from center_pipeline.launch import SYNC_RUN_TAG
from center_pipeline.sample_servers.server import SampleServers
from center_pipeline_tests.dagster_events import stored_asset_events

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = REPO_ROOT / "workspace.yaml"
DEPLOY_DIR = REPO_ROOT / "deploy"
BIN_DIR = Path(sys.executable).parent

# All steps of a submitted sync in the run worker's process: one process start per run
# instead of one per step.
IN_PROCESS_CONFIG = json.dumps({"execution": {"config": {"in_process": {}}}})
WAIT_TIMEOUT_SECONDS = 150
# Longer than dequeue_interval_seconds in the deploy file, so a running daemon would have
# dequeued the run in this time.
QUEUE_QUIET_SECONDS = 4

IN_PROGRESS = {DagsterRunStatus.STARTING, DagsterRunStatus.STARTED}

logger = logging.getLogger(__name__)

# Variables of the developer's shell that would change the runs or the instance.
FOREIGN_PREFIXES = (
    "LOCATION_",
    "LLM_",
    "OPENAI_",
    "XAI_",
    "CRON_",
    "EVENT",
    "BRIDGE_",
    "DAGSTER_",
    "DATABASE_",
)


def wait_for(
    condition: Callable[[], object],
    description: str,
    details: Callable[[], str] = lambda: "",
    timeout: float = WAIT_TIMEOUT_SECONDS,
):
    """Poll `condition` until it returns a true value, and return that value.

    On timeout, the AssertionError contains `description` and the text that `details` returns.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {description}\n{details()}")


def libpq_url(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def fresh_database(server_url: str, purpose: str) -> Iterator[URL]:
    """Create an empty PostgreSQL database and drop it afterwards."""
    server = make_url(server_url)
    name = f"center_pipeline_test_{purpose}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(server), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name)
    finally:
        with psycopg.connect(libpq_url(server), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Daemon:
    """`dagster-daemon run` in a process group of its own.

    `stop` signals only the daemon, as a service manager would, so its code server and the
    run workers it launched keep going. `kill` ends the whole group.
    """

    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path):
        self._env = env
        self._cwd = cwd
        self._log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self._log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN_DIR / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
                env=self._env,
                cwd=self._cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        if not self._log_path.exists():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Deployment:
    home: Path
    env: dict[str, str]
    instance: DagsterInstance
    instance_url: URL
    app_url: URL
    daemons: list[Daemon] = field(default_factory=list)
    launches: list[subprocess.Popen] = field(default_factory=list)

    def start_daemon(self) -> Daemon:
        daemon = Daemon(self.env, self.home, self.home / f"daemon-{len(self.daemons) + 1}.log")
        self.daemons.append(daemon)
        daemon.start()
        return daemon

    def submit(self, job_name: str) -> subprocess.Popen:
        """Start `dagster job launch`, which puts one run of the job in the queue."""
        launch = subprocess.Popen(
            [
                str(BIN_DIR / "dagster"), "job", "launch",
                "-w", str(WORKSPACE),
                "-j", job_name,
                "--config-json", IN_PROCESS_CONFIG,
            ],
            env=self.env,
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.launches.append(launch)
        return launch

    def stop_all(self) -> None:
        """Kill every subprocess that the tests started, and whatever they started."""
        for launch in self.launches:
            if launch.poll() is None:
                launch.kill()
                launch.wait(timeout=10)
        for daemon in self.daemons:
            daemon.kill()

    def status(self, run_id: str) -> DagsterRunStatus:
        return self.instance.get_run_by_id(run_id).status

    def is_finished(self, run_id: str) -> bool:
        return self.instance.get_run_by_id(run_id).is_finished

    def describe(self, run_id: str) -> str:
        """The run's status and failure events, for assertion messages."""
        run = self.instance.get_run_by_id(run_id)
        lines = [f"{run.job_name} {run_id}: {run.status.value}"]
        for entry in self.instance.all_logs(run_id):
            error = getattr(entry.dagster_event, "event_specific_data", None)
            error = getattr(error, "error", None)
            while error is not None:
                lines.append(f"  {error.message.strip()}")
                error = error.cause
        return "\n".join(lines)


def subprocess_env(values: dict[str, str]) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(FOREIGN_PREFIXES)
    }
    env.update(values)
    return env


@pytest.fixture(scope="module")
def deployment(postgres_server_url, tmp_path_factory) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("production_home")
    shutil.copy(DEPLOY_DIR / "dagster-postgres.yaml", home / "dagster.yaml")

    with ExitStack() as stack:
        instance_url = stack.enter_context(fresh_database(postgres_server_url, "instance"))
        app_url = stack.enter_context(fresh_database(postgres_server_url, "app"))
        servers = stack.enter_context(SampleServers())
        values = {
            "DAGSTER_HOME": str(home),
            # dagster-postgres needs psycopg2, as deploy/dagster-postgres.yaml explains.
            "DAGSTER_PG_URL": instance_url.set(drivername="postgresql+psycopg2").render_as_string(
                hide_password=False
            ),
            "DATABASE_URL": app_url.render_as_string(hide_password=False),
            "EVENTS_OUTPUT_DIR": str(home / "events"),
            "CRON_ENABLED": "false",
            # The README's production section exports them for the daemon.
            **EVENT_STORAGE_DEFAULTS,
            **servers.env(),
        }
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv("DAGSTER_PG_URL", values["DAGSTER_PG_URL"])

        # Creating the instance tables here, once, keeps the daemon and `dagster job launch`
        # from racing to create them in the new database.
        instance = stack.enter_context(DagsterInstance.from_config(str(home)))
        deployment = Deployment(home, subprocess_env(values), instance, instance_url, app_url)
        try:
            yield deployment
        finally:
            deployment.stop_all()


@dataclass(frozen=True)
class RestartScenario:
    """What happened while the queue ran two syncs across a daemon restart."""

    sync_and_run_id: str
    sync_id: str
    queued_run_id: str
    queued_status_while_stopped: DagsterRunStatus
    second_daemon_started_at: float
    batch_id: str


@pytest.fixture(scope="module")
def restart_scenario(deployment: Deployment) -> RestartScenario:
    """Queue sync_and_run and sync_centers, restart the daemon while one of them waits.

    Both runs are submitted before any daemon runs. The first daemon launches one of them,
    and the tag limit keeps the other queued. The daemon is stopped then, and a second daemon
    finishes the queue, including the batch that the batch_after_sync sensor requests.
    """
    logger.info("Submitting sync_and_run and sync_centers")
    submissions = [deployment.submit("sync_and_run"), deployment.submit("sync_centers")]
    for submission in submissions:
        output, _ = submission.communicate(timeout=WAIT_TIMEOUT_SECONDS)
        assert submission.returncode == 0, output.decode(errors="replace")[-3000:]
    runs = deployment.instance.get_runs()
    run_ids = {run.job_name: run.run_id for run in runs}
    assert sorted(run_ids) == ["sync_and_run", "sync_centers"]
    assert {run.status for run in runs} == {DagsterRunStatus.QUEUED}

    logger.info("Starting the first daemon")
    first = deployment.start_daemon()
    queued_run_id = wait_for(
        lambda: _queued_behind_running_run(deployment, list(run_ids.values())),
        "the first daemon to launch one sync while the other stays queued",
        first.log_tail,
    )
    wait_for(
        lambda: _sensor_has_cursor(deployment.instance, "batch_after_sync"),
        "the batch_after_sync sensor's first tick",
        first.log_tail,
    )
    logger.info("Stopping the first daemon while run %s is queued", queued_run_id)
    assert first.stop() == 0, first.log_tail()

    time.sleep(QUEUE_QUIET_SECONDS)
    queued_status_while_stopped = deployment.status(queued_run_id)

    logger.info("Starting the second daemon")
    second_started_at = time.time()
    second = deployment.start_daemon()
    wait_for(
        lambda: all(deployment.is_finished(run_id) for run_id in run_ids.values()),
        "both syncs to finish",
        second.log_tail,
    )
    logger.info("Both syncs finished. Waiting for the batch")
    batch = wait_for(
        lambda: _finished_batch(deployment.instance, run_ids["sync_and_run"]),
        "the batch that batch_after_sync launches",
        second.log_tail,
    )
    return RestartScenario(
        sync_and_run_id=run_ids["sync_and_run"],
        sync_id=run_ids["sync_centers"],
        queued_run_id=queued_run_id,
        queued_status_while_stopped=queued_status_while_stopped,
        second_daemon_started_at=second_started_at,
        batch_id=batch.run_id,
    )


def _queued_behind_running_run(deployment: Deployment, run_ids: list[str]) -> str | None:
    """Return the queued run's id when one run is in progress and the other is queued."""
    statuses = {run_id: deployment.status(run_id) for run_id in run_ids}
    finished = [run_id for run_id in run_ids if deployment.is_finished(run_id)]
    assert not finished, [deployment.describe(run_id) for run_id in finished]

    queued = [run_id for run_id, status in statuses.items() if status == DagsterRunStatus.QUEUED]
    running = [run_id for run_id, status in statuses.items() if status in IN_PROGRESS]
    if len(queued) == 1 and len(running) == 1:
        return queued[0]
    return None


def _sensor_has_cursor(instance: DagsterInstance, name: str) -> bool:
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name == name and state.instigator_data and state.instigator_data.cursor:
            return True
    return False


def _finished_batch(instance: DagsterInstance, sync_run_id: str):
    runs = instance.get_runs(RunsFilter(job_name="run_batch", tags={SYNC_RUN_TAG: sync_run_id}))
    return runs[0] if runs and runs[0].is_finished else None


def test_sync_then_batch_complete(deployment, restart_scenario):
    scenario = restart_scenario
    for run_id in (scenario.sync_and_run_id, scenario.sync_id, scenario.batch_id):
        assert deployment.status(run_id) == DagsterRunStatus.SUCCESS, deployment.describe(run_id)

    engine = create_engine(deployment.app_url)
    with engine.connect() as connection:
        active = connection.execute(
            select(centers.c.slug).where(centers.c.is_active.is_(True))
        ).scalars().all()
        batch = connection.execute(
            select(batch_runs).where(batch_runs.c.run_id == scenario.batch_id)
        ).mappings().one()
    engine.dispose()
    assert len(active) > 0
    assert batch["status"] == "completed"
    assert batch["total_centers"] == len(active)
    assert batch["successful_centers"] == len(active)

    # The daemon created the batch run with one planned event for all of its partitions, and
    # the run worker stored one materialization per center, in batches.
    stored = stored_asset_events(deployment.instance, scenario.batch_id)
    assert stored.planned_partition_sets == [set(active)]
    assert sorted(stored.materialized_partitions) == sorted(active)

    sync_end = deployment.instance.get_run_record_by_id(scenario.sync_and_run_id).end_time
    batch_start = deployment.instance.get_run_record_by_id(scenario.batch_id).start_time
    assert batch_start >= sync_end


def test_queued_runs_never_overlap(deployment, restart_scenario):
    records = [
        deployment.instance.get_run_record_by_id(run_id)
        for run_id in (
            restart_scenario.sync_and_run_id,
            restart_scenario.sync_id,
            restart_scenario.batch_id,
        )
    ]
    for record in records:
        assert CENTERS_TABLE_TAG in record.dagster_run.tags, record.dagster_run.job_name
    intervals = sorted(
        (record.start_time, record.end_time, record.dagster_run.job_name) for record in records
    )
    for (_, first_end, first_job), (second_start, _, second_job) in itertools.pairwise(intervals):
        assert second_start >= first_end, f"{second_job} started before {first_job} ended"


def test_queued_run_survives_daemon_restart(deployment, restart_scenario):
    scenario = restart_scenario

    assert scenario.queued_status_while_stopped == DagsterRunStatus.QUEUED
    record = deployment.instance.get_run_record_by_id(scenario.queued_run_id)
    assert record.dagster_run.status == DagsterRunStatus.SUCCESS, deployment.describe(
        scenario.queued_run_id
    )
    assert record.start_time >= scenario.second_daemon_started_at


def test_runs_stored_in_instance_database(deployment, restart_scenario, tmp_path, monkeypatch):
    expected = {
        restart_scenario.sync_and_run_id,
        restart_scenario.sync_id,
        restart_scenario.batch_id,
    }
    engine = create_engine(deployment.instance_url)
    with engine.connect() as connection:
        stored = set(connection.execute(text("SELECT run_id FROM runs")).scalars())
    engine.dispose()
    assert expected <= stored

    # The same storage through the variant of the deploy file that takes separate fields.
    shutil.copy(DEPLOY_DIR / "dagster-postgres-fields.yaml", tmp_path / "dagster.yaml")
    url = deployment.instance_url
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USER", url.username or "")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert expected <= {run.run_id for run in instance.get_runs()}


def test_unreachable_database_named_without_password(monkeypatch, capsys):
    # Nothing listens on port 1, so the connection is refused at once.
    url = "postgresql://center:s3cret-pw@127.0.0.1:1/centers"

    with pytest.raises(DatabaseUnavailable) as refused:
        create_database_engine(url)

    message = str(refused.value)
    assert "host 127.0.0.1" in message
    assert "database centers" in message
    assert "s3cret-pw" not in message

    monkeypatch.setenv("DATABASE_URL", url)
    capsys.readouterr()
    assert main(["db", "upgrade"]) == 2
    error = capsys.readouterr().err
    assert "host 127.0.0.1" in error
    assert "s3cret-pw" not in error


def test_pooled_connection_survives_server_restart(postgres_database):
    engine = create_database_engine(postgres_database)
    with engine.connect() as connection:
        first_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()

    # What a server restart does to the pool: every open connection is closed server-side.
    with psycopg.connect(libpq_url(make_url(postgres_database)), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first_pid,))

    with engine.connect() as connection:
        second_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        rows = connection.execute(select(centers.c.id)).all()
    engine.dispose()
    assert second_pid != first_pid
    assert rows == []
