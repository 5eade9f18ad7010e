"""Access control: bearer tokens with two scopes, and the server's TLS credentials.

Tokens come from a file (lines "<scope> <token>") and/or PARADIGM_AUTH_TOKENS
("scope:token,scope:token"). A `predict` token may run models and read; an `admin` token may
also change things. With no tokens configured the app installs no interceptor at all, so the
inference hot path pays nothing when authentication is off.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import grpc
import grpc.aio

log = logging.getLogger(__name__)

Scope: TypeAlias = Literal["predict", "admin"]
SCOPES: Final[tuple[Scope, ...]] = ("predict", "admin")
_GRANTS: Final[Mapping[Scope, frozenset[Scope]]] = {
    "predict": frozenset({"predict"}),
    "admin": frozenset({"predict", "admin"}),
}

_INFERENCE = "/inference.GRPCInferenceService/"
_DATASETS = "/paradigm.v1.DatasetService/"
_TRAINING = "/paradigm.v1.TrainingService/"
_MODELS = "/paradigm.v1.ModelService/"
_CASCADES = "/paradigm.v1.CascadeService/"
_SHADOWS = "/paradigm.v1.ShadowService/"

#: The scope each RPC needs; None means no token at all. A method missing here needs admin:
#: a new RPC stays closed until someone decides who may call it (tests check the table
#: covers every registered method).
METHOD_SCOPES: Final[Mapping[str, Scope | None]] = {
    # Orchestrators and load balancers probe health without credentials.
    "/grpc.health.v1.Health/Check": None,
    "/grpc.health.v1.Health/Watch": None,
    # Inference and model metadata: the whole Open Inference Protocol service.
    _INFERENCE + "ServerLive": "predict",
    _INFERENCE + "ServerReady": "predict",
    _INFERENCE + "ServerMetadata": "predict",
    _INFERENCE + "ModelReady": "predict",
    _INFERENCE + "ModelMetadata": "predict",
    _INFERENCE + "ModelConfig": "predict",
    _INFERENCE + "ModelInfer": "predict",
    # Read-only paradigm.v1 calls.
    _DATASETS + "ListDatasets": "predict",
    _DATASETS + "GetDataset": "predict",
    "/paradigm.v1.AlgorithmService/ListAlgorithms": "predict",
    _TRAINING + "GetJob": "predict",
    _TRAINING + "ListJobs": "predict",
    _TRAINING + "WatchJob": "predict",
    _MODELS + "ListModels": "predict",
    _MODELS + "GetModel": "predict",
    _MODELS + "ListAliases": "predict",
    # Read-only analysis: it spends a worker's CPU, but bounded (one at a time, a short
    # queue, capped repeats and rows) and changes nothing.
    _MODELS + "Explain": "predict",
    "/paradigm.v1.CostService/GetCostReport": "predict",
    _CASCADES + "GetCascade": "predict",
    _SHADOWS + "ListShadows": "predict",
    _SHADOWS + "GetShadowReport": "predict",
    # The true labels of requests a predict client made: it is the one that learns them.
    _SHADOWS + "SubmitFeedback": "predict",
    _CASCADES + "ListCascades": "predict",
    # Both reflection versions: grpcurl asks v1 first and falls back to v1alpha only on
    # UNIMPLEMENTED, which a predict token would not get if v1 defaulted to admin.
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "predict",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "predict",
    # Calls that change state, spend compute, or hand out a model's weights.
    _DATASETS + "UploadDataset": "admin",
    _DATASETS + "GenerateDataset": "admin",
    _DATASETS + "DeleteDataset": "admin",
    _TRAINING + "StartTraining": "admin",
    _TRAINING + "CancelJob": "admin",
    _MODELS + "ImportModel": "admin",
    _MODELS + "ExportModel": "admin",
    _MODELS + "DeleteModel": "admin",
    # Moves what every "champion" request is answered by (and may run a serving probe).
    _MODELS + "SetAlias": "admin",
    _MODELS + "DeleteAlias": "admin",
    # Calibrating runs both models over thousands of rows and changes what a name serves.
    _CASCADES + "CreateCascade": "admin",
    _CASCADES + "RecalibrateCascade": "admin",
    _CASCADES + "DeleteCascade": "admin",
    # Sends a share of an alias's traffic through another model too.
    _SHADOWS + "SetShadow": "admin",
    _SHADOWS + "ClearShadow": "admin",
}

MISSING_TOKEN: Final = (
    "this server requires a bearer token: send the metadata 'authorization: Bearer <token>' "
    "(paradigm --token, or PARADIGM_TOKEN in the environment)"
)
MALFORMED_TOKEN: Final = (
    "malformed authorization metadata: expected exactly one 'authorization: Bearer <token>'"
)
UNKNOWN_TOKEN: Final = (
    "the bearer token is not one this server accepts: check it against the server's "
    "configured tokens (PARADIGM_AUTH_TOKENS_FILE, PARADIGM_AUTH_TOKENS)"
)

# gRPC metadata values are printable ASCII; a space would split the "Bearer <token>" header.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


def required_scope(method: str) -> Scope | None:
    """The scope a full method name ("/pkg.Service/Method") needs; unknown ones need admin."""
    return METHOD_SCOPES.get(method, "admin")


def load_tokens(path: Path | None, inline: str = "") -> dict[str, Scope]:
    """Token → scope from the file and the "scope:token,…" string; empty means auth is off.

    Raises ValueError naming the file line or list entry at fault, never the token itself:
    start-up messages end up in logs.
    """
    found: list[tuple[str, Scope, str]] = []  # token, scope, where it was given
    if path is not None:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ValueError(f"cannot read the auth tokens file {path}: {reason}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path} line {number}"
            words = line.split()
            if len(words) != 2:
                raise ValueError(f"{where}: expected '<scope> <token>' (scope predict or admin)")
            found.append((_check_token(words[1], where), _check_scope(words[0], where), where))
        if not found:
            # An empty file would silently switch authentication off: refuse instead.
            raise ValueError(f"the auth tokens file {path} holds no tokens")
    if inline.strip():
        entries = [e.strip() for e in inline.split(",")]
        if not any(entries):
            raise ValueError("PARADIGM_AUTH_TOKENS holds no tokens")
        for number, entry in enumerate(entries, start=1):
            if not entry:
                continue
            where = f"PARADIGM_AUTH_TOKENS entry {number}"
            scope, sep, token = entry.partition(":")
            if not sep:
                raise ValueError(f"{where}: expected 'scope:token' (scope predict or admin)")
            found.append((_check_token(token.strip(), where), _check_scope(scope, where), where))

    tokens: dict[str, Scope] = {}
    given_at: dict[str, str] = {}
    for token, scope, where in found:
        if tokens.get(token, scope) != scope:
            raise ValueError(
                f"{where}: the same token is also given at {given_at[token]} with another "
                "scope; give each token one scope"
            )
        tokens[token] = scope
        given_at.setdefault(token, where)
    return tokens


def _check_scope(scope: str, where: str) -> Scope:
    for known in SCOPES:
        if scope.strip() == known:
            return known
    # Not echoed: a line written "<token> <scope>" would put the token here.
    raise ValueError(f"{where}: unknown scope; the scope comes first and is predict or admin")


def _check_token(token: str, where: str) -> str:
    if not _TOKEN_CHARS.fullmatch(token):
        raise ValueError(f"{where}: a token must be printable ASCII without spaces")
    return token


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


class Tokens:
    """The configured tokens, checked the same way for gRPC metadata and HTTP headers."""

    def __init__(self, tokens: Mapping[str, Scope]) -> None:
        if not tokens:
            raise ValueError("Tokens needs tokens; with none, authentication is off")
        # Digests are all 32 bytes, so compare_digest's time says nothing about token lengths.
        self._tokens = tuple((_digest(token), scope) for token, scope in tokens.items())

    def authenticate(self, values: list[Any]) -> tuple[Scope | None, str]:
        """The scope of the one "Bearer <token>" among values (every authorization
        header or metadata value sent), or None and what the caller must fix."""
        if not values:
            return None, MISSING_TOKEN
        if len(values) > 1 or not isinstance(values[0], str):
            return None, MALFORMED_TOKEN
        scheme, _, token = values[0].strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not _TOKEN_CHARS.fullmatch(token):
            return None, MALFORMED_TOKEN
        digest = _digest(token)
        found: Scope | None = None
        # Every configured token is compared, matched or not: the time taken does not say
        # which one matched or how many there are before it.
        for known, scope in self._tokens:
            if hmac.compare_digest(digest, known):
                found = scope
        return found, "" if found else UNKNOWN_TOKEN


def refusal(scope: Scope, required: Scope, what: str) -> str | None:
    """Why a token of scope may not call what (which needs required); None if it may."""
    if required in _GRANTS[scope]:
        return None
    log.info("%s refused: a %s token lacks the %s scope", what, scope, required)
    return (
        f"{what} needs a token with the {required!r} scope; the token sent has only "
        f"{scope!r}: call it with an admin token"
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token of every call against the scope its method needs."""

    def __init__(self, tokens: Mapping[str, Scope]) -> None:
        if not tokens:
            raise ValueError("AuthInterceptor needs tokens; with none, do not install it")
        self._tokens = Tokens(tokens)
        # A method's handler never changes; only registered ones are kept, so callers
        # inventing method names cannot grow this.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        required = required_scope(method)
        handler = self._handlers.get(method)
        if handler is None:
            handler = await continuation(handler_call_details)
            if handler is not None:
                self._handlers[method] = handler
        if required is None:
            return handler
        scope, problem = self._tokens.authenticate(
            _authorization(handler_call_details.invocation_metadata)
        )
        if scope is None:
            log.info("%s refused: %s", method, problem.split(":")[0])
            return _deny(handler, grpc.StatusCode.UNAUTHENTICATED, problem)
        if handler is None:
            return handler  # an authenticated caller may learn the method does not exist
        refused = refusal(scope, required, method.lstrip("/"))
        if refused is not None:
            return _deny(handler, grpc.StatusCode.PERMISSION_DENIED, refused)
        return handler


def _authorization(metadata: Iterable[tuple[str, Any]] | None) -> list[Any]:
    return [value for key, value in metadata or () if key == "authorization"]


def _deny(
    handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as the method's that fails the call without running it."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    if handler is None:  # unregistered method: the request's bytes are never decoded
        return grpc.unary_unary_rpc_method_handler(refuse)
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


def server_credentials(
    cert_file: Path | None, key_file: Path | None, client_ca_file: Path | None
) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM files, None for plaintext; a client CA means mutual TLS."""
    if cert_file is None and key_file is None and client_ca_file is None:
        return None
    if cert_file is None or key_file is None:
        if cert_file is None and key_file is None:
            raise ValueError(
                "tls_client_ca_file (mutual TLS) needs the server's own certificate too: "
                "set tls_cert_file and tls_key_file (PARADIGM_TLS_CERT_FILE, "
                "PARADIGM_TLS_KEY_FILE)"
            )
        raise ValueError(
            "tls_cert_file and tls_key_file go together: set both "
            "(PARADIGM_TLS_CERT_FILE, PARADIGM_TLS_KEY_FILE) or neither"
        )
    certificate = _read_pem(cert_file, "TLS certificate")
    key = _read_pem(key_file, "TLS private key")
    client_ca = None if client_ca_file is None else _read_pem(client_ca_file, "TLS client CA")
    log.info("TLS on%s", " with client certificates required" if client_ca else "")
    return grpc.ssl_server_credentials(
        [(key, certificate)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the {what} {path}: {error.strerror}") from None
    # gRPC accepts anything here and fails later, at every handshake: check now.
    if b"-----BEGIN " not in data:
        raise ValueError(f"the {what} {path} is not PEM (no '-----BEGIN' line)")
    return data
