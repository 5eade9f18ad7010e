"""A typed Python client for Paradigm: numpy in, numpy out, protobuf messages for the rest.

One grpc.Channel carries all five services. Every grpc.RpcError leaves this module as a
ParadigmClientError with the status code and the server's details, so callers handle one
exception type. Unary calls get the client's deadline; streams (uploads, exports, job
watches) run as long as the work they follow. A bearer token (argument, else PARADIGM_TOKEN)
rides on every call, streams included, through one channel interceptor.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple, TypeAlias, TypeVar, cast

import grpc
import numpy as np

from clients import dtypes
from service.gen.inference import grpc_predict_v2_pb2 as oip
from service.gen.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as pb_grpc
from service.gen.paradigm.v1 import search_pb2 as search_pb
from service.gen.paradigm.v1 import search_pb2_grpc as search_grpc

__all__ = [
    "InferResult",
    "JobFailed",
    "ParadigmClient",
    "ParadigmClientError",
    "from_param_value",
    "make_infer_request",
    "to_param_value",
]

ParamScalar: TypeAlias = int | float | str | bool
#: An enum given by its short name ("classification", "deep", "cuda") or its number.
EnumArg: TypeAlias = str | int | None

_E = TypeVar("_E", bound=int)

MiB: Final = 1024 * 1024
TERMINAL_STATES: Final = frozenset(
    {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
)


class ParadigmClientError(Exception):
    """A failed call: the gRPC status code and the server's explanation."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ParadigmClientError:
        # Errors raised by a call are also grpc.Call objects; anything else has no status.
        if isinstance(error, grpc.Call):
            return cls(error.code(), error.details() or "")
        return cls(grpc.StatusCode.UNKNOWN, str(error))


class JobFailed(ParadigmClientError):
    """A job ended FAILED or CANCELLED; `.job` is its final description."""

    def __init__(self, job: pb.Job) -> None:
        cancelled = job.state == pb.JOB_STATE_CANCELLED
        code = grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.ABORTED
        what = "cancelled" if cancelled else "failed"
        reason = f": {job.error}" if job.error else ""
        super().__init__(code, f"job {job.id} {what}{reason}")
        self.job = job


@contextlib.contextmanager
def _rpc_errors() -> Iterator[None]:
    """Turns grpc.RpcError into ParadigmClientError; usable as decorator and with-block."""
    try:
        yield
    except grpc.RpcError as error:
        raise ParadigmClientError.from_rpc_error(error) from None


def to_param_value(value: ParamScalar | np.generic) -> pb.ParamValue:
    """Maps a Python (or numpy) scalar to the ParamValue oneof of the matching kind."""
    if isinstance(value, np.generic):
        value = value.item()
    # bool first: it is a subclass of int.
    if isinstance(value, bool):
        return pb.ParamValue(bool_value=value)
    if isinstance(value, int):
        return pb.ParamValue(int_value=value)
    if isinstance(value, float):
        return pb.ParamValue(float_value=value)
    if isinstance(value, str):
        return pb.ParamValue(string_value=value)
    raise TypeError(f"hyperparameter values must be int, float, str or bool, not {value!r}")


def from_param_value(value: pb.ParamValue) -> ParamScalar | None:
    """The Python value a ParamValue holds; None when no kind is set."""
    kind = value.WhichOneof("kind")
    return None if kind is None else getattr(value, kind)


def enum_value(enum: type[_E], prefix: str, value: EnumArg) -> _E:
    """Resolves "cuda" against DEVICE_CUDA and the like; None means the zero value."""
    wrapper: Any = enum  # a protobuf EnumTypeWrapper at run time, a class to the type checker
    if value is None or isinstance(value, int):
        return cast(_E, value or 0)
    try:
        return cast(_E, wrapper.Value(prefix + value.strip().upper().replace("-", "_")))
    except ValueError:
        choices = [n.removeprefix(prefix).lower() for n in wrapper.keys()[1:]]
        what = prefix.removesuffix("_").lower().replace("_", " ")
        raise ValueError(f"unknown {what} {value!r}; one of {choices}") from None


def enum_name(enum: Any, prefix: str, number: int) -> str:
    """The short lower-case name of an enum number ("" for the zero value)."""
    if number == 0:
        return ""
    try:
        return str(enum.Name(number)).removeprefix(prefix).lower()
    except ValueError:
        return str(number)


def _format_by_suffix(path: Path, enum: type[_E], prefix: str, given: EnumArg) -> _E:
    if given is not None:
        return enum_value(enum, prefix, given)
    try:
        return enum_value(enum, prefix, path.suffix.lstrip("."))
    except ValueError:
        raise ValueError(
            f"cannot tell the format of {path} from its suffix; pass format="
        ) from None


def _chunks(path: Path, chunk_size: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


class InferResult:
    """A decoded ModelInferResponse: every output as a numpy array."""

    def __init__(self, response: oip.ModelInferResponse) -> None:
        self.response = response
        self.outputs: dict[str, np.ndarray] = _decode_outputs(response)

    def as_numpy(self, name: str) -> np.ndarray:
        """One output by name; KeyError lists the ones there are."""
        try:
            return self.outputs[name]
        except KeyError:
            raise KeyError(f"no output {name!r}; outputs are {list(self.outputs)}") from None

    @property
    def model_name(self) -> str:
        return self.response.model_name

    @property
    def model_version(self) -> str:
        return self.response.model_version

    @property
    def id(self) -> str:
        return self.response.id

    @property
    def parameters(self) -> dict[str, Any]:
        """Response parameters as plain Python values."""
        return {
            key: getattr(p, p.WhichOneof("parameter_choice") or "string_param")
            for key, p in self.response.parameters.items()
        }

    @property
    def device(self) -> str:
        """Where the model ran ("cpu" or "cuda"), as the server reports it."""
        return str(self.parameters.get("device", ""))


def _decode_outputs(response: oip.ModelInferResponse) -> dict[str, np.ndarray]:
    raw = response.raw_output_contents
    if raw and len(raw) != len(response.outputs):
        raise ValueError(
            f"response has {len(response.outputs)} outputs but {len(raw)} raw contents"
        )
    decoded: dict[str, np.ndarray] = {}
    for i, out in enumerate(response.outputs):
        shape = tuple(out.shape)
        if raw:
            decoded[out.name] = dtypes.from_raw(raw[i], out.datatype, shape)
            continue
        # Typed contents are what a server sends to a typed request; decode them too.
        entry = dtypes.lookup(out.datatype)
        if entry.contents_field is None:
            raise ValueError(f"output {out.name!r}: {out.datatype} can only arrive raw")
        values = getattr(out.contents, entry.contents_field)
        if entry.name == "BYTES":
            decoded[out.name] = dtypes.texts(list(values), shape)
            continue
        decoded[out.name] = np.asarray(values, dtype=entry.dtype.newbyteorder("=")).reshape(shape)
    return decoded


def cascade_goal(
    target_accuracy: float | None = None,
    max_dollars_per_1k: float | None = None,
    accuracy_within_then: float | None = None,
) -> pb.CascadeGoal:
    """The one goal given; ValueError for none or several."""
    given = {
        key: value
        for key, value in (
            ("target_accuracy", target_accuracy),
            ("max_dollars_per_1k", max_dollars_per_1k),
            ("accuracy_within_then", accuracy_within_then),
        )
        if value is not None
    }
    if len(given) != 1:
        raise ValueError(
            "give exactly one of target_accuracy, max_dollars_per_1k, accuracy_within_then"
        )
    return pb.CascadeGoal(**given)


def make_infer_request(
    model: str,
    inputs: np.ndarray | Mapping[str, np.ndarray],
    *,
    version: str = "",
    outputs: Sequence[str] | None = None,
    request_id: str = "",
) -> oip.ModelInferRequest:
    """A ModelInferRequest carrying every input in raw_input_contents."""
    named = {"input": inputs} if isinstance(inputs, np.ndarray) else inputs
    request = oip.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, value in named.items():
        array = np.asarray(value)
        request.inputs.add(name=name, datatype=dtypes.datatype_of(array.dtype), shape=array.shape)
        request.raw_input_contents.append(dtypes.to_raw(array))
    for name in outputs or ():
        request.outputs.add(name=name)
    return request


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call of the channel it wraps."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        # grpc.ClientCallDetails is an interface without a constructor: build our own.
        given: Any = details
        return cast(
            grpc.ClientCallDetails,
            _CallDetails(
                given.method,
                given.timeout,
                [*(given.metadata or ()), self._header],
                given.credentials,
                given.wait_for_ready,
                given.compression,
            ),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


class ParadigmClient:
    """Client for a Paradigm server; use as a context manager or call close().

    token: sent as `authorization: Bearer <token>` on every call; None reads PARADIGM_TOKEN
    from the environment, "" sends none. TLS: give root_certificates (PEM of the CA that
    signed the server's certificate; None means the system's roots) and, for mutual TLS,
    private_key and certificate_chain; any of the three makes the channel a TLS one.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:8001",
        *,
        timeout: float | None = 60.0,
        max_message_bytes: int = 64 * MiB,
        token: str | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        own_connection: bool = False,
    ) -> None:
        """own_connection: open a TCP connection of this client's own instead of sharing
        one with every channel of this process to the same target (gRPC's default), so
        that the workers of a `--workers N` server each get their share of clients."""
        self.target = target
        self.timeout = timeout
        if token is None:
            token = os.environ.get("PARADIGM_TOKEN", "")
        token = token.strip()
        # gRPC metadata is printable ASCII; fail here, not with an obscure call error.
        if token and not (token.isascii() and token.isprintable() and " " not in token):
            raise ValueError("the token must be printable ASCII without spaces")
        if (private_key is None) != (certificate_chain is None):
            raise ValueError("a client certificate needs both private_key and certificate_chain")
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if own_connection:
            options.append(("grpc.use_local_subchannel_pool", 1))
        if root_certificates is None and private_key is None:
            channel = grpc.insecure_channel(target, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates, private_key, certificate_chain
            )
            channel = grpc.secure_channel(target, credentials, options=options)
        self._channel = grpc.intercept_channel(channel, _BearerToken(token)) if token else channel
        self._inference = oip_grpc.GRPCInferenceServiceStub(self._channel)
        self._datasets = pb_grpc.DatasetServiceStub(self._channel)
        self._algorithms = pb_grpc.AlgorithmServiceStub(self._channel)
        self._training = pb_grpc.TrainingServiceStub(self._channel)
        self._models = pb_grpc.ModelServiceStub(self._channel)
        self._cost = pb_grpc.CostServiceStub(self._channel)
        self._cascades = pb_grpc.CascadeServiceStub(self._channel)
        self._search = search_grpc.SearchServiceStub(self._channel)
        self._shadows = pb_grpc.ShadowServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ParadigmClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- server ---------------------------------------------------------------------------

    @_rpc_errors()
    def server_live(self) -> bool:
        return bool(self._inference.ServerLive(oip.ServerLiveRequest(), timeout=self.timeout).live)

    @_rpc_errors()
    def server_ready(self) -> bool:
        request = oip.ServerReadyRequest()
        return bool(self._inference.ServerReady(request, timeout=self.timeout).ready)

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        """Polls ServerReady until it says yes; DEADLINE_EXCEEDED if it never does."""
        deadline = time.monotonic() + timeout
        last = "server never answered"
        while True:
            remaining = deadline - time.monotonic()
            try:
                # wait_for_ready rides out the connection attempts of a server still binding.
                response = self._inference.ServerReady(
                    oip.ServerReadyRequest(),
                    timeout=max(0.05, min(remaining, 2.0)),
                    wait_for_ready=True,
                )
                if response.ready:
                    return
                last = "server is live but not ready"
            except grpc.RpcError as error:
                last = str(ParadigmClientError.from_rpc_error(error))
            if time.monotonic() >= deadline:
                raise ParadigmClientError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{self.target} not ready after {timeout:g} s ({last})",
                )
            time.sleep(0.1)

    @_rpc_errors()
    def server_metadata(self) -> oip.ServerMetadataResponse:
        return self._inference.ServerMetadata(oip.ServerMetadataRequest(), timeout=self.timeout)

    # -- datasets -------------------------------------------------------------------------

    @_rpc_errors()
    def list_datasets(self) -> list[pb.Dataset]:
        response = self._datasets.ListDatasets(pb.ListDatasetsRequest(), timeout=self.timeout)
        return list(response.datasets)

    @_rpc_errors()
    def get_dataset(self, name: str, *, contact_sheet: bool = False) -> pb.Dataset:
        """A dataset; `contact_sheet` also fetches an image dataset's contact sheet PNG
        (Dataset.contact_sheet: a grid of samples, one row per class)."""
        request = pb.GetDatasetRequest(name=name, contact_sheet=contact_sheet)
        return self._datasets.GetDataset(request, timeout=self.timeout)

    @_rpc_errors()
    def upload_dataset(
        self,
        name: str,
        path: str | Path,
        *,
        format: EnumArg = None,
        label_column: str = "",
        task: EnumArg = None,
        description: str = "",
        column_kinds: Mapping[str, str] | None = None,
        image_size: int = 0,
        grayscale: bool = False,
        chunk_size: int = MiB,
    ) -> pb.Dataset:
        """Streams a .npz (X, y), .csv or .parquet file, or an image archive (.zip, .tar,
        .tar.gz of class folders); the format comes from the suffix unless given.
        `column_kinds` overrides inferred kinds: {"zip": "categorical"}. Image archives:
        `image_size` is the side images are resized to (0: the server's 32), `grayscale`
        keeps one channel."""
        from clients.images import is_archive

        path = Path(path)
        if format is None and is_archive(path):
            format = "images"
        header = pb.UploadDatasetHeader(
            name=name,
            format=_format_by_suffix(path, pb.DatasetFormat, "DATASET_FORMAT_", format),
            image_size=image_size,
            grayscale=grayscale,
            label_column=label_column,
            task=enum_value(pb.Task, "TASK_", task),
            description=description,
            column_kinds={
                column: enum_value(pb.ColumnKind, "COLUMN_KIND_", kind)
                for column, kind in (column_kinds or {}).items()
            },
        )
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")

        def requests() -> Iterator[pb.UploadDatasetRequest]:
            yield pb.UploadDatasetRequest(header=header)
            for chunk in _chunks(path, chunk_size):
                yield pb.UploadDatasetRequest(chunk=chunk)

        return self._datasets.UploadDataset(requests())

    @_rpc_errors()
    def generate_dataset(
        self,
        name: str,
        n_samples: int,
        *,
        generator: str = "digits_scaled",
        image_size: int = 28,
        seed: int = 0,
        timeout: float | None = 600.0,
    ) -> pb.Dataset:
        """Generates a scale dataset on the server (digits up-sampled, shifted, rotated)."""
        request = pb.GenerateDatasetRequest(
            name=name, generator=generator, n_samples=n_samples, image_size=image_size, seed=seed
        )
        return self._datasets.GenerateDataset(request, timeout=timeout)

    @_rpc_errors()
    def delete_dataset(self, name: str) -> None:
        self._datasets.DeleteDataset(pb.DeleteDatasetRequest(name=name), timeout=self.timeout)

    # -- algorithms -----------------------------------------------------------------------

    @_rpc_errors()
    def list_algorithms(self, paradigm: EnumArg = None) -> list[pb.Algorithm]:
        request = pb.ListAlgorithmsRequest(paradigm=enum_value(pb.Paradigm, "PARADIGM_", paradigm))
        return list(self._algorithms.ListAlgorithms(request, timeout=self.timeout).algorithms)

    # -- training jobs --------------------------------------------------------------------

    @_rpc_errors()
    def start_training(
        self,
        dataset: str,
        algorithm: str,
        *,
        hyperparameters: Mapping[str, ParamScalar] | None = None,
        model_name: str = "",
        task: EnumArg = None,
        device: EnumArg = "auto",
        seed: int | None = None,
        test_fraction: float = 0.0,
        train_size: int = 0,
        world_size: int = 0,
        column_inputs: bool = False,
        image_features: str = "",
    ) -> pb.Job:
        """Queues a training job and returns it at once (state QUEUED).

        train_size: fit on at most this many rows of the training split (stratified for
        classification; the test rows stay the same), for learning curves; 0 means all.
        world_size: deep models only, train in this many DDP processes (torchrun, up to
        the server's max_world_size); 0 or 1 means one process.
        column_inputs: a table of numbers only is served one input per column, not as one
        "input" matrix (tables with words always are).
        image_features: image datasets, classical algorithms: "pixels" (default) or "hog"
        (histograms of oriented gradients, computed inside the served graph).
        """
        request = pb.StartTrainingRequest(
            dataset=dataset,
            algorithm=algorithm,
            hyperparameters={k: to_param_value(v) for k, v in (hyperparameters or {}).items()},
            model_name=model_name,
            task=enum_value(pb.Task, "TASK_", task),
            device=enum_value(pb.Device, "DEVICE_", device),
            test_fraction=test_fraction,
            train_size=train_size,
            world_size=world_size,
            column_inputs=column_inputs,
            image_features=image_features,
        )
        if seed is not None:
            request.seed = seed
        return self._training.StartTraining(request, timeout=self.timeout)

    @_rpc_errors()
    def get_job(self, id: str) -> pb.Job:
        return self._training.GetJob(pb.GetJobRequest(id=id), timeout=self.timeout)

    @_rpc_errors()
    def list_jobs(self) -> list[pb.Job]:
        return list(self._training.ListJobs(pb.ListJobsRequest(), timeout=self.timeout).jobs)

    @_rpc_errors()
    def cancel_job(self, id: str) -> pb.Job:
        return self._training.CancelJob(pb.CancelJobRequest(id=id), timeout=self.timeout)

    def watch_job(self, id: str) -> Iterator[pb.JobEvent]:
        """The job's events so far, then live ones until the server ends the stream."""
        call = self._training.WatchJob(pb.WatchJobRequest(id=id))
        try:
            with _rpc_errors():
                yield from call
        finally:
            # Stops the server-side stream when the caller leaves the loop early.
            call.cancel()

    def wait_for_job(
        self, id: str, on_event: Callable[[pb.JobEvent], object] | None = None
    ) -> pb.Job:
        """Follows a job to its end; returns it if it succeeded, raises JobFailed otherwise."""
        seen = -1
        while True:
            job: pb.Job | None = None
            for event in self.watch_job(id):
                # A re-watch replays history; report each event once.
                if event.sequence <= seen:
                    continue
                seen = event.sequence
                if on_event is not None:
                    on_event(event)
                if event.state in TERMINAL_STATES:
                    job = event.job if event.HasField("job") else None
                    break
            if job is None or job.state not in TERMINAL_STATES:
                job = self.get_job(id)
            if job.state == pb.JOB_STATE_SUCCEEDED:
                return job
            if job.state in TERMINAL_STATES:
                raise JobFailed(job)
            # The stream ended early (server restart, proxy timeout): watch again.
            time.sleep(0.2)

    # -- searches -------------------------------------------------------------------------

    @_rpc_errors()
    def start_search(
        self,
        dataset: str,
        *,
        algorithms: Sequence[str] = (),
        trials: int = 0,
        seconds: float = 0.0,
        dollars: float = 0.0,
        joules: float = 0.0,
        metric: str = "",
        seed: int = 0,
        parallelism: int = 0,
        pruner: str = "",
        prune_threshold: float = 0.0,
        test_fraction: float = 0.0,
        device: EnumArg = "auto",
        promote_alias: str = "",
        promote_gates: pb.PromotionGates | None = None,
    ) -> search_pb.Search:
        """Starts a search and returns it at once (state RUNNING). The budget is trials,
        seconds, dollars and joules, whichever runs out first (0: no limit of that kind;
        at least one is needed); algorithms default to every one that fits the dataset.
        promote_alias: the best trial goes to this alias when the search ends, if it passes
        promote_gates (as set_alias; the outcome is in Search.promotion once the leaderboard
        is final)."""
        return self._search.StartSearch(
            search_pb.StartSearchRequest(
                dataset=dataset,
                algorithms=list(algorithms),
                budget=search_pb.SearchBudget(
                    trials=trials, seconds=seconds, dollars=dollars, joules=joules
                ),
                metric=metric,
                seed=seed,
                parallelism=parallelism,
                pruner=pruner,
                prune_threshold=prune_threshold,
                test_fraction=test_fraction,
                device=enum_value(pb.Device, "DEVICE_", device),
                promote_alias=promote_alias,
                promote_gates=promote_gates,
            ),
            timeout=self.timeout,
        )

    @_rpc_errors()
    def get_search(self, id: str) -> search_pb.Search:
        return self._search.GetSearch(search_pb.GetSearchRequest(id=id), timeout=self.timeout)

    @_rpc_errors()
    def cancel_search(self, id: str) -> search_pb.Search:
        return self._search.CancelSearch(search_pb.CancelSearchRequest(id=id), timeout=self.timeout)

    def watch_search(self, id: str) -> Iterator[search_pb.Search]:
        """The search now, then after every change until it ends."""
        call = self._search.WatchSearch(search_pb.WatchSearchRequest(id=id))
        try:
            with _rpc_errors():
                yield from call
        finally:
            call.cancel()

    def wait_for_search(
        self, id: str, on_change: Callable[[search_pb.Search], object] | None = None
    ) -> search_pb.Search:
        """Follows a search to its end and returns it (whatever state it ended in)."""
        while True:
            last: search_pb.Search | None = None
            for search in self.watch_search(id):
                last = search
                if on_change is not None:
                    on_change(search)
            if last is None or last.state == search_pb.SEARCH_STATE_RUNNING:
                last = self.get_search(id)
            if last.state != search_pb.SEARCH_STATE_RUNNING:
                return last
            time.sleep(0.2)  # the stream ended early: watch again

    @_rpc_errors()
    def leaderboard(self, id: str) -> search_pb.Leaderboard:
        """The best trial of each algorithm, best first; once the search has ended, with
        serving measured through the data plane (final)."""
        return self._search.GetLeaderboard(
            search_pb.GetLeaderboardRequest(id=id), timeout=self.timeout
        )

    # -- models ---------------------------------------------------------------------------

    @_rpc_errors()
    def list_models(self, name: str = "", latest_only: bool = False) -> list[pb.Model]:
        request = pb.ListModelsRequest(name=name, latest_only=latest_only)
        return list(self._models.ListModels(request, timeout=self.timeout).models)

    @_rpc_errors()
    def get_model(self, name: str, version: str = "") -> pb.Model:
        request = pb.GetModelRequest(name=name, version=version)
        return self._models.GetModel(request, timeout=self.timeout)

    @_rpc_errors()
    def explain(
        self,
        name: str,
        version: str = "",
        dataset: str = "",
        n_repeats: int = 0,
        max_rows: int = 0,
        seed: int = 0,
    ) -> pb.Explanation:
        """Permutation importance of every input feature (most important first), with the
        model's own coefficients or feature importances where it has them.

        Defaults (0 / ""): the latest version, its training dataset's held-out rows, 5
        repeats, at most 2000 rows. Runs in a server worker within this client's timeout.
        """
        request = pb.ExplainRequest(
            name=name,
            version=version,
            dataset=dataset,
            n_repeats=n_repeats,
            max_rows=max_rows,
            seed=seed,
        )
        return self._models.Explain(request, timeout=self.timeout)

    # -- cascades -------------------------------------------------------------------------

    @_rpc_errors()
    def create_cascade(
        self,
        name: str,
        first: str,
        then: str,
        *,
        target_accuracy: float | None = None,
        max_dollars_per_1k: float | None = None,
        accuracy_within_then: float | None = None,
        max_rows: int = 0,
    ) -> pb.Cascade:
        """Calibrates and stores a cascade: `first` ("name" or "name:version") answers the
        rows it is sure of, `then` the rest. Give exactly one goal."""
        request = pb.CreateCascadeRequest(
            name=name,
            first=first,
            then=then,
            goal=cascade_goal(target_accuracy, max_dollars_per_1k, accuracy_within_then),
            max_rows=max_rows,
        )
        return self._cascades.CreateCascade(request, timeout=self.timeout)

    @_rpc_errors()
    def recalibrate_cascade(
        self,
        name: str,
        *,
        target_accuracy: float | None = None,
        max_dollars_per_1k: float | None = None,
        accuracy_within_then: float | None = None,
        max_rows: int = 0,
    ) -> pb.Cascade:
        """Calibrates the cascade again (a new version); no goal keeps the current one."""
        request = pb.RecalibrateCascadeRequest(name=name, max_rows=max_rows)
        if (target_accuracy, max_dollars_per_1k, accuracy_within_then) != (None, None, None):
            request.goal.CopyFrom(
                cascade_goal(target_accuracy, max_dollars_per_1k, accuracy_within_then)
            )
        return self._cascades.RecalibrateCascade(request, timeout=self.timeout)

    @_rpc_errors()
    def get_cascade(self, name: str, version: str = "") -> pb.Cascade:
        request = pb.GetCascadeRequest(name=name, version=version)
        return self._cascades.GetCascade(request, timeout=self.timeout)

    @_rpc_errors()
    def list_cascades(self, name: str = "") -> list[pb.Cascade]:
        request = pb.ListCascadesRequest(name=name)
        return list(self._cascades.ListCascades(request, timeout=self.timeout).cascades)

    @_rpc_errors()
    def delete_cascade(self, name: str, version: str = "") -> list[str]:
        request = pb.DeleteCascadeRequest(name=name, version=version)
        return list(self._cascades.DeleteCascade(request, timeout=self.timeout).deleted_versions)

    @_rpc_errors()
    def set_shadow(
        self, name: str, alias: str, shadow: str, *, version: str = "", sample_rate: float = 1.0
    ) -> pb.ShadowConfig:
        """Runs `sample_rate` of the alias's requests through model `shadow` too (its
        `version`: a number, an alias, or "" for the latest), off their path."""
        request = pb.SetShadowRequest(
            name=name, alias=alias, shadow_model=shadow, shadow_version=version,
            sample_rate=sample_rate,
        )  # fmt: skip
        return self._shadows.SetShadow(request, timeout=self.timeout)

    @_rpc_errors()
    def clear_shadow(self, name: str, alias: str) -> None:
        self._shadows.ClearShadow(
            pb.ClearShadowRequest(name=name, alias=alias), timeout=self.timeout
        )

    @_rpc_errors()
    def list_shadows(self, name: str = "") -> list[pb.ShadowConfig]:
        request = pb.ListShadowsRequest(name=name)
        return list(self._shadows.ListShadows(request, timeout=self.timeout).shadows)

    @_rpc_errors()
    def shadow_report(self, name: str, alias: str) -> pb.ShadowReport:
        request = pb.GetShadowReportRequest(name=name, alias=alias)
        return self._shadows.GetShadowReport(request, timeout=self.timeout)

    @_rpc_errors()
    def submit_feedback(self, request_id: str, labels: Sequence[str]) -> pb.SubmitFeedbackResponse:
        """The true labels of a shadowed request's rows, by the id its response carried."""
        request = pb.SubmitFeedbackRequest(request_id=request_id, labels=[str(v) for v in labels])
        return self._shadows.SubmitFeedback(request, timeout=self.timeout)

    @_rpc_errors()
    def delete_model(self, name: str, version: str = "", *, force: bool = False) -> list[str]:
        """Deletes one version, or all of them; returns the versions removed. A version an
        alias points at is refused (FAILED_PRECONDITION) unless force (its aliases go too)."""
        request = pb.DeleteModelRequest(name=name, version=version, force=force)
        return list(self._models.DeleteModel(request, timeout=self.timeout).versions)

    # -- aliases --------------------------------------------------------------------------

    @_rpc_errors()
    def set_alias(
        self,
        name: str,
        version: str,
        alias: str,
        *,
        require_parity: bool = False,
        metric_epsilon: float | None = None,
        metric: str = "",
        max_p99_ms: float = 0.0,
        max_joules_per_1k: float = 0.0,
        probe_requests: int = 0,
        note: str = "",
    ) -> pb.AliasChange:
        """Points alias (e.g. "champion") at version (a number, "latest" or another alias),
        behind the gates given: FAILED_PRECONDITION names each failed gate and by how much.
        The returned history entry carries the evidence (evidence_json)."""
        gates = pb.PromotionGates(
            require_parity=require_parity,
            metric=metric,
            max_p99_ms=max_p99_ms,
            max_joules_per_1k=max_joules_per_1k,
            probe_requests=probe_requests,
        )
        if metric_epsilon is not None:
            gates.metric_epsilon = metric_epsilon
        request = pb.SetAliasRequest(
            name=name, version=version, alias=alias, gates=gates, note=note
        )
        return self._models.SetAlias(request, timeout=self.timeout)

    @_rpc_errors()
    def delete_alias(self, name: str, alias: str, note: str = "") -> pb.AliasChange:
        request = pb.DeleteAliasRequest(name=name, alias=alias, note=note)
        return self._models.DeleteAlias(request, timeout=self.timeout)

    @_rpc_errors()
    def list_aliases(self, name: str = "", alias: str = "") -> pb.ListAliasesResponse:
        """Aliases as they stand and (for a named model) their history, oldest first."""
        request = pb.ListAliasesRequest(name=name, alias=alias)
        return self._models.ListAliases(request, timeout=self.timeout)

    @_rpc_errors()
    def import_model(
        self,
        name: str,
        path: str | Path,
        *,
        format: EnumArg = None,
        paradigm: EnumArg = None,
        task: EnumArg = None,
        n_features: int = 0,
        trusted_types: Iterable[str] = (),
        chunk_size: int = MiB,
    ) -> pb.Job:
        """Streams an .onnx or .skops file; conversion runs as the returned job."""
        path = Path(path)
        header = pb.ImportModelHeader(
            name=name,
            format=_format_by_suffix(path, pb.ModelFormat, "MODEL_FORMAT_", format),
            paradigm=enum_value(pb.Paradigm, "PARADIGM_", paradigm),
            task=enum_value(pb.Task, "TASK_", task),
            n_features=n_features,
            trusted_types=list(trusted_types),
        )
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")

        def requests() -> Iterator[pb.ImportModelRequest]:
            yield pb.ImportModelRequest(header=header)
            for chunk in _chunks(path, chunk_size):
                yield pb.ImportModelRequest(chunk=chunk)

        return self._models.ImportModel(requests())

    @_rpc_errors()
    def export_model(self, name: str, path: str | Path, *, version: str = "") -> pb.Model:
        """Writes the model's ONNX file to path (whole or not at all); returns its description."""
        path = Path(path)
        partial = path.with_name(path.name + ".part")
        model: pb.Model | None = None
        try:
            with partial.open("wb") as f:
                request = pb.ExportModelRequest(name=name, version=version)
                for message in self._models.ExportModel(request):
                    if message.HasField("model"):
                        model = message.model
                    f.write(message.chunk)
            if model is None:
                raise ParadigmClientError(
                    grpc.StatusCode.INTERNAL, "export stream carried no model description"
                )
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return model

    # -- cost -----------------------------------------------------------------------------

    @_rpc_errors()
    def cost_report(self, model_name: str = "") -> pb.CostReport:
        """Serving cost since the server started and training cost, per model and paradigm."""
        request = pb.GetCostReportRequest(model_name=model_name)
        return self._cost.GetCostReport(request, timeout=self.timeout)

    # -- inference ------------------------------------------------------------------------

    @_rpc_errors()
    def model_ready(self, name: str, version: str = "") -> bool:
        request = oip.ModelReadyRequest(name=name, version=version)
        return bool(self._inference.ModelReady(request, timeout=self.timeout).ready)

    @_rpc_errors()
    def model_metadata(self, name: str, version: str = "") -> oip.ModelMetadataResponse:
        request = oip.ModelMetadataRequest(name=name, version=version)
        return self._inference.ModelMetadata(request, timeout=self.timeout)

    @_rpc_errors()
    def model_config(self, name: str, version: str = "") -> oip.ModelConfig:
        request = oip.ModelConfigRequest(name=name, version=version)
        return self._inference.ModelConfig(request, timeout=self.timeout).config

    @_rpc_errors()
    def infer(
        self,
        model: str,
        inputs: np.ndarray | Mapping[str, np.ndarray],
        *,
        version: str = "",
        outputs: Sequence[str] | None = None,
        request_id: str = "",
    ) -> InferResult:
        """Runs a model; a bare array is its input "input". Tensors travel as raw bytes."""
        request = make_infer_request(
            model, inputs, version=version, outputs=outputs, request_id=request_id
        )
        return InferResult(self._inference.ModelInfer(request, timeout=self.timeout))

    def predict(
        self,
        model: str,
        data: Any,
        *,
        version: str = "",
        outputs: Sequence[str] | None = None,
    ) -> Prediction:
        """Runs a table model on rows: `data` is a pyarrow Table, a pandas DataFrame or a
        dict of columns (words, numbers, None or NaN for blanks). Columns the model does not
        take are left out (Prediction.left_out); ValueError names any it needs and lacks.
        """
        from clients import columns

        metadata = self.model_metadata(model, version)
        inputs = columns.column_inputs(columns.as_table(data), metadata.inputs)
        result = self.infer(model, inputs.tensors, version=version, outputs=outputs)
        parameters = metadata.parameters
        classes = parameters["classes"].string_param if "classes" in parameters else ""
        return Prediction(
            result=result,
            outputs=result.outputs,
            left_out=inputs.left_out,
            classes=json.loads(classes) if classes else [],
        )

    def predict_images(
        self, model: str, paths: Sequence[str | Path], *, version: str = ""
    ) -> ImagePrediction:
        """Runs an image model on image files (folders stand for the images inside them):
        each is decoded and resized here as the server did at upload, and sent as UINT8."""
        from clients import images

        metadata = self.model_metadata(model, version)
        shape = images.image_input(metadata.inputs)
        if shape is None:
            raise ValueError(f"{model} does not take images (one UINT8 [n, H, W, C] input)")
        files = images.image_files(paths)
        pixels = images.load_images(files, shape)
        result = self.infer(model, {metadata.inputs[0].name: pixels}, version=version)
        return ImagePrediction(files=files, result=result, outputs=result.outputs)


@dataclass
class ImagePrediction:
    """An image model's answer, one row per file: outputs["label"] holds class names and
    outputs["probabilities"] their probabilities, in the order of `files`."""

    files: list[Path]
    result: InferResult
    outputs: dict[str, np.ndarray]


@dataclass
class Prediction:
    """A table model's answer: outputs by name ("label" holds class names), the class order
    of "probabilities", and the columns of the data that the model does not take."""

    result: InferResult
    outputs: dict[str, np.ndarray]
    left_out: list[str]
    classes: list[str]
