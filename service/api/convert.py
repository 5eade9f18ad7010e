"""Conversions between paradigm.v1 messages and the service's own objects."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from service.cost.ledger import Charge
from service.cost.report import training_charge
from service.datasets.layout import DatasetInfo
from service.datasets.schema import ColumnInfo
from service.errors import InvalidArgument
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.registry.aliases import Alias, AliasEvent
from service.registry.manifest import Manifest, TensorSpec
from service.serving.promotion import Gates
from service.training.catalog import Algorithm
from service.training.explain import Explanation
from service.training.job import Job
from service.training.journal import JobEvent

PARADIGMS = {"classical": pb.PARADIGM_CLASSICAL, "deep": pb.PARADIGM_DEEP}
TASKS = {
    "classification": pb.TASK_CLASSIFICATION,
    "regression": pb.TASK_REGRESSION,
    "anomaly_detection": pb.TASK_ANOMALY_DETECTION,
}
STATES = {
    "queued": pb.JOB_STATE_QUEUED,
    "running": pb.JOB_STATE_RUNNING,
    "succeeded": pb.JOB_STATE_SUCCEEDED,
    "failed": pb.JOB_STATE_FAILED,
    "cancelled": pb.JOB_STATE_CANCELLED,
}
DEVICES: dict[int, str] = {
    pb.DEVICE_UNSPECIFIED: "auto",
    pb.DEVICE_AUTO: "auto",
    pb.DEVICE_CPU: "cpu",
    pb.DEVICE_CUDA: "cuda",
}
JOB_KINDS = {"train": pb.JOB_KIND_TRAIN, "import": pb.JOB_KIND_IMPORT}
COLUMN_KINDS = {
    "numeric": pb.COLUMN_KIND_NUMERIC,
    "categorical": pb.COLUMN_KIND_CATEGORICAL,
    "boolean": pb.COLUMN_KIND_BOOLEAN,
    "text": pb.COLUMN_KIND_TEXT,
    "ignored": pb.COLUMN_KIND_IGNORED,
}
_COLUMN_KIND_NAMES: dict[int, str] = {v: k for k, v in COLUMN_KINDS.items()}
HYPERPARAMETER_TYPES = {
    "int": pb.Hyperparameter.TYPE_INT,
    "float": pb.Hyperparameter.TYPE_FLOAT,
    "choice": pb.Hyperparameter.TYPE_CHOICE,
    "bool": pb.Hyperparameter.TYPE_BOOL,
}
_TASK_NAMES: dict[int, str] = {pb.TASK_UNSPECIFIED: "", **{v: k for k, v in TASKS.items()}}
_PARADIGM_NAMES: dict[int, str] = {
    pb.PARADIGM_UNSPECIFIED: "",
    **{v: k for k, v in PARADIGMS.items()},
}


def _name(names: dict[int, str], value: int, enum: str) -> str:
    if value not in names:
        raise InvalidArgument(f"{value} is not a known {enum} value")
    return names[value]


def column_kinds(given: Mapping[str, int]) -> dict[str, str]:
    """UploadDatasetHeader.column_kinds as kind names; unspecified is refused."""
    kinds = {}
    for column, kind in given.items():
        if kind not in _COLUMN_KIND_NAMES:
            raise InvalidArgument(
                f"column_kinds[{column[:64]!r}]: {kind} is not a ColumnKind (numeric, "
                "categorical, boolean, text or ignored)"
            )
        kinds[column] = _COLUMN_KIND_NAMES[kind]
    return kinds


def task_name(task: int) -> str:
    """Enum to name; unspecified is ""."""
    return _name(_TASK_NAMES, task, "Task")


def paradigm_name(paradigm: int) -> str:
    """Enum to name; unspecified is ""."""
    return _name(_PARADIGM_NAMES, paradigm, "Paradigm")


def device_name(device: int) -> str:
    """Enum to name; unspecified is "auto"."""
    return _name(DEVICES, device, "Device")


def timestamp(moment: datetime | str | None) -> Timestamp | None:
    if not moment:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def param_from_proto(value: pb.ParamValue) -> Any:
    kind = value.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument("a hyperparameter value is empty; set one of its kinds")
    return getattr(value, kind)


def params_from_proto(values: Mapping[str, pb.ParamValue]) -> dict[str, Any]:
    return {name: param_from_proto(value) for name, value in values.items()}


def param_to_proto(value: Any) -> pb.ParamValue:
    if isinstance(value, bool):
        return pb.ParamValue(bool_value=value)
    if isinstance(value, int):
        return pb.ParamValue(int_value=value)
    if isinstance(value, float):
        return pb.ParamValue(float_value=value)
    return pb.ParamValue(string_value=str(value))


def dataset_to_proto(info: DatasetInfo) -> pb.Dataset:
    return pb.Dataset(
        name=info.name,
        task=TASKS.get(info.task, pb.TASK_UNSPECIFIED),
        n_samples=info.n_samples,
        n_features=info.n_features,
        n_classes=info.n_classes,
        image_shape=info.image_shape,
        feature_names=info.feature_names,
        fingerprint=info.fingerprint,
        size_bytes=info.size_bytes,
        builtin=info.builtin,
        description=info.description,
        created_at=timestamp(info.created_at),
        columns=[_column_to_proto(ColumnInfo.from_dict(column)) for column in info.columns],
        label_column=info.label_column,
        classes=[pb.ValueCount(value=c["value"], count=c["count"]) for c in info.classes],
        warnings=info.warnings,
    )


def _column_to_proto(column: ColumnInfo) -> pb.Column:
    return pb.Column(
        name=column.name,
        kind=COLUMN_KINDS[column.kind],
        dtype=column.dtype,
        missing=column.missing,
        distinct=column.distinct,
        top=[pb.ValueCount(value=v.value, count=v.count) for v in column.top],
        given=column.given,
        min=column.minimum,
        max=column.maximum,
    )


def algorithm_to_proto(algorithm: Algorithm) -> pb.Algorithm:
    message = pb.Algorithm(
        name=algorithm.name,
        paradigm=PARADIGMS[algorithm.paradigm],
        tasks=[TASKS[task] for task in algorithm.tasks],
        description=algorithm.description,
    )
    for hyper in algorithm.hyperparameters:
        entry = message.hyperparameters.add(
            name=hyper.name,
            type=HYPERPARAMETER_TYPES[hyper.type],
            choices=list(hyper.choices),
            description=hyper.description,
        )
        entry.default.CopyFrom(param_to_proto(hyper.default))
        if hyper.minimum is not None:
            entry.minimum = hyper.minimum
        if hyper.maximum is not None:
            entry.maximum = hyper.maximum
    return message


def _tensors(specs: list[TensorSpec]) -> list[pb.TensorSpec]:
    return [pb.TensorSpec(name=s.name, datatype=s.datatype, shape=s.shape) for s in specs]


def model_to_proto(manifest: Manifest, *, latest: bool, aliases: Sequence[str] = ()) -> pb.Model:
    message = pb.Model(
        name=manifest.name,
        version=manifest.version,
        paradigm=PARADIGMS.get(manifest.paradigm, pb.PARADIGM_UNSPECIFIED),
        algorithm=manifest.algorithm,
        task=TASKS.get(manifest.task, pb.TASK_UNSPECIFIED),
        dataset=manifest.dataset,
        dataset_fingerprint=manifest.dataset_fingerprint,
        inputs=_tensors(manifest.inputs),
        outputs=_tensors(manifest.outputs),
        metrics=manifest.metrics,
        parity_max_abs_error=manifest.parity_max_abs_error,
        onnx_bytes=manifest.onnx_bytes,
        parameter_count=manifest.parameter_count,
        checksum=manifest.checksum,
        library_versions=manifest.library_versions,
        created_at=timestamp(manifest.created_at),
        latest=latest,
        training_cost=cost_to_proto(training_charge(manifest)),
        aliases=sorted(aliases),
        mlflow_run_id=manifest.mlflow_run_id,
    )
    for name, value in manifest.hyperparameters.items():
        message.hyperparameters[name].CopyFrom(param_to_proto(value))
    return message


def cost_to_proto(charge: Charge) -> pb.Cost:
    return pb.Cost(
        device_seconds=charge.device_seconds,
        joules=charge.joules,
        dollars=charge.dollars,
        energy_source=charge.energy_source,
    )


def explanation_to_proto(explanation: Explanation, *, latest: bool) -> pb.Explanation:
    return pb.Explanation(
        model=model_to_proto(explanation.manifest, latest=latest),
        dataset=explanation.dataset,
        rows=explanation.rows,
        metric=explanation.metric,
        baseline_score=explanation.baseline_score,
        features=[
            pb.FeatureImportance(
                feature=f.feature,
                importance_mean=f.importance_mean,
                importance_std=f.importance_std,
                native=f.native,
            )
            for f in explanation.features
        ],
        native_kind=explanation.native_kind,
        seconds=explanation.seconds,
        cost=cost_to_proto(explanation.charge),
    )


def job_to_proto(job: Job) -> pb.Job:
    message = pb.Job(
        id=job.id,
        kind=JOB_KINDS[job.kind],
        state=STATES[job.state],
        dataset=job.dataset,
        algorithm=job.algorithm,
        paradigm=PARADIGMS.get(job.paradigm, pb.PARADIGM_UNSPECIFIED),
        model_name=job.model_name,
        model_version=job.model_version,
        error=job.error,
        progress=job.progress,
        metrics=job.metrics,
        created_at=timestamp(job.created_at),
        started_at=timestamp(job.started_at),
        finished_at=timestamp(job.finished_at),
        device=job.device,
        task=TASKS.get(job.task, pb.TASK_UNSPECIFIED),
        world_size=job.world_size,
    )
    for name, value in job.hyperparameters.items():
        message.hyperparameters[name].CopyFrom(param_to_proto(value))
    return message


def event_to_proto(job: Job, event: JobEvent) -> pb.JobEvent:
    return pb.JobEvent(
        job_id=job.id,
        sequence=event.sequence,
        time=timestamp(event.time),
        state=STATES[event.state],
        stage=event.stage,
        message=event.message,
        epoch=event.epoch,
        epochs=event.epochs,
        metrics=event.metrics,
        progress=event.progress,
        job=job_to_proto(job),
    )


def alias_change_to_proto(event: AliasEvent) -> pb.AliasChange:
    return pb.AliasChange(
        name=event.name,
        alias=event.alias,
        version=event.version,
        previous=event.previous,
        at=timestamp(event.at),
        evidence_json=json.dumps(event.evidence, sort_keys=True),
    )


def alias_to_proto(alias: Alias) -> pb.ModelAlias:
    return pb.ModelAlias(
        name=alias.name,
        alias=alias.alias,
        version=alias.version,
        updated_at=timestamp(alias.updated_at),
    )


def gates_from_proto(gates: pb.PromotionGates) -> Gates:
    return Gates(
        require_parity=gates.require_parity,
        metric_epsilon=gates.metric_epsilon if gates.HasField("metric_epsilon") else None,
        metric=gates.metric,
        max_p99_ms=gates.max_p99_ms,
        max_joules_per_1k=gates.max_joules_per_1k,
        probe_requests=gates.probe_requests,
    )
