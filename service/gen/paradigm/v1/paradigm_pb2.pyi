import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Paradigm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARADIGM_UNSPECIFIED: _ClassVar[Paradigm]
    PARADIGM_CLASSICAL: _ClassVar[Paradigm]
    PARADIGM_DEEP: _ClassVar[Paradigm]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_CLASSIFICATION: _ClassVar[Task]
    TASK_REGRESSION: _ClassVar[Task]
    TASK_ANOMALY_DETECTION: _ClassVar[Task]

class Device(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_UNSPECIFIED: _ClassVar[Device]
    DEVICE_AUTO: _ClassVar[Device]
    DEVICE_CPU: _ClassVar[Device]
    DEVICE_CUDA: _ClassVar[Device]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_TRAIN: _ClassVar[JobKind]
    JOB_KIND_IMPORT: _ClassVar[JobKind]

class DatasetFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_FORMAT_UNSPECIFIED: _ClassVar[DatasetFormat]
    DATASET_FORMAT_NPZ: _ClassVar[DatasetFormat]
    DATASET_FORMAT_CSV: _ClassVar[DatasetFormat]
    DATASET_FORMAT_PARQUET: _ClassVar[DatasetFormat]
    DATASET_FORMAT_IMAGES: _ClassVar[DatasetFormat]

class ColumnKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLUMN_KIND_UNSPECIFIED: _ClassVar[ColumnKind]
    COLUMN_KIND_NUMERIC: _ClassVar[ColumnKind]
    COLUMN_KIND_CATEGORICAL: _ClassVar[ColumnKind]
    COLUMN_KIND_BOOLEAN: _ClassVar[ColumnKind]
    COLUMN_KIND_TEXT: _ClassVar[ColumnKind]
    COLUMN_KIND_IGNORED: _ClassVar[ColumnKind]

class ModelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_FORMAT_UNSPECIFIED: _ClassVar[ModelFormat]
    MODEL_FORMAT_ONNX: _ClassVar[ModelFormat]
    MODEL_FORMAT_SKOPS: _ClassVar[ModelFormat]
PARADIGM_UNSPECIFIED: Paradigm
PARADIGM_CLASSICAL: Paradigm
PARADIGM_DEEP: Paradigm
TASK_UNSPECIFIED: Task
TASK_CLASSIFICATION: Task
TASK_REGRESSION: Task
TASK_ANOMALY_DETECTION: Task
DEVICE_UNSPECIFIED: Device
DEVICE_AUTO: Device
DEVICE_CPU: Device
DEVICE_CUDA: Device
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_TRAIN: JobKind
JOB_KIND_IMPORT: JobKind
DATASET_FORMAT_UNSPECIFIED: DatasetFormat
DATASET_FORMAT_NPZ: DatasetFormat
DATASET_FORMAT_CSV: DatasetFormat
DATASET_FORMAT_PARQUET: DatasetFormat
DATASET_FORMAT_IMAGES: DatasetFormat
COLUMN_KIND_UNSPECIFIED: ColumnKind
COLUMN_KIND_NUMERIC: ColumnKind
COLUMN_KIND_CATEGORICAL: ColumnKind
COLUMN_KIND_BOOLEAN: ColumnKind
COLUMN_KIND_TEXT: ColumnKind
COLUMN_KIND_IGNORED: ColumnKind
MODEL_FORMAT_UNSPECIFIED: ModelFormat
MODEL_FORMAT_ONNX: ModelFormat
MODEL_FORMAT_SKOPS: ModelFormat

class ParamValue(_message.Message):
    __slots__ = ("int_value", "float_value", "string_value", "bool_value")
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    int_value: int
    float_value: float
    string_value: str
    bool_value: bool
    def __init__(self, int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("name", "task", "n_samples", "n_features", "n_classes", "image_shape", "feature_names", "fingerprint", "size_bytes", "builtin", "description", "created_at", "columns", "label_column", "classes", "warnings", "contact_sheet")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    N_CLASSES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    LABEL_COLUMN_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    CONTACT_SHEET_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: Task
    n_samples: int
    n_features: int
    n_classes: int
    image_shape: _containers.RepeatedScalarFieldContainer[int]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    fingerprint: str
    size_bytes: int
    builtin: bool
    description: str
    created_at: _timestamp_pb2.Timestamp
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    label_column: str
    classes: _containers.RepeatedCompositeFieldContainer[ValueCount]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    contact_sheet: bytes
    def __init__(self, name: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., n_samples: _Optional[int] = ..., n_features: _Optional[int] = ..., n_classes: _Optional[int] = ..., image_shape: _Optional[_Iterable[int]] = ..., feature_names: _Optional[_Iterable[str]] = ..., fingerprint: _Optional[str] = ..., size_bytes: _Optional[int] = ..., builtin: _Optional[bool] = ..., description: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., label_column: _Optional[str] = ..., classes: _Optional[_Iterable[_Union[ValueCount, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ..., contact_sheet: _Optional[bytes] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "kind", "dtype", "missing", "distinct", "top", "given", "min", "max")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    GIVEN_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ColumnKind
    dtype: str
    missing: int
    distinct: int
    top: _containers.RepeatedCompositeFieldContainer[ValueCount]
    given: bool
    min: float
    max: float
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ColumnKind, str]] = ..., dtype: _Optional[str] = ..., missing: _Optional[int] = ..., distinct: _Optional[int] = ..., top: _Optional[_Iterable[_Union[ValueCount, _Mapping]]] = ..., given: _Optional[bool] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class ValueCount(_message.Message):
    __slots__ = ("value", "count")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    value: str
    count: int
    def __init__(self, value: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("name", "contact_sheet")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTACT_SHEET_FIELD_NUMBER: _ClassVar[int]
    name: str
    contact_sheet: bool
    def __init__(self, name: _Optional[str] = ..., contact_sheet: _Optional[bool] = ...) -> None: ...

class UploadDatasetHeader(_message.Message):
    __slots__ = ("name", "format", "label_column", "task", "description", "column_kinds", "image_size", "grayscale")
    class ColumnKindsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ColumnKind
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ColumnKind, str]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    LABEL_COLUMN_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COLUMN_KINDS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRAYSCALE_FIELD_NUMBER: _ClassVar[int]
    name: str
    format: DatasetFormat
    label_column: str
    task: Task
    description: str
    column_kinds: _containers.ScalarMap[str, ColumnKind]
    image_size: int
    grayscale: bool
    def __init__(self, name: _Optional[str] = ..., format: _Optional[_Union[DatasetFormat, str]] = ..., label_column: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., description: _Optional[str] = ..., column_kinds: _Optional[_Mapping[str, ColumnKind]] = ..., image_size: _Optional[int] = ..., grayscale: _Optional[bool] = ...) -> None: ...

class UploadDatasetRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadDatasetHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadDatasetHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class GenerateDatasetRequest(_message.Message):
    __slots__ = ("name", "generator", "n_samples", "image_size", "seed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    name: str
    generator: str
    n_samples: int
    image_size: int
    seed: int
    def __init__(self, name: _Optional[str] = ..., generator: _Optional[str] = ..., n_samples: _Optional[int] = ..., image_size: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Hyperparameter(_message.Message):
    __slots__ = ("name", "type", "default", "minimum", "maximum", "choices", "description")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[Hyperparameter.Type]
        TYPE_INT: _ClassVar[Hyperparameter.Type]
        TYPE_FLOAT: _ClassVar[Hyperparameter.Type]
        TYPE_CHOICE: _ClassVar[Hyperparameter.Type]
        TYPE_BOOL: _ClassVar[Hyperparameter.Type]
    TYPE_UNSPECIFIED: Hyperparameter.Type
    TYPE_INT: Hyperparameter.Type
    TYPE_FLOAT: Hyperparameter.Type
    TYPE_CHOICE: Hyperparameter.Type
    TYPE_BOOL: Hyperparameter.Type
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: Hyperparameter.Type
    default: ParamValue
    minimum: float
    maximum: float
    choices: _containers.RepeatedScalarFieldContainer[str]
    description: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[Hyperparameter.Type, str]] = ..., default: _Optional[_Union[ParamValue, _Mapping]] = ..., minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., choices: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ...) -> None: ...

class Algorithm(_message.Message):
    __slots__ = ("name", "paradigm", "tasks", "description", "hyperparameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARADIGM_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    paradigm: Paradigm
    tasks: _containers.RepeatedScalarFieldContainer[Task]
    description: str
    hyperparameters: _containers.RepeatedCompositeFieldContainer[Hyperparameter]
    def __init__(self, name: _Optional[str] = ..., paradigm: _Optional[_Union[Paradigm, str]] = ..., tasks: _Optional[_Iterable[_Union[Task, str]]] = ..., description: _Optional[str] = ..., hyperparameters: _Optional[_Iterable[_Union[Hyperparameter, _Mapping]]] = ...) -> None: ...

class ListAlgorithmsRequest(_message.Message):
    __slots__ = ("paradigm",)
    PARADIGM_FIELD_NUMBER: _ClassVar[int]
    paradigm: Paradigm
    def __init__(self, paradigm: _Optional[_Union[Paradigm, str]] = ...) -> None: ...

class ListAlgorithmsResponse(_message.Message):
    __slots__ = ("algorithms",)
    ALGORITHMS_FIELD_NUMBER: _ClassVar[int]
    algorithms: _containers.RepeatedCompositeFieldContainer[Algorithm]
    def __init__(self, algorithms: _Optional[_Iterable[_Union[Algorithm, _Mapping]]] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("dataset", "algorithm", "hyperparameters", "model_name", "task", "device", "seed", "test_fraction", "train_size", "world_size", "column_inputs", "image_features")
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_INPUTS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    algorithm: str
    hyperparameters: _containers.MessageMap[str, ParamValue]
    model_name: str
    task: Task
    device: Device
    seed: int
    test_fraction: float
    train_size: int
    world_size: int
    column_inputs: bool
    image_features: str
    def __init__(self, dataset: _Optional[str] = ..., algorithm: _Optional[str] = ..., hyperparameters: _Optional[_Mapping[str, ParamValue]] = ..., model_name: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., device: _Optional[_Union[Device, str]] = ..., seed: _Optional[int] = ..., test_fraction: _Optional[float] = ..., train_size: _Optional[int] = ..., world_size: _Optional[int] = ..., column_inputs: _Optional[bool] = ..., image_features: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "kind", "state", "dataset", "algorithm", "paradigm", "model_name", "model_version", "error", "progress", "metrics", "hyperparameters", "created_at", "started_at", "finished_at", "device", "task", "world_size")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PARADIGM_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: JobKind
    state: JobState
    dataset: str
    algorithm: str
    paradigm: Paradigm
    model_name: str
    model_version: str
    error: str
    progress: float
    metrics: _containers.ScalarMap[str, float]
    hyperparameters: _containers.MessageMap[str, ParamValue]
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    device: str
    task: Task
    world_size: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[JobKind, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., dataset: _Optional[str] = ..., algorithm: _Optional[str] = ..., paradigm: _Optional[_Union[Paradigm, str]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., error: _Optional[str] = ..., progress: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., hyperparameters: _Optional[_Mapping[str, ParamValue]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., device: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., world_size: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "sequence", "time", "state", "stage", "message", "epoch", "epochs", "metrics", "progress", "job")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sequence: int
    time: _timestamp_pb2.Timestamp
    state: JobState
    stage: str
    message: str
    epoch: int
    epochs: int
    metrics: _containers.ScalarMap[str, float]
    progress: float
    job: Job
    def __init__(self, job_id: _Optional[str] = ..., sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., stage: _Optional[str] = ..., message: _Optional[str] = ..., epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., progress: _Optional[float] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "version", "paradigm", "algorithm", "task", "dataset", "dataset_fingerprint", "inputs", "outputs", "metrics", "hyperparameters", "parity_max_abs_error", "onnx_bytes", "parameter_count", "checksum", "library_versions", "created_at", "latest", "training_cost", "aliases", "mlflow_run_id")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    class LibraryVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARADIGM_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PARITY_MAX_ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    ONNX_BYTES_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    TRAINING_COST_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    paradigm: Paradigm
    algorithm: str
    task: Task
    dataset: str
    dataset_fingerprint: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    metrics: _containers.ScalarMap[str, float]
    hyperparameters: _containers.MessageMap[str, ParamValue]
    parity_max_abs_error: float
    onnx_bytes: int
    parameter_count: int
    checksum: str
    library_versions: _containers.ScalarMap[str, str]
    created_at: _timestamp_pb2.Timestamp
    latest: bool
    training_cost: Cost
    aliases: _containers.RepeatedScalarFieldContainer[str]
    mlflow_run_id: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., paradigm: _Optional[_Union[Paradigm, str]] = ..., algorithm: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., dataset: _Optional[str] = ..., dataset_fingerprint: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., hyperparameters: _Optional[_Mapping[str, ParamValue]] = ..., parity_max_abs_error: _Optional[float] = ..., onnx_bytes: _Optional[int] = ..., parameter_count: _Optional[int] = ..., checksum: _Optional[str] = ..., library_versions: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latest: _Optional[bool] = ..., training_cost: _Optional[_Union[Cost, _Mapping]] = ..., aliases: _Optional[_Iterable[str]] = ..., mlflow_run_id: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("name", "latest_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LATEST_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    latest_only: bool
    def __init__(self, name: _Optional[str] = ..., latest_only: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name", "version", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, versions: _Optional[_Iterable[str]] = ...) -> None: ...

class ImportModelHeader(_message.Message):
    __slots__ = ("name", "format", "paradigm", "task", "n_features", "trusted_types")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PARADIGM_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_TYPES_FIELD_NUMBER: _ClassVar[int]
    name: str
    format: ModelFormat
    paradigm: Paradigm
    task: Task
    n_features: int
    trusted_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., format: _Optional[_Union[ModelFormat, str]] = ..., paradigm: _Optional[_Union[Paradigm, str]] = ..., task: _Optional[_Union[Task, str]] = ..., n_features: _Optional[int] = ..., trusted_types: _Optional[_Iterable[str]] = ...) -> None: ...

class ImportModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ImportModelHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[ImportModelHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ExportModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ExportModelResponse(_message.Message):
    __slots__ = ("model", "chunk")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    model: Model
    chunk: bytes
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("name", "version", "dataset", "n_repeats", "max_rows", "seed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    N_REPEATS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    dataset: str
    n_repeats: int
    max_rows: int
    seed: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., dataset: _Optional[str] = ..., n_repeats: _Optional[int] = ..., max_rows: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class FeatureImportance(_message.Message):
    __slots__ = ("feature", "importance_mean", "importance_std", "native")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_MEAN_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_STD_FIELD_NUMBER: _ClassVar[int]
    NATIVE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    importance_mean: float
    importance_std: float
    native: float
    def __init__(self, feature: _Optional[str] = ..., importance_mean: _Optional[float] = ..., importance_std: _Optional[float] = ..., native: _Optional[float] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("model", "dataset", "rows", "metric", "baseline_score", "features", "native_kind", "seconds", "cost")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    BASELINE_SCORE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NATIVE_KIND_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    model: Model
    dataset: str
    rows: int
    metric: str
    baseline_score: float
    features: _containers.RepeatedCompositeFieldContainer[FeatureImportance]
    native_kind: str
    seconds: float
    cost: Cost
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., dataset: _Optional[str] = ..., rows: _Optional[int] = ..., metric: _Optional[str] = ..., baseline_score: _Optional[float] = ..., features: _Optional[_Iterable[_Union[FeatureImportance, _Mapping]]] = ..., native_kind: _Optional[str] = ..., seconds: _Optional[float] = ..., cost: _Optional[_Union[Cost, _Mapping]] = ...) -> None: ...

class GetCostReportRequest(_message.Message):
    __slots__ = ("model_name",)
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    def __init__(self, model_name: _Optional[str] = ...) -> None: ...

class Cost(_message.Message):
    __slots__ = ("device_seconds", "joules", "dollars", "energy_source")
    DEVICE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    JOULES_FIELD_NUMBER: _ClassVar[int]
    DOLLARS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    device_seconds: float
    joules: float
    dollars: float
    energy_source: str
    def __init__(self, device_seconds: _Optional[float] = ..., joules: _Optional[float] = ..., dollars: _Optional[float] = ..., energy_source: _Optional[str] = ...) -> None: ...

class ServingCost(_message.Message):
    __slots__ = ("predictions", "requests", "total", "per_1k_predictions")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PER_1K_PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: int
    requests: int
    total: Cost
    per_1k_predictions: Cost
    def __init__(self, predictions: _Optional[int] = ..., requests: _Optional[int] = ..., total: _Optional[_Union[Cost, _Mapping]] = ..., per_1k_predictions: _Optional[_Union[Cost, _Mapping]] = ...) -> None: ...

class ModelCost(_message.Message):
    __slots__ = ("name", "version", "paradigm", "algorithm", "device", "serving", "training", "training_device")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARADIGM_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DEVICE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    paradigm: Paradigm
    algorithm: str
    device: str
    serving: ServingCost
    training: Cost
    training_device: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., paradigm: _Optional[_Union[Paradigm, str]] = ..., algorithm: _Optional[str] = ..., device: _Optional[str] = ..., serving: _Optional[_Union[ServingCost, _Mapping]] = ..., training: _Optional[_Union[Cost, _Mapping]] = ..., training_device: _Optional[str] = ...) -> None: ...

class ParadigmCost(_message.Message):
    __slots__ = ("paradigm", "device", "serving", "training", "models")
    PARADIGM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    paradigm: Paradigm
    device: str
    serving: ServingCost
    training: Cost
    models: int
    def __init__(self, paradigm: _Optional[_Union[Paradigm, str]] = ..., device: _Optional[str] = ..., serving: _Optional[_Union[ServingCost, _Mapping]] = ..., training: _Optional[_Union[Cost, _Mapping]] = ..., models: _Optional[int] = ...) -> None: ...

class CostReport(_message.Message):
    __slots__ = ("models", "paradigms", "serving_since", "price_per_device_hour")
    class PricePerDeviceHourEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PARADIGMS_FIELD_NUMBER: _ClassVar[int]
    SERVING_SINCE_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_DEVICE_HOUR_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelCost]
    paradigms: _containers.RepeatedCompositeFieldContainer[ParadigmCost]
    serving_since: _timestamp_pb2.Timestamp
    price_per_device_hour: _containers.ScalarMap[str, float]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelCost, _Mapping]]] = ..., paradigms: _Optional[_Iterable[_Union[ParadigmCost, _Mapping]]] = ..., serving_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., price_per_device_hour: _Optional[_Mapping[str, float]] = ...) -> None: ...

class PromotionGates(_message.Message):
    __slots__ = ("require_parity", "metric_epsilon", "metric", "max_p99_ms", "max_joules_per_1k", "probe_requests")
    REQUIRE_PARITY_FIELD_NUMBER: _ClassVar[int]
    METRIC_EPSILON_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_JOULES_PER_1K_FIELD_NUMBER: _ClassVar[int]
    PROBE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    require_parity: bool
    metric_epsilon: float
    metric: str
    max_p99_ms: float
    max_joules_per_1k: float
    probe_requests: int
    def __init__(self, require_parity: _Optional[bool] = ..., metric_epsilon: _Optional[float] = ..., metric: _Optional[str] = ..., max_p99_ms: _Optional[float] = ..., max_joules_per_1k: _Optional[float] = ..., probe_requests: _Optional[int] = ...) -> None: ...

class SetAliasRequest(_message.Message):
    __slots__ = ("name", "version", "alias", "gates", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    alias: str
    gates: PromotionGates
    note: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., alias: _Optional[str] = ..., gates: _Optional[_Union[PromotionGates, _Mapping]] = ..., note: _Optional[str] = ...) -> None: ...

class DeleteAliasRequest(_message.Message):
    __slots__ = ("name", "alias", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    note: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class AliasChange(_message.Message):
    __slots__ = ("name", "alias", "version", "previous", "at", "evidence_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    version: str
    previous: str
    at: _timestamp_pb2.Timestamp
    evidence_json: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[str] = ..., previous: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., evidence_json: _Optional[str] = ...) -> None: ...

class ModelAlias(_message.Message):
    __slots__ = ("name", "alias", "version", "updated_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    version: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAliasesRequest(_message.Message):
    __slots__ = ("name", "alias")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class ListAliasesResponse(_message.Message):
    __slots__ = ("aliases", "history")
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    aliases: _containers.RepeatedCompositeFieldContainer[ModelAlias]
    history: _containers.RepeatedCompositeFieldContainer[AliasChange]
    def __init__(self, aliases: _Optional[_Iterable[_Union[ModelAlias, _Mapping]]] = ..., history: _Optional[_Iterable[_Union[AliasChange, _Mapping]]] = ...) -> None: ...

class CascadeGoal(_message.Message):
    __slots__ = ("target_accuracy", "max_dollars_per_1k", "accuracy_within_then")
    TARGET_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MAX_DOLLARS_PER_1K_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_WITHIN_THEN_FIELD_NUMBER: _ClassVar[int]
    target_accuracy: float
    max_dollars_per_1k: float
    accuracy_within_then: float
    def __init__(self, target_accuracy: _Optional[float] = ..., max_dollars_per_1k: _Optional[float] = ..., accuracy_within_then: _Optional[float] = ...) -> None: ...

class CreateCascadeRequest(_message.Message):
    __slots__ = ("name", "first", "then", "goal", "max_rows")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    THEN_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    name: str
    first: str
    then: str
    goal: CascadeGoal
    max_rows: int
    def __init__(self, name: _Optional[str] = ..., first: _Optional[str] = ..., then: _Optional[str] = ..., goal: _Optional[_Union[CascadeGoal, _Mapping]] = ..., max_rows: _Optional[int] = ...) -> None: ...

class CascadePoint(_message.Message):
    __slots__ = ("threshold", "escalated", "accuracy", "dollars_per_1k", "device_seconds_per_1k", "joules_per_1k", "agreement")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ESCALATED_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    DOLLARS_PER_1K_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SECONDS_PER_1K_FIELD_NUMBER: _ClassVar[int]
    JOULES_PER_1K_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    escalated: float
    accuracy: float
    dollars_per_1k: float
    device_seconds_per_1k: float
    joules_per_1k: float
    agreement: float
    def __init__(self, threshold: _Optional[float] = ..., escalated: _Optional[float] = ..., accuracy: _Optional[float] = ..., dollars_per_1k: _Optional[float] = ..., device_seconds_per_1k: _Optional[float] = ..., joules_per_1k: _Optional[float] = ..., agreement: _Optional[float] = ...) -> None: ...

class CascadeStageCost(_message.Message):
    __slots__ = ("dollars_per_1k", "device_seconds_per_1k", "joules_per_1k", "batch_size")
    DOLLARS_PER_1K_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SECONDS_PER_1K_FIELD_NUMBER: _ClassVar[int]
    JOULES_PER_1K_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    dollars_per_1k: float
    device_seconds_per_1k: float
    joules_per_1k: float
    batch_size: int
    def __init__(self, dollars_per_1k: _Optional[float] = ..., device_seconds_per_1k: _Optional[float] = ..., joules_per_1k: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class Cascade(_message.Message):
    __slots__ = ("name", "version", "first", "first_version", "then", "then_version", "target_accuracy", "max_dollars_per_1k", "threshold", "target_met", "dataset", "calibration_rows", "chosen", "first_alone", "then_alone", "first_cost", "then_cost", "curve", "evaluation", "created_at", "accuracy_within_then")
    class EvaluationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    FIRST_VERSION_FIELD_NUMBER: _ClassVar[int]
    THEN_FIELD_NUMBER: _ClassVar[int]
    THEN_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MAX_DOLLARS_PER_1K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_MET_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_ROWS_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    FIRST_ALONE_FIELD_NUMBER: _ClassVar[int]
    THEN_ALONE_FIELD_NUMBER: _ClassVar[int]
    FIRST_COST_FIELD_NUMBER: _ClassVar[int]
    THEN_COST_FIELD_NUMBER: _ClassVar[int]
    CURVE_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_WITHIN_THEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    first: str
    first_version: str
    then: str
    then_version: str
    target_accuracy: float
    max_dollars_per_1k: float
    threshold: float
    target_met: bool
    dataset: str
    calibration_rows: int
    chosen: CascadePoint
    first_alone: CascadePoint
    then_alone: CascadePoint
    first_cost: CascadeStageCost
    then_cost: CascadeStageCost
    curve: _containers.RepeatedCompositeFieldContainer[CascadePoint]
    evaluation: _containers.ScalarMap[str, float]
    created_at: _timestamp_pb2.Timestamp
    accuracy_within_then: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., first: _Optional[str] = ..., first_version: _Optional[str] = ..., then: _Optional[str] = ..., then_version: _Optional[str] = ..., target_accuracy: _Optional[float] = ..., max_dollars_per_1k: _Optional[float] = ..., threshold: _Optional[float] = ..., target_met: _Optional[bool] = ..., dataset: _Optional[str] = ..., calibration_rows: _Optional[int] = ..., chosen: _Optional[_Union[CascadePoint, _Mapping]] = ..., first_alone: _Optional[_Union[CascadePoint, _Mapping]] = ..., then_alone: _Optional[_Union[CascadePoint, _Mapping]] = ..., first_cost: _Optional[_Union[CascadeStageCost, _Mapping]] = ..., then_cost: _Optional[_Union[CascadeStageCost, _Mapping]] = ..., curve: _Optional[_Iterable[_Union[CascadePoint, _Mapping]]] = ..., evaluation: _Optional[_Mapping[str, float]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., accuracy_within_then: _Optional[float] = ...) -> None: ...

class GetCascadeRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ListCascadesRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListCascadesResponse(_message.Message):
    __slots__ = ("cascades",)
    CASCADES_FIELD_NUMBER: _ClassVar[int]
    cascades: _containers.RepeatedCompositeFieldContainer[Cascade]
    def __init__(self, cascades: _Optional[_Iterable[_Union[Cascade, _Mapping]]] = ...) -> None: ...

class RecalibrateCascadeRequest(_message.Message):
    __slots__ = ("name", "goal", "max_rows")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    name: str
    goal: CascadeGoal
    max_rows: int
    def __init__(self, name: _Optional[str] = ..., goal: _Optional[_Union[CascadeGoal, _Mapping]] = ..., max_rows: _Optional[int] = ...) -> None: ...

class DeleteCascadeRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeleteCascadeResponse(_message.Message):
    __slots__ = ("deleted_versions",)
    DELETED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    deleted_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted_versions: _Optional[_Iterable[str]] = ...) -> None: ...

class SetShadowRequest(_message.Message):
    __slots__ = ("name", "alias", "shadow_model", "shadow_version", "sample_rate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MODEL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    shadow_model: str
    shadow_version: str
    sample_rate: float
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., shadow_model: _Optional[str] = ..., shadow_version: _Optional[str] = ..., sample_rate: _Optional[float] = ...) -> None: ...

class ShadowConfig(_message.Message):
    __slots__ = ("name", "alias", "shadow_model", "shadow_version", "sample_rate", "updated_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MODEL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    shadow_model: str
    shadow_version: str
    sample_rate: float
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., shadow_model: _Optional[str] = ..., shadow_version: _Optional[str] = ..., sample_rate: _Optional[float] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ClearShadowRequest(_message.Message):
    __slots__ = ("name", "alias")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class ClearShadowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListShadowsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListShadowsResponse(_message.Message):
    __slots__ = ("shadows",)
    SHADOWS_FIELD_NUMBER: _ClassVar[int]
    shadows: _containers.RepeatedCompositeFieldContainer[ShadowConfig]
    def __init__(self, shadows: _Optional[_Iterable[_Union[ShadowConfig, _Mapping]]] = ...) -> None: ...

class GetShadowReportRequest(_message.Message):
    __slots__ = ("name", "alias")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class ShadowRoleFigures(_message.Message):
    __slots__ = ("p50_seconds", "p99_seconds", "cost_per_1k", "feedback_rows", "correct_rows", "accuracy")
    class CostPer1kEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P99_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1K_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_ROWS_FIELD_NUMBER: _ClassVar[int]
    CORRECT_ROWS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    p50_seconds: float
    p99_seconds: float
    cost_per_1k: _containers.ScalarMap[str, float]
    feedback_rows: int
    correct_rows: int
    accuracy: float
    def __init__(self, p50_seconds: _Optional[float] = ..., p99_seconds: _Optional[float] = ..., cost_per_1k: _Optional[_Mapping[str, float]] = ..., feedback_rows: _Optional[int] = ..., correct_rows: _Optional[int] = ..., accuracy: _Optional[float] = ...) -> None: ...

class ShadowPair(_message.Message):
    __slots__ = ("primary", "shadow", "sampled", "shadowed", "dropped", "failed", "compared_rows", "agreeing_rows", "agreement", "primary_figures", "shadow_figures")
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    SHADOWED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    COMPARED_ROWS_FIELD_NUMBER: _ClassVar[int]
    AGREEING_ROWS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIGURES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIGURES_FIELD_NUMBER: _ClassVar[int]
    primary: str
    shadow: str
    sampled: int
    shadowed: int
    dropped: int
    failed: int
    compared_rows: int
    agreeing_rows: int
    agreement: float
    primary_figures: ShadowRoleFigures
    shadow_figures: ShadowRoleFigures
    def __init__(self, primary: _Optional[str] = ..., shadow: _Optional[str] = ..., sampled: _Optional[int] = ..., shadowed: _Optional[int] = ..., dropped: _Optional[int] = ..., failed: _Optional[int] = ..., compared_rows: _Optional[int] = ..., agreeing_rows: _Optional[int] = ..., agreement: _Optional[float] = ..., primary_figures: _Optional[_Union[ShadowRoleFigures, _Mapping]] = ..., shadow_figures: _Optional[_Union[ShadowRoleFigures, _Mapping]] = ...) -> None: ...

class ShadowReport(_message.Message):
    __slots__ = ("name", "alias", "shadow", "pairs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    shadow: ShadowConfig
    pairs: _containers.RepeatedCompositeFieldContainer[ShadowPair]
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., shadow: _Optional[_Union[ShadowConfig, _Mapping]] = ..., pairs: _Optional[_Iterable[_Union[ShadowPair, _Mapping]]] = ...) -> None: ...

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("request_id", "labels")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ("rows", "primary_correct", "shadow_correct")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_CORRECT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_CORRECT_FIELD_NUMBER: _ClassVar[int]
    rows: int
    primary_correct: int
    shadow_correct: int
    def __init__(self, rows: _Optional[int] = ..., primary_correct: _Optional[int] = ..., shadow_correct: _Optional[int] = ...) -> None: ...
