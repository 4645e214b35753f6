"""The drift monitor: KServe inference-logger events turned into windows of scored encounters.

At serving time the monitor pairs each logged request with its response (same ``ce-id``),
recomputes the features from the raw request with the predictor's own code
(``scoring.validate_instances`` + the served feature set's frame code) and, each time a window is
full, hands it to its ``DriftTester`` (tester.py), which judges it against the reference
(reference.py). Kept apart from both: this is the only part that knows the event stream.
Nothing here imports KServe.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from hospital_mlops.drift.inference_events import InferenceEvent
from hospital_mlops.drift.tester import DriftResult, DriftTester
from hospital_mlops.features import ServedInputs
from hospital_mlops.model.scoring import (
    ENCOUNTER_TOKEN,
    MAX_INSTANCES,
    OBSERVATION_TIMES,
    PRIOR_ENCOUNTERS,
    InvalidRequest,
    validate_instances,
)

MIN_WINDOW = 10
MAX_PENDING_EVENTS = 10_000
MAX_PENDING_SECONDS = 600.0


@dataclass(frozen=True)
class Rejection:
    """Why an event (or a request/response pair) did not reach a window. ``field`` is a
    catalogued input or protocol field name, never a value sent by the client."""

    reason: str  # invalid_request | invalid_response | count_mismatch | other_model | unpaired
    field: str


@dataclass(frozen=True)
class ScoredWindow:
    window_id: str
    features: pd.DataFrame
    scores: np.ndarray
    first_event_time: str
    last_event_time: str
    # requests the endpoint refused while the window filled, by field (each a discharge that got
    # no score), and the rows' encounter tokens where the client sent them
    refused: dict[str, int] = field(default_factory=dict)
    keys: pd.Series | None = None

    @property
    def hours(self) -> float | None:
        """The time the window took to fill, from its first and last logged event."""
        first, last = _event_time(self.first_event_time), _event_time(self.last_event_time)
        if first is None or last is None:
            return None
        return max((last - first).total_seconds() / 3600, 0.0)


@dataclass
class Intake:
    windows: list[ScoredWindow] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass
class _Pending:
    kind: str
    arrived: float
    time: str
    features: pd.DataFrame | None = None  # requests (None: the request was invalid)
    in_use: np.ndarray | None = None  # requests: rows inside the intended use
    keys: list[str | None] = field(default_factory=list)  # requests: encounter tokens sent
    scores: np.ndarray | None = None  # responses (None: the response was invalid)
    model_versions: frozenset[str] = frozenset()


_PROTOCOL_FIELDS = frozenset(
    {PRIOR_ENCOUNTERS, OBSERVATION_TIMES, ENCOUNTER_TOKEN, "instances", "<instance>"}
)


def _event_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _safe_field(name: str, served: ServedInputs) -> str:
    """Metric labels and logs carry only names we defined: an unknown input name is the
    client's text, so it is reported as 'other'."""
    return name if name in _PROTOCOL_FIELDS or name in served.inputs else "other"


class DriftMonitor:
    """Pairs logged requests and responses by ``ce-id`` and fills windows of scored encounters.

    Requests are validated and turned into features on arrival, so no raw request is held. The
    pending buffer is bounded in count and age: an event whose partner never comes is evicted
    and counted. Not thread-safe: one event loop calls ``collect``."""

    def __init__(
        self,
        tester: DriftTester,
        served: ServedInputs,
        window: int,
        expected_model_version: str | None = None,
        max_instances: int = MAX_INSTANCES,
        max_pending: int = MAX_PENDING_EVENTS,
        max_pending_seconds: float = MAX_PENDING_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < MIN_WINDOW:
            raise ValueError(f"window must be at least {MIN_WINDOW} rows")
        self.tester = tester
        self.served = served
        self.window = window
        self.expected_model_version = expected_model_version
        self.max_instances = max_instances
        self.max_pending = max_pending
        self.max_pending_seconds = max_pending_seconds
        self.clock = clock
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        self.chunks: list[tuple[pd.DataFrame, np.ndarray, list[str | None]]] = []
        self.window_refused: Counter[str] = Counter()
        self.buffered_rows = 0
        self.window_first_time = ""
        self.window_last_time = ""
        self.received: Counter[str] = Counter()
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.windows_filled = 0
        # Scored rows outside the intended use (deaths, hospice): the reference has none, so
        # they stay out of the windows; the predictor flags each as a limitation.
        self.outside_intended_use = 0

    def collect(self, event: InferenceEvent) -> Intake:
        intake = Intake()
        self.received[event.kind] += 1
        self._evict(intake)
        item = (
            self._request(event, intake)
            if event.kind == "request"
            else self._response(event, intake)
        )
        partner = self.pending.get(event.id)
        if partner is not None and partner.kind != item.kind:
            del self.pending[event.id]
            request, response = (item, partner) if item.kind == "request" else (partner, item)
            self._pair(request, response, intake)
        else:
            if partner is not None:  # a repeated delivery: the newer one wins
                del self.pending[event.id]
            self.pending[event.id] = item
        self._evict(intake)
        for r in intake.rejections:
            self.rejected[(r.reason, r.field)] += 1
        return intake

    def test(self, window: ScoredWindow) -> DriftResult:
        keys = window.keys
        return self.tester.test(
            window.features,
            window.scores,
            window.window_id,
            window.first_event_time,
            window.last_event_time,
            refused=window.refused,
            keys=None if keys is None or keys.isna().all() else keys.dropna(),
            hours=window.hours,
        )

    def observe(self, event: InferenceEvent) -> list[DriftResult]:
        """Collect and test in one call (tests, batch replays); a server tests off its loop."""
        return [self.test(w) for w in self.collect(event).windows]

    @property
    def pending_events(self) -> int:
        return len(self.pending)

    def _request(self, event: InferenceEvent, intake: Intake) -> _Pending:
        item = _Pending("request", self.clock(), event.time)
        data = event.data
        if not isinstance(data, dict) or "instances" not in data:
            intake.rejections.append(Rejection("invalid_request", "instances"))
            return item
        try:
            # Judged as of when it was logged: observation times are checked against "now".
            valid = validate_instances(
                data["instances"],
                self.served,
                max_instances=self.max_instances,
                now=_event_time(event.time),
            )
        except InvalidRequest as exc:
            where = _safe_field(exc.errors[0].field, self.served)
            intake.rejections.append(Rejection("invalid_request", where))
            # the predictor refused the same request (same validation): discharges without a
            # score, which the window's requests_refused rule counts
            instances = data["instances"]
            self.window_refused[where] += len(instances) if isinstance(instances, list) else 1
            return item
        item.features = self.served.features(valid.encounters, valid.prior_encounters)
        item.features = item.features.reset_index(drop=True)
        item.in_use = ~self.served.outside(valid.encounters)
        item.keys = list(valid.encounter_tokens)
        return item

    def _response(self, event: InferenceEvent, intake: Intake) -> _Pending:
        item = _Pending("response", self.clock(), event.time)
        data = event.data
        predictions = data.get("predictions") if isinstance(data, dict) else None
        if not isinstance(predictions, list) or not predictions:
            intake.rejections.append(Rejection("invalid_response", "predictions"))
            return item
        risks: list[float] = []
        versions: set[str] = set()
        for p in predictions:
            risk = p.get("risk") if isinstance(p, dict) else None
            if (
                isinstance(risk, bool)
                or not isinstance(risk, int | float)
                or not (0.0 <= float(risk) <= 1.0)
            ):
                intake.rejections.append(Rejection("invalid_response", "risk"))
                return item
            risks.append(float(risk))
            version = p.get("model_version")
            if isinstance(version, str):
                versions.add(version[:200])
        item.scores = np.asarray(risks, dtype="float64")
        item.model_versions = frozenset(versions)
        return item

    def _pair(self, request: _Pending, response: _Pending, intake: Intake) -> None:
        if request.features is None or response.scores is None:
            return  # already counted when the invalid half arrived
        if len(request.features) != len(response.scores):
            intake.rejections.append(Rejection("count_mismatch", "predictions"))
            return
        expected = self.expected_model_version
        if expected and response.model_versions and response.model_versions != {expected}:
            intake.rejections.append(Rejection("other_model", "model_version"))
            return
        features, scores = request.features, response.scores
        keys = request.keys or [None] * len(scores)
        if request.in_use is not None and not request.in_use.all():
            self.outside_intended_use += int((~request.in_use).sum())
            features = features.loc[request.in_use].reset_index(drop=True)
            scores = scores[request.in_use]
            keys = [k for k, use in zip(keys, request.in_use, strict=True) if use]
            if not len(scores):
                return
        times = sorted(t for t in (request.time, response.time) if t)
        if times and not self.window_first_time:
            self.window_first_time = times[0]
        if times:
            self.window_last_time = max(self.window_last_time, times[-1])
        self.chunks.append((features, scores, keys))
        self.buffered_rows += len(scores)
        while self.buffered_rows >= self.window:
            intake.windows.append(self._cut())

    def _cut(self) -> ScoredWindow:
        features = pd.concat([f for f, _, _ in self.chunks], ignore_index=True)
        scores = np.concatenate([s for _, s, _ in self.chunks])
        keys = [k for _, _, ks in self.chunks for k in ks]
        window = ScoredWindow(
            uuid.uuid4().hex,
            features.iloc[: self.window].reset_index(drop=True),
            scores[: self.window],
            self.window_first_time,
            self.window_last_time,
            dict(self.window_refused),
            pd.Series(keys[: self.window], dtype="object"),
        )
        self.window_refused = Counter()
        rest = len(scores) - self.window
        self.chunks = (
            [
                (
                    features.iloc[self.window :].reset_index(drop=True),
                    scores[self.window :],
                    keys[self.window :],
                )
            ]
            if rest
            else []
        )
        self.buffered_rows = rest
        self.window_first_time = self.window_last_time if rest else ""
        self.windows_filled += 1
        return window

    def _evict(self, intake: Intake) -> None:
        now = self.clock()
        while self.pending:
            oldest_id, oldest = next(iter(self.pending.items()))
            too_many = len(self.pending) > self.max_pending
            too_old = now - oldest.arrived > self.max_pending_seconds
            if not (too_many or too_old):
                break
            del self.pending[oldest_id]
            intake.rejections.append(Rejection("unpaired", oldest.kind))
