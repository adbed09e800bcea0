"""Tests for the request-rate limit and its settings, on a fake clock."""

import math
import threading
from datetime import date

import pytest

from center_pipeline.config import ConfigError, LlmSettings, LocationSettings, load_settings
from center_pipeline.events import batch
from center_pipeline.events.batch import BatchOptions, run_batch
from center_pipeline.events.llm_client import LlmError
from center_pipeline.locations import fetch
from center_pipeline.locations.fetch import fetch_centers
from center_pipeline.locations.models import Center, CenterStatus
from center_pipeline.ratelimit import RateLimiter, rate_limiter_or_none


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class RecordingLimiter:
    """Stands in for RateLimiter and counts the slots taken."""

    def __init__(self, rate_per_second: float) -> None:
        self.rate_per_second = rate_per_second
        self.acquired = 0
        self.delayed_requests = 0
        self.delay_seconds = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        with self._lock:
            self.acquired += 1
        return 0.0


def make_center(number: int) -> Center:
    return Center(
        center_id=f"S-{number}",
        slug=f"center-{number}",
        center_name=f"Center {number}",
        city="Austin",
        state="TX",
        zip="78701",
        owner_email=None,
        radius_miles=25.0,
        status=CenterStatus.ACTIVE,
        is_active=True,
    )


def record_limiters(monkeypatch, module) -> list[RecordingLimiter]:
    created: list[RecordingLimiter] = []

    def build(rate_per_second: float | None) -> RecordingLimiter | None:
        if rate_per_second is None:
            return None
        limiter = RecordingLimiter(rate_per_second)
        created.append(limiter)
        return limiter

    monkeypatch.setattr(module, "rate_limiter_or_none", build)
    return created


def test_limiter_spaces_consecutive_requests():
    fake = FakeTime()
    limiter = RateLimiter(4, clock=fake.clock, sleep=fake.sleep)

    waits = [limiter.acquire() for _ in range(3)]

    assert waits == [0.0, pytest.approx(0.25), pytest.approx(0.25)]
    assert fake.now == pytest.approx(100.5)
    assert limiter.delayed_requests == 2
    assert limiter.delay_seconds == pytest.approx(0.5)


def test_limiter_idle_period_earns_no_burst():
    fake = FakeTime()
    limiter = RateLimiter(2, clock=fake.clock, sleep=fake.sleep)
    limiter.acquire()
    fake.now += 10

    first_after_idle = limiter.acquire()
    second_after_idle = limiter.acquire()

    assert first_after_idle == 0.0
    assert second_after_idle == pytest.approx(0.5)


def test_limiter_gives_threads_distinct_slots():
    fake = FakeTime()
    waits: list[float] = []
    lock = threading.Lock()

    def record_wait(seconds: float) -> None:
        with lock:
            waits.append(seconds)

    # The clock does not move, so each wait equals its slot's distance from now.
    limiter = RateLimiter(10, clock=fake.clock, sleep=record_wait)
    threads = [
        threading.Thread(target=lambda: [limiter.acquire() for _ in range(25)]) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert all(not thread.is_alive() for thread in threads)
    assert sorted(waits) == pytest.approx([slot / 10 for slot in range(1, 200)])
    assert limiter.delayed_requests == 199


@pytest.mark.parametrize("rate", [0, -1, math.nan, math.inf])
def test_limiter_rejects_invalid_rate(rate):
    with pytest.raises(ValueError, match="rate_per_second"):
        RateLimiter(rate)


def test_no_rate_builds_no_limiter():
    assert rate_limiter_or_none(None) is None
    assert rate_limiter_or_none(5).rate_per_second == 5


class FakeLocationClient:
    def fetch_center(self, slug: str, default_radius_miles: float) -> Center:
        return make_center(int(slug.removeprefix("center-")))


def test_fetch_centers_takes_slot_per_slug(monkeypatch):
    created = record_limiters(monkeypatch, fetch)
    slugs = [f"center-{number}" for number in range(30)]

    outcome = fetch_centers(
        FakeLocationClient(), slugs, concurrency=4, default_radius_miles=25,
        requests_per_second=20,
    )

    assert [center.slug for center in outcome.centers] == slugs
    assert len(created) == 1
    assert created[0].rate_per_second == 20
    assert created[0].acquired == len(slugs)


def test_fetch_centers_without_rate_has_no_limiter(monkeypatch):
    created = record_limiters(monkeypatch, fetch)

    outcome = fetch_centers(
        FakeLocationClient(), ["center-1"], concurrency=4, default_radius_miles=25
    )

    assert len(outcome.centers) == 1
    assert created == []


class FailingLlmClient:
    def complete(self, prompt: str, system_prompt: str):
        raise LlmError("the sample LLM is down")


def test_run_batch_takes_slot_per_center(monkeypatch, tmp_path):
    created = record_limiters(monkeypatch, batch)
    centers = [make_center(number) for number in range(12)]
    options = BatchOptions(
        run_date=date(2026, 12, 4), window_days=30, output_dir=tmp_path, concurrency=4,
        requests_per_minute=120,
    )
    results = []

    run_batch(centers, FailingLlmClient(), options, results.append)

    assert len(results) == len(centers)
    assert all("down" in outcome.result.error for outcome in results)
    assert len(created) == 1
    assert created[0].rate_per_second == pytest.approx(2)
    assert created[0].acquired == len(centers)


def test_rate_settings_read_from_environment(monkeypatch):
    monkeypatch.setenv("LOCATION_SLUG_API_URL", "http://127.0.0.1:8010/api/slugs")
    monkeypatch.setenv("LOCATION_DATA_API_URL", "http://127.0.0.1:8010/api")
    monkeypatch.setenv("LOCATION_API_REQUESTS_PER_SECOND", "12.5")
    monkeypatch.setenv("LLM_REQUESTS_PER_MINUTE", "500")

    assert load_settings(LocationSettings).location_api_requests_per_second == 12.5
    assert load_settings(LlmSettings).llm_requests_per_minute == 500


def test_blank_rate_setting_means_no_limit(monkeypatch):
    monkeypatch.setenv("LOCATION_SLUG_API_URL", "http://127.0.0.1:8010/api/slugs")
    monkeypatch.setenv("LOCATION_DATA_API_URL", "http://127.0.0.1:8010/api")
    monkeypatch.setenv("LOCATION_API_REQUESTS_PER_SECOND", " ")
    monkeypatch.delenv("LLM_REQUESTS_PER_MINUTE", raising=False)

    assert load_settings(LocationSettings).location_api_requests_per_second is None
    assert load_settings(LlmSettings).llm_requests_per_minute is None


def test_zero_rate_setting_names_variable(monkeypatch):
    monkeypatch.setenv("LLM_REQUESTS_PER_MINUTE", "0")

    with pytest.raises(ConfigError) as error:
        load_settings(LlmSettings)

    assert "LLM_REQUESTS_PER_MINUTE='0' is invalid" in str(error.value)
    assert "Example: LLM_REQUESTS_PER_MINUTE=500" in str(error.value)
