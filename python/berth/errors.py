"""Berth's exception types.

Every error Berth raises on purpose is a :class:`BerthError`. Each type carries
``http_status``, the status a client sees when the error happens while serving
a request, and ``exit_code``, what the ``berth`` command exits with when the
error stops it. Messages say what went wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "BerthError",
    "ConfigError",
    "EngineNotFoundError",
    "InvalidInput",
    "InvalidOutput",
    "MissingExtraError",
    "ModelLoadError",
    "ProtocolError",
    "ServerRequestError",
]


class BerthError(Exception):
    """Base class of every error Berth raises on purpose."""

    http_status: int = 500
    exit_code: int = 1


class ConfigError(BerthError):
    """The configuration (files, flags, environment, a model entry) is wrong."""

    exit_code = 2


class ModelLoadError(BerthError):
    """A model could not be loaded (missing file, corrupt file, failing ``load()``)."""


class MissingExtraError(ModelLoadError):
    """A framework a model needs is not installed.

    >>> str(MissingExtraError("XGBoost", "xgboost"))
    "serving XGBoost models needs the xgboost extra: pip install 'berth[xgboost]'"
    """

    def __init__(self, framework: str, extra: str, detail: str | None = None) -> None:
        self.framework = framework
        self.extra = extra
        self.detail = detail
        message = (
            f"serving {framework} models needs the {extra} extra: pip install 'berth[{extra}]'"
        )
        if detail:
            message += f" ({detail})"
        super().__init__(message)

    def __reduce__(self) -> tuple[type[MissingExtraError], tuple[str, str, str | None]]:
        return (type(self), (self.framework, self.extra, self.detail))


class InvalidInput(BerthError):
    """Raised by a model when a request's content is wrong.

    The client gets HTTP 400 with the message, so write it for the caller:
    ``raise berth.InvalidInput("text must not be empty")``.
    """

    http_status = 400


class InvalidOutput(BerthError):
    """A model returned something Berth cannot send (not a NumPy array, an
    unsupported dtype, a bad name)."""


class ProtocolError(BerthError):
    """A worker-protocol frame or tensor-set payload is malformed."""


class ServerRequestError(BerthError):
    """A command's request to a running server failed: the server could not
    be reached, or it answered with an error (the message carries it)."""


class EngineNotFoundError(BerthError):
    """The engine binary ``berthd`` could not be found."""
