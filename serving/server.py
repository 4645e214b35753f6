"""Start KServe model servers on the loopback interface (local runs)."""

from __future__ import annotations

from typing import Any


def bind_loopback() -> None:
    """KServe 0.20's REST server binds 0.0.0.0; a laptop must not expose patient scoring to the
    network, so local servers bind 127.0.0.1 (on a cluster the pod network decides)."""
    from kserve.protocol.rest import server as rest

    if getattr(rest.RESTServer, "_hmlops_loopback", False):
        return
    original = rest.RESTServer.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.config.host = "127.0.0.1"

    rest.RESTServer.__init__ = init
    rest.RESTServer._hmlops_loopback = True


class ModelNotReady(RuntimeError):
    """The model could not be loaded and verified; the server never reports ready."""


def serve_predictor(registered_model: str, ref: str, port: int) -> None:
    from kserve import ModelServer

    from serving.predictor import ReadmissionPredictor

    bind_loopback()
    predictor = ReadmissionPredictor("readmission", registered_model, ref)
    if not predictor.load():
        # As on a cluster, where the pod never passes its readiness probe: no server starts.
        raise ModelNotReady(f"{registered_model}@{ref}: {predictor.not_ready_reason}")
    ModelServer(http_port=port, enable_grpc=False, workers=1).start([predictor])
