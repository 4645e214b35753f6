"""The CDS Hooks 2.0 service: the models' risks inside the EHR, as cards.

Each service of ``config/cds.yaml`` names its use case; the first use case's model (the
readmission risk) answers the services that name none. A use case's model is reached through
its own predictor (its served name), its inputs are read from FHIR by its feature set's reader
(``ehr/fhir_readers.py``) and its cards use its own wording.

``GET  /cds-services``                discovery: the services, their hooks and prefetch templates
``POST /cds-services/{id}``           a hook call → ``{"cards": [...]}``
``POST /cds-services/{id}/feedback``  the spec's feedback on any card issued → recorded by its uuid
``GET  /model-cards/{model}/{version}`` the version's model card as FHIR (AI Transparency on FHIR)
``POST /v1/feedback`` …               the feedback API (serving/feedback_api.py), mounted here too

A call's FHIR data comes from its prefetch (declared templates, or one ``bundle`` key holding a
whole patient Bundle); what is missing is fetched from ``fhirServer`` with the supplied
``fhirAuthorization`` token, and when neither is possible the answer is 412, as the spec says.
The token and the FHIR data are never logged. The EHR's encounter id reaches the predictor only
as its HMAC token. When the predictor cannot answer, ``config/fallback.yaml`` decides the card.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from hospital_mlops.data.normalize import HmacKeyring, token_function
from hospital_mlops.ehr.cds_auth import (
    AuthRejected,
    ReplayCache,
    TrustedClient,
    bearer_token,
    verify_call_token,
)
from hospital_mlops.ehr.cds_calibration import registry_calibration
from hospital_mlops.ehr.cds_card import (
    CalibrationTable,
    fallback_card,
    not_scored_card,
    risk_card,
)
from hospital_mlops.ehr.cds_config import CdsConfig, Service
from hospital_mlops.ehr.cds_explanation import explanation_page
from hospital_mlops.ehr.cds_feedback import record_cds_feedback
from hospital_mlops.ehr.cds_request import (
    ID_PATTERN,
    CdsRequestError,
    check_call,
    discovery,
    problem_body,
)
from hospital_mlops.ehr.fhir_client import fetch_missing
from hospital_mlops.ehr.fhir_mapping import FhirMapping
from hospital_mlops.ehr.fhir_readers import Reader, reader_for
from hospital_mlops.ehr.fhir_record import FhirInputError, gather
from hospital_mlops.ehr.issued_cards import CardKind, remember_card
from hospital_mlops.governance.fhir_model_card import RegisteredCard
from hospital_mlops.inference.fallback import FallbackPolicy
from hospital_mlops.inference.prediction_log import PredictionLog, PredictionNotFound
from hospital_mlops.model.scoring import ENCOUNTER_TOKEN
from hospital_mlops.security.api_access import PUBLIC_PATHS, access_log_from_env, tokens_from_env
from hospital_mlops.security.key_rotation import earlier_tokens
from serving.access import AccessControl
from serving.fallback_scoring import CacheLookup, cache_from_log, score_or_fallback
from serving.feedback_api import BodyTooLarge, capped_body, feedback_router
from serving.predictor_client import (
    PredictorClient,
    PredictorFailed,
    PredictorRefused,
    PredictorUnavailable,
)

log = logging.getLogger("hospital_mlops.serving.cds")

MAX_BODY_BYTES = 5_000_000  # a whole patient Bundle fits; a runaway export does not
TOKEN = re.compile(r"\{\{context\.(\w+)\}\}")


@dataclass(frozen=True)
class ModelBinding:
    """One use case's model behind its services: its predictor, its registry name, how its
    inputs are read from FHIR, and what is shown when it cannot answer."""

    predictor: PredictorClient
    model: str
    read_inputs: Reader
    fallback: FallbackPolicy


@dataclass
class CdsService:
    config: CdsConfig
    mapping: FhirMapping
    fallback: FallbackPolicy
    predictor: PredictorClient
    prediction_log: PredictionLog
    keyring: HmacKeyring
    # the first use case's registered model (None: config/use_case.yaml's first)
    model: str | None = None
    calibration: dict[str, CalibrationTable | None] = field(default_factory=dict)
    # None only when started with --insecure-no-auth (a local trial): no call is authenticated
    clients: Mapping[str, TrustedClient] | None = None
    replay: ReplayCache = field(default_factory=ReplayCache)
    # the models of further use cases, by use case id (services naming one)
    bindings: dict[str, ModelBinding] = field(default_factory=dict)
    # registered model cards read for /model-cards/, by (model, version): a version's card
    # files never change once registered (their hashes are checked when read)
    model_cards: dict[tuple[str, int], RegisteredCard] = field(default_factory=dict)

    def authenticate(self, authorization: str | None, audiences: tuple[str, ...]) -> str:
        """CDS Hooks' client JWT: 401 unless it verifies for one of ``audiences``. Returns
        the caller for the access audit (the JWT's issuer)."""
        if self.clients is None:
            return "unauthenticated (--insecure-no-auth)"
        try:
            token = bearer_token(authorization)
            problem: AuthRejected | None = None
            for audience in audiences:
                try:
                    claims = verify_call_token(token, self.clients, audience, self.replay)
                    return str(claims["iss"])
                except AuthRejected as exc:
                    problem = exc
                    if "not addressed" not in str(exc):
                        break
            assert problem is not None
            raise problem
        except AuthRejected as exc:
            raise CdsRequestError(401, [("authorization", str(exc))]) from None

    def __post_init__(self) -> None:
        self._token = token_function(self.keyring.current, ENCOUNTER_TOKEN)
        from hospital_mlops.features import primary_feature_set
        from hospital_mlops.governance.config import first_model_name
        from hospital_mlops.use_case import load_use_case

        if self.model is None:
            self.model = first_model_name()
        reader = reader_for(primary_feature_set(load_use_case()).name)
        self._default = ModelBinding(self.predictor, self.model, reader, self.fallback)
        self._cached = {
            b.model: cache_from_log(self.prediction_log, b.model)
            for b in (self._default, *self.bindings.values())
        }

    def binding(self, service: Service) -> ModelBinding:
        if service.use_case is None:
            return self._default
        if service.use_case not in self.bindings:
            raise CdsRequestError(503, [("service", f"{service.id} has no model bound")])
        return self.bindings[service.use_case]

    def offered(self, service: Service) -> bool:
        """A service is offered when its use case's model is bound here."""
        return service.use_case is None or service.use_case in self.bindings

    def binding_of_model(self, model: str) -> ModelBinding:
        found = [b for b in self.bindings.values() if b.model == model]
        return found[0] if found else self._default

    def encounter_token(self, encounter_id: str) -> str:
        return str(self._token(np.array([encounter_id], dtype=object))[0])

    def cached_lookup(self, encounter_id: str, model: str | None = None) -> CacheLookup:
        """The encounter's last score by ``model`` (default: the first use case's). During a
        key rotation, before the prediction log is rekeyed, its earlier scores sit under the
        previous keys' tokens: those are read too."""
        model = model or self._default.model
        if not self.keyring.previous:
            return self._cached[model]
        earlier = earlier_tokens(self.keyring.previous, ENCOUNTER_TOKEN, encounter_id)
        return cache_from_log(self.prediction_log, model, also=earlier)

    def calibration_of(self, model_version: str) -> CalibrationTable | None:
        """The validation period's observed rates for ``name/version`` (from the registry's
        evidence), cached; None when the registry cannot say (the card then says so)."""
        if model_version not in self.calibration:
            self.calibration[model_version] = registry_calibration(model_version)
        return self.calibration[model_version]

    async def call(
        self, service: Service, body: Any, now: datetime | None = None, service_base: str = ""
    ) -> dict:
        now = now or datetime.now(UTC)
        request = check_call(body, service)
        bound = self.binding(service)
        cards = self.config.card_settings(service)
        prefetch = await fetch_missing(request, service, self.config.timeouts.fhir_seconds)
        try:
            record = gather(prefetch, request["context"])
            inputs = bound.read_inputs(record, self.mapping, now)
        except FhirInputError as exc:
            raise CdsRequestError(400, exc.problems) from None
        if not inputs.scorable:
            card = not_scored_card(inputs.why_not_scored(), inputs, cards)
            # recorded off the event loop: a slow store must not stall the other calls
            issued = await asyncio.to_thread(self._issued, card, "not_scored", service, bound, now)
            return {"cards": [issued]}
        instance = {**inputs.instance, ENCOUNTER_TOKEN: self.encounter_token(record.encounter.id)}
        try:
            (answer,) = await score_or_fallback(
                bound.predictor,
                [instance],
                bound.fallback,
                cached=self.cached_lookup(record.encounter.id, bound.model),
                request_id=str(request["hookInstance"])[:64],
                now=now,
            )
        except PredictorRefused as exc:
            # the mapping produced an input the model refuses: say which, never guess
            card = not_scored_card(_refusal_reasons(exc), inputs, cards)
            # recorded off the event loop: a slow store must not stall the other calls
            issued = await asyncio.to_thread(self._issued, card, "not_scored", service, bound, now)
            return {"cards": [issued]}
        if answer.get("fallback"):
            card = fallback_card(answer, cards)
            shown = answer.get("prediction_id")
            issued = await asyncio.to_thread(
                self._issued, card, "fallback", service, bound, now, shown
            )
            return {"cards": [issued]}
        table = self.calibration_of(str(answer.get("model_version", "")))
        return {"cards": [risk_card(answer, inputs, cards, table, now, service_base)]}

    def _issued(
        self,
        card: dict[str, Any],
        kind: CardKind,
        service: Service,
        bound: ModelBinding,
        now: datetime,
        shown: Any = None,
    ) -> dict[str, Any]:
        """The card, its uuid remembered so feedback on it is accepted. A store that cannot
        take it does not hold the card back from the clinician: feedback on it will be refused
        as never issued, and the log says why (nothing of the patient)."""
        try:
            remember_card(
                self.prediction_log,
                card["uuid"],
                kind,
                service_id=service.id,
                model_name=bound.model,
                issued_at=now,
                shown_prediction_id=shown if isinstance(shown, str) else None,
            )
        except sa.exc.SQLAlchemyError as exc:
            log.warning("%s card not remembered for feedback: %s", kind, type(exc).__name__)
        return card

    async def explanation(self, prediction_id: str) -> str | None:
        """The explanation page of a logged prediction (None: no such prediction), with every
        contribution when the version that answered still serves."""
        if not ID_PATTERN.fullmatch(prediction_id):
            return None
        try:
            record = self.prediction_log.get(prediction_id)
        except PredictionNotFound:
            return None
        rescored = None
        try:
            # marked as a probe: a re-score for an explanation is not a new prediction
            model = str(record["answer"].get("model_version", "")).split("/")[0]
            predictor = self.binding_of_model(model).predictor
            (again,) = await predictor.predict([record["inputs"]], caller="probe", full=True)
            if again.get("model_version") == record["answer"].get("model_version"):
                rescored = again
        except (PredictorUnavailable, PredictorFailed, PredictorRefused):
            pass
        model = str(record["answer"].get("model_version", "")).split("/")[0]
        return explanation_page(record, rescored, self._risk_label(model))

    def _risk_label(self, model: str) -> str:
        """How the cards of ``model``'s service name its risk."""
        for service in self.config.services:
            if self.offered(service) and self.binding(service).model == model:
                return self.config.card_settings(service).text.risk_label
        return "Risk"

    def model_card(self, model: str, version: int) -> dict[str, Any]:
        """The version's card as a FHIR Bundle (HL7 AI Transparency on FHIR); 404 when there
        is no such version or card, 503 when the registry cannot answer."""
        from hospital_mlops.governance.fhir_model_card import (
            ModelCardUnavailable,
            current_status,
            fhir_problems,
            model_card_bundle,
            registered_card,
        )
        from hospital_mlops.governance.registry import RegistryError, RegistryUnavailable

        key = (model, version)
        try:
            if key not in self.model_cards:
                card = registered_card(model, version)
                problems = fhir_problems(model_card_bundle(card, datetime.now(UTC)))
                if problems:
                    raise ModelCardUnavailable(f"the Bundle is not valid FHIR: {problems[0]}")
                self.model_cards[key] = card
            # the files are kept; sign-offs and retirement are read again each time
            card = current_status(self.model_cards[key])
        except (RegistryError, ModelCardUnavailable) as exc:
            raise CdsRequestError(404, [("model_card", str(exc)[:300])]) from None
        except RegistryUnavailable as exc:
            raise CdsRequestError(503, [("registry", str(exc)[:300])]) from None
        return model_card_bundle(card, datetime.now(UTC))

    def feedback(self, service: Service, body: Any) -> dict[str, Any]:
        reasons = self.config.override_reasons
        system = self.config.override_reasons_system
        suggests = self.config.card_settings(service).text.suggestion is not None
        return record_cds_feedback(
            self.prediction_log, service, reasons, system, body, suggests=suggests
        )


def _refusal_reasons(exc: PredictorRefused) -> list[str]:
    try:
        errors = json.loads(json.loads(exc.body)["error"])["errors"]
        return [f"{e['field']}: {e['message']}" for e in errors][:5]
    except (ValueError, KeyError, TypeError):
        return [f"the model refused the inputs (HTTP {exc.status})"]


def create_app(service: CdsService) -> FastAPI:
    app = FastAPI(title="hospital-mlops CDS Hooks", docs_url=None, redoc_url=None)
    config = service.config
    if config.cors_allowed_origins:
        from fastapi.middleware.cors import CORSMiddleware

        # the spec: browser-based CDS clients need CORS; only the configured origins get it
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_allowed_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )

    async def body_of(request: Request) -> Any:
        try:
            raw = await capped_body(request, MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            raise CdsRequestError(413, [("body", str(exc))]) from None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CdsRequestError(400, [("body", "is not valid JSON")]) from None

    def lookup(service_id: str) -> Service:
        found = config.service(service_id)
        if found is None or not service.offered(found):
            raise CdsRequestError(404, [("id", f"no CDS service {service_id[:64]!r}")])
        return found

    @app.exception_handler(CdsRequestError)
    async def refused(_: Request, exc: CdsRequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(
            status_code=exc.status, content=problem_body(exc.problems), headers=headers
        )

    def endpoint(request: Request, service_id: str) -> str:
        base = config.public_base_url or str(request.base_url).rstrip("/")
        return f"{base}/cds-services/{service_id}"

    offered = config.model_copy(
        update={"services": tuple(s for s in config.services if service.offered(s))}
    )

    async def discover() -> dict[str, Any]:
        return discovery(offered)

    async def call(service_id: str, request: Request) -> JSONResponse:
        found = lookup(service_id)
        request.state.hmlops_client = service.authenticate(
            request.headers.get("authorization"), (endpoint(request, found.id),)
        )
        body = await body_of(request)
        base = str(request.base_url).rstrip("/")
        return JSONResponse(content=await service.call(found, body, service_base=base))

    async def explain(prediction_id: str) -> HTMLResponse:
        page = await service.explanation(prediction_id)
        if page is None:
            return HTMLResponse("<p>No such prediction.</p>", status_code=404)
        return HTMLResponse(page)

    async def feedback(service_id: str, request: Request) -> JSONResponse:
        found = lookup(service_id)
        # addressed to the service endpoint (the spec's aud) or to the feedback URL itself
        url = endpoint(request, found.id)
        request.state.hmlops_client = service.authenticate(
            request.headers.get("authorization"), (url, f"{url}/feedback")
        )
        body = await body_of(request)
        return JSONResponse(content=service.feedback(found, body))

    async def model_card(model: str, version: str) -> JSONResponse:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", model) or not re.fullmatch(
            r"[0-9]{1,9}", version
        ):
            raise CdsRequestError(404, [("model_card", "no such model version")])
        bundle = await asyncio.to_thread(service.model_card, model, int(version))
        return JSONResponse(content=bundle, media_type="application/fhir+json")

    async def live() -> dict[str, str]:
        return {"status": "alive"}

    async def ready() -> JSONResponse:
        # ready when the feedback store answers; the predictor's outages are the fallback's job
        try:
            with service.prediction_log.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            return JSONResponse(status_code=503, content={"status": type(exc).__name__})
        return JSONResponse(content={"status": "ready"})

    app.add_api_route("/v2/health/live", live, methods=["GET"])
    app.add_api_route("/v2/health/ready", ready, methods=["GET"], response_model=None)
    app.add_api_route("/cds-services", discover, methods=["GET"])
    app.add_api_route(
        "/explanations/{prediction_id}", explain, methods=["GET"], response_model=None
    )
    app.add_api_route(
        "/model-cards/{model}/{version}", model_card, methods=["GET"], response_model=None
    )
    app.add_api_route("/cds-services/{service_id}", call, methods=["POST"], response_model=None)
    app.add_api_route(
        "/cds-services/{service_id}/feedback", feedback, methods=["POST"], response_model=None
    )
    reasons = tuple(config.override_reasons.values())
    app.include_router(feedback_router(service.prediction_log, reasons, source="api"))
    # The hook calls carry the EHR's JWT (above); the mounted feedback API (/v1/) takes the
    # same bearer tokens as the other local servers. Every access is audited.
    app.add_middleware(
        AccessControl,
        service="cds",
        tokens=tokens_from_env(),
        log=access_log_from_env(),
        public=PUBLIC_PATHS | {"/cds-services"},
        protected_prefixes=("/v1/",),
    )
    return app


def trusted_clients_from_env() -> dict[str, TrustedClient]:
    """The clients whose JWTs are accepted, from the file ``HMLOPS_CDS_TRUSTED_CLIENTS`` names;
    refuses to start without one (ValueError)."""
    import os
    from pathlib import Path

    from hospital_mlops.ehr.cds_auth import TRUSTED_CLIENTS_ENV, load_trusted_clients

    path = os.environ.get(TRUSTED_CLIENTS_ENV)
    if not path:
        raise ValueError(
            f"no trusted CDS clients: set {TRUSTED_CLIENTS_ENV} to a JSON file of "
            '[{"iss": ..., "jwks": {"keys": [...]}}] (docs/ehr-integration.md), or pass '
            "--insecure-no-auth for a local trial"
        )
    try:
        return load_trusted_clients(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {TRUSTED_CLIENTS_ENV}={path}: {exc.strerror}") from None
    except AuthRejected as exc:
        raise ValueError(f"{TRUSTED_CLIENTS_ENV}={path}: {exc}") from None


def _host(url: str, what: str) -> str:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme != "http" or not parsed.netloc:
        raise ValueError(f"{what} must be http://HOST:PORT, not {url!r}")
    return parsed.netloc


def bind_use_case(use_case_id: str, predictor_url: str, timeout: float) -> ModelBinding:
    """A further use case's model: its registry name and served name from config/use_case.yaml,
    its FHIR reader by its feature set, and its own document of config/fallback.yaml."""
    from hospital_mlops.ehr.fhir_readers import reader_for
    from hospital_mlops.features import primary_feature_set
    from hospital_mlops.inference.fallback import load_fallback_policy
    from hospital_mlops.use_case import load_use_case

    use_case = load_use_case(use_case=use_case_id)
    if use_case.model_name is None:
        raise ValueError(f"use case {use_case_id!r} names no registered model (model_name)")
    fs = primary_feature_set(use_case)
    host = _host(predictor_url, f"the predictor of {use_case_id}")
    return ModelBinding(
        PredictorClient(host, use_case.served_as, timeout),
        use_case.model_name,
        reader_for(fs.name),
        load_fallback_policy(use_case=use_case.id),
    )


def build_service(
    predictor_url: str,
    model: str | None = None,
    *,
    insecure_no_auth: bool = False,
    use_case_predictors: Mapping[str, str] | None = None,
) -> CdsService:
    """The service over the shipped configuration, the first use case's predictor at
    ``predictor_url`` and each further use case's at ``use_case_predictors[id]``, the
    prediction log (``HMLOPS_PREDICTION_LOG_URL`` or the state directory's SQLite) and the
    trusted clients (unless ``insecure_no_auth``). A service whose use case has no predictor
    here is not offered (discovery does not list it)."""
    from hospital_mlops.data.normalize import load_hmac_keyring
    from hospital_mlops.ehr.cds_config import load_cds_config
    from hospital_mlops.ehr.fhir_mapping import load_fhir_mapping
    from hospital_mlops.inference.fallback import load_fallback_policy
    from hospital_mlops.use_case import load_use_case

    host = _host(predictor_url, "--predictor-url")
    first = load_use_case()
    config = load_cds_config()
    fallback = load_fallback_policy()
    urls = dict(use_case_predictors or {})
    named = {s.use_case for s in config.services if s.use_case is not None}
    unknown = sorted(set(urls) - named)
    if unknown:
        raise ValueError(
            f"no CDS service answers use case(s) {unknown}; config/cds.yaml has {sorted(named)}"
        )
    bindings = {
        case: bind_use_case(case, url, config.timeouts.predictor_seconds)
        for case, url in urls.items()
    }
    unbound = [s.id for s in config.services if s.use_case is not None and s.use_case not in urls]
    if unbound:
        log.warning("CDS services not offered (no predictor for their use case): %s", unbound)
        config = config.model_copy(
            update={"services": tuple(s for s in config.services if s.id not in unbound)}
        )
    clients = None if insecure_no_auth else trusted_clients_from_env()
    if clients is None:
        log.warning(
            "CDS Hooks calls are NOT authenticated (--insecure-no-auth): a local trial only"
        )
    return CdsService(
        config=config,
        mapping=load_fhir_mapping(),
        fallback=fallback,
        predictor=PredictorClient(host, first.served_as, config.timeouts.predictor_seconds),
        prediction_log=PredictionLog(),
        keyring=load_hmac_keyring(),
        model=model,
        clients=clients,
        bindings=bindings,
    )


def serve_cds(
    port: int,
    predictor_url: str,
    bind: str = "127.0.0.1",
    *,
    insecure_no_auth: bool = False,
    use_case_predictors: Mapping[str, str] | None = None,
) -> None:
    """Run the service (blocking) on ``bind:port``."""
    import uvicorn

    service = build_service(
        predictor_url, insecure_no_auth=insecure_no_auth, use_case_predictors=use_case_predictors
    )
    app = create_app(service)
    uvicorn.run(app, host=bind, port=port, log_level="info")
