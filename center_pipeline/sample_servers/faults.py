"""Fault injection and request counting for the sample location and LLM servers.

A `FaultPlan` lists the faults a server injects. For each request the server increments a
`RequestCounter` and calls `decide_fault`, which returns the `Fault` to serve, or None for
a normal response. Random-looking faults are drawn from a hash of the seed, the request kind,
the request key and the attempt number for that key. The same plan therefore injects the
same faults into the same requests, whatever order concurrent requests arrive in.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus

from pydantic import BaseModel, ConfigDict, Field


class RequestKind(StrEnum):
    """Endpoint group that a request belongs to."""

    SLUGS = "slugs"
    DETAIL = "detail"
    LLM = "llm"


class KindFaults(BaseModel):
    """Faults injected into the requests of one kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests that get `error_status`."""

    error_status: int = Field(default=500, ge=400, le=599)
    """HTTP status of injected errors, for example 500, 503 or 429."""

    retry_after_seconds: float | None = Field(default=1.0, ge=0.0)
    """Delay sent in `Retry-After` and `retry-after-ms` on 429 responses, or None for no header."""

    fail_first: int = Field(default=0, ge=0)
    """Number of leading requests per key that get `error_status` before normal responses.

    The key is the slug for detail requests, the page for slug-list requests and the
    prompt's location for LLM requests.
    """

    malformed_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests that get status 200 and a cut, invalid JSON body."""

    truncated_answer_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of LLM responses cut short with finish_reason "length". Other kinds ignore it."""

    stall_first: int = Field(default=0, ge=0)
    """Number of leading requests per key held for `stall_seconds` before the answer.

    With a client timeout below `stall_seconds`, these requests time out on the client.
    """

    stall_seconds: float = Field(default=5.0, ge=0.0)


class FaultPlan(BaseModel):
    """Faults and latency that one sample server injects.

    The location server reads `slugs`, `detail`, `fail_slugs` and `slugs_down`. The LLM
    server reads `llm`. Both read `latency_ms` and `seed`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(default=0.0, ge=0.0)
    """Delay before every response, in milliseconds. It is an async sleep, so requests overlap."""

    seed: int = 0
    """Seed of the rate-based faults."""

    slugs: KindFaults = KindFaults()
    detail: KindFaults = KindFaults()
    llm: KindFaults = KindFaults()

    fail_slugs: frozenset[str] = frozenset()
    """Slugs whose detail request always returns `fail_slugs_status`."""

    fail_slugs_status: int = Field(default=500, ge=400, le=599)

    slugs_down: bool = False
    """When true, the slug list returns 503 on every request."""

    def faults_for(self, kind: RequestKind) -> KindFaults:
        """Return the faults configured for one request kind."""
        return {
            RequestKind.SLUGS: self.slugs,
            RequestKind.DETAIL: self.detail,
            RequestKind.LLM: self.llm,
        }[kind]


class FaultType(StrEnum):
    """Way in which a faulty response differs from a normal one."""

    STATUS = "status"
    MALFORMED = "malformed"
    TRUNCATED = "truncated"


@dataclass(frozen=True)
class Fault:
    """Fault to serve for one request.

    Attributes:
        type: What is wrong with the response.
        status: HTTP status to send. It is 200 for malformed and truncated responses.
        retry_after_seconds: Value for the Retry-After headers, or None to send none.
    """

    type: FaultType
    status: int = 200
    retry_after_seconds: float | None = None


def decide_fault(plan: FaultPlan, kind: RequestKind, key: str, attempt: int) -> Fault | None:
    """Choose the fault for one request, or None for a normal response.

    Args:
        plan: Faults the server injects.
        kind: Endpoint group of the request.
        key: Slug, slug-list page or prompt location of the request.
        attempt: 1-based count of requests of this kind and key, this one included.

    Returns:
        The fault to serve. Checks run in this order: `slugs_down`, `fail_slugs`,
        `fail_first`, `error_rate`, `malformed_rate`, `truncated_answer_rate`.
    """
    if kind is RequestKind.SLUGS and plan.slugs_down:
        return Fault(FaultType.STATUS, status=503)
    if kind is RequestKind.DETAIL and key in plan.fail_slugs:
        return Fault(FaultType.STATUS, status=plan.fail_slugs_status)

    faults = plan.faults_for(kind)
    in_failing_start = attempt <= faults.fail_first
    if in_failing_start or _draw(plan.seed, kind, key, attempt, "error") < faults.error_rate:
        retry_after = faults.retry_after_seconds if faults.error_status == 429 else None
        return Fault(FaultType.STATUS, status=faults.error_status, retry_after_seconds=retry_after)
    if _draw(plan.seed, kind, key, attempt, "malformed") < faults.malformed_rate:
        return Fault(FaultType.MALFORMED)
    if kind is RequestKind.LLM:
        if _draw(plan.seed, kind, key, attempt, "truncated") < faults.truncated_answer_rate:
            return Fault(FaultType.TRUNCATED)
    return None


def stall_seconds(plan: FaultPlan, kind: RequestKind, attempt: int) -> float:
    """Extra delay for this request, on top of `latency_ms`, in seconds."""
    faults = plan.faults_for(kind)
    return faults.stall_seconds if attempt <= faults.stall_first else 0.0


def _draw(seed: int, kind: RequestKind, key: str, attempt: int, fault_name: str) -> float:
    """Return a number in [0, 1) that depends only on the arguments."""
    text = f"{seed}\x00{kind}\x00{key}\x00{attempt}\x00{fault_name}".encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class RequestCounts:
    """Copy of a `RequestCounter` at one moment.

    Attributes:
        total: All counted requests.
        by_kind: Requests per kind ("slugs", "detail", "llm").
        by_slug: Detail requests per slug.
        by_location: LLM requests per prompt location.
    """

    total: int
    by_kind: dict[str, int]
    by_slug: dict[str, int]
    by_location: dict[str, int]


class RequestCounter:
    """Thread-safe request counts per kind and per key.

    The servers increment it on their event loop thread while tests and benchmarks read it
    from other threads, so every access holds the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: Counter[tuple[RequestKind, str]] = Counter()

    def increment(self, kind: RequestKind, key: str) -> int:
        """Count one request and return how many requests of this kind and key there were."""
        with self._lock:
            self._by_key[(kind, key)] += 1
            return self._by_key[(kind, key)]

    def snapshot(self) -> RequestCounts:
        """Return the current counts."""
        with self._lock:
            items = list(self._by_key.items())

        by_kind = {str(kind): 0 for kind in RequestKind}
        by_slug: dict[str, int] = {}
        by_location: dict[str, int] = {}
        for (kind, key), count in items:
            by_kind[str(kind)] += count
            if kind is RequestKind.DETAIL:
                by_slug[key] = count
            elif kind is RequestKind.LLM:
                by_location[key] = count
        return RequestCounts(
            total=sum(by_kind.values()),
            by_kind=by_kind,
            by_slug=by_slug,
            by_location=by_location,
        )

    def reset(self) -> None:
        """Set all counts to zero, which also restarts every `fail_first` sequence."""
        with self._lock:
            self._by_key.clear()


def cut_json(body: object) -> bytes:
    """Serialize `body` as JSON and return the first half of it, which is invalid JSON."""
    text = json.dumps(body, ensure_ascii=False)
    return text[: max(1, len(text) // 2)].encode()


def retry_after_headers(seconds: float | None) -> dict[str, str]:
    """Return `Retry-After` in whole seconds, rounded up, and `retry-after-ms` as OpenAI sends."""
    if seconds is None:
        return {}
    return {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1000))}


def status_phrase(status: int) -> str:
    """Return the reason phrase of an HTTP status, or "Error" for an unregistered one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
