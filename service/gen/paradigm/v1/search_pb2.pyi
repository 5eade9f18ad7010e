import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from service.gen.paradigm.v1 import paradigm_pb2 as _paradigm_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_STATE_UNSPECIFIED: _ClassVar[SearchState]
    SEARCH_STATE_RUNNING: _ClassVar[SearchState]
    SEARCH_STATE_SUCCEEDED: _ClassVar[SearchState]
    SEARCH_STATE_FAILED: _ClassVar[SearchState]
    SEARCH_STATE_CANCELLED: _ClassVar[SearchState]

class TrialState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIAL_STATE_UNSPECIFIED: _ClassVar[TrialState]
    TRIAL_STATE_RUNNING: _ClassVar[TrialState]
    TRIAL_STATE_SUCCEEDED: _ClassVar[TrialState]
    TRIAL_STATE_FAILED: _ClassVar[TrialState]
    TRIAL_STATE_PRUNED: _ClassVar[TrialState]
    TRIAL_STATE_CANCELLED: _ClassVar[TrialState]
SEARCH_STATE_UNSPECIFIED: SearchState
SEARCH_STATE_RUNNING: SearchState
SEARCH_STATE_SUCCEEDED: SearchState
SEARCH_STATE_FAILED: SearchState
SEARCH_STATE_CANCELLED: SearchState
TRIAL_STATE_UNSPECIFIED: TrialState
TRIAL_STATE_RUNNING: TrialState
TRIAL_STATE_SUCCEEDED: TrialState
TRIAL_STATE_FAILED: TrialState
TRIAL_STATE_PRUNED: TrialState
TRIAL_STATE_CANCELLED: TrialState

class SearchBudget(_message.Message):
    __slots__ = ("trials", "seconds", "dollars", "joules")
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    DOLLARS_FIELD_NUMBER: _ClassVar[int]
    JOULES_FIELD_NUMBER: _ClassVar[int]
    trials: int
    seconds: float
    dollars: float
    joules: float
    def __init__(self, trials: _Optional[int] = ..., seconds: _Optional[float] = ..., dollars: _Optional[float] = ..., joules: _Optional[float] = ...) -> None: ...

class StartSearchRequest(_message.Message):
    __slots__ = ("dataset", "algorithms", "budget", "metric", "seed", "parallelism", "pruner", "prune_threshold", "test_fraction", "device", "promote_alias", "promote_gates")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ALGORITHMS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PARALLELISM_FIELD_NUMBER: _ClassVar[int]
    PRUNER_FIELD_NUMBER: _ClassVar[int]
    PRUNE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_ALIAS_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_GATES_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    algorithms: _containers.RepeatedScalarFieldContainer[str]
    budget: SearchBudget
    metric: str
    seed: int
    parallelism: int
    pruner: str
    prune_threshold: float
    test_fraction: float
    device: _paradigm_pb2.Device
    promote_alias: str
    promote_gates: _paradigm_pb2.PromotionGates
    def __init__(self, dataset: _Optional[str] = ..., algorithms: _Optional[_Iterable[str]] = ..., budget: _Optional[_Union[SearchBudget, _Mapping]] = ..., metric: _Optional[str] = ..., seed: _Optional[int] = ..., parallelism: _Optional[int] = ..., pruner: _Optional[str] = ..., prune_threshold: _Optional[float] = ..., test_fraction: _Optional[float] = ..., device: _Optional[_Union[_paradigm_pb2.Device, str]] = ..., promote_alias: _Optional[str] = ..., promote_gates: _Optional[_Union[_paradigm_pb2.PromotionGates, _Mapping]] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("number", "state", "algorithm", "paradigm", "job_id", "hyperparameters", "value", "metrics", "model_name", "model_version", "error", "training_dollars", "training_joules", "epochs_reported")
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _paradigm_pb2.ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_paradigm_pb2.ParamValue, _Mapping]] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PARADIGM_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DOLLARS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_JOULES_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_REPORTED_FIELD_NUMBER: _ClassVar[int]
    number: int
    state: TrialState
    algorithm: str
    paradigm: _paradigm_pb2.Paradigm
    job_id: str
    hyperparameters: _containers.MessageMap[str, _paradigm_pb2.ParamValue]
    value: float
    metrics: _containers.ScalarMap[str, float]
    model_name: str
    model_version: str
    error: str
    training_dollars: float
    training_joules: float
    epochs_reported: int
    def __init__(self, number: _Optional[int] = ..., state: _Optional[_Union[TrialState, str]] = ..., algorithm: _Optional[str] = ..., paradigm: _Optional[_Union[_paradigm_pb2.Paradigm, str]] = ..., job_id: _Optional[str] = ..., hyperparameters: _Optional[_Mapping[str, _paradigm_pb2.ParamValue]] = ..., value: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., error: _Optional[str] = ..., training_dollars: _Optional[float] = ..., training_joules: _Optional[float] = ..., epochs_reported: _Optional[int] = ...) -> None: ...

class Search(_message.Message):
    __slots__ = ("id", "state", "dataset", "algorithms", "metric", "maximize", "budget", "seed", "trials_started", "seconds_spent", "dollars_spent", "joules_spent", "stop_reason", "best_trial", "best_value", "trials", "created_at", "finished_at", "study_storage", "study_name", "pruner", "promotion")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ALGORITHMS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MAXIMIZE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TRIALS_STARTED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SPENT_FIELD_NUMBER: _ClassVar[int]
    DOLLARS_SPENT_FIELD_NUMBER: _ClassVar[int]
    JOULES_SPENT_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    BEST_TRIAL_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STUDY_STORAGE_FIELD_NUMBER: _ClassVar[int]
    STUDY_NAME_FIELD_NUMBER: _ClassVar[int]
    PRUNER_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: SearchState
    dataset: str
    algorithms: _containers.RepeatedScalarFieldContainer[str]
    metric: str
    maximize: bool
    budget: SearchBudget
    seed: int
    trials_started: int
    seconds_spent: float
    dollars_spent: float
    joules_spent: float
    stop_reason: str
    best_trial: int
    best_value: float
    trials: _containers.RepeatedCompositeFieldContainer[Trial]
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    study_storage: str
    study_name: str
    pruner: str
    promotion: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[SearchState, str]] = ..., dataset: _Optional[str] = ..., algorithms: _Optional[_Iterable[str]] = ..., metric: _Optional[str] = ..., maximize: _Optional[bool] = ..., budget: _Optional[_Union[SearchBudget, _Mapping]] = ..., seed: _Optional[int] = ..., trials_started: _Optional[int] = ..., seconds_spent: _Optional[float] = ..., dollars_spent: _Optional[float] = ..., joules_spent: _Optional[float] = ..., stop_reason: _Optional[str] = ..., best_trial: _Optional[int] = ..., best_value: _Optional[float] = ..., trials: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., study_storage: _Optional[str] = ..., study_name: _Optional[str] = ..., pruner: _Optional[str] = ..., promotion: _Optional[str] = ...) -> None: ...

class GetSearchRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchSearchRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelSearchRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetLeaderboardRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ServingFigures(_message.Message):
    __slots__ = ("batch_size", "p50_ms", "p99_ms", "dollars_per_1000", "joules_per_1000", "requests")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    DOLLARS_PER_1000_FIELD_NUMBER: _ClassVar[int]
    JOULES_PER_1000_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    p50_ms: float
    p99_ms: float
    dollars_per_1000: float
    joules_per_1000: float
    requests: int
    def __init__(self, batch_size: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., dollars_per_1000: _Optional[float] = ..., joules_per_1000: _Optional[float] = ..., requests: _Optional[int] = ...) -> None: ...

class LeaderboardEntry(_message.Message):
    __slots__ = ("rank", "algorithm", "paradigm", "trial", "model_name", "model_version", "value", "ci_low", "ci_high", "fit_seconds", "training_device_seconds", "training_joules", "training_dollars", "model_bytes", "serving", "serving_error", "pareto", "hyperparameters")
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _paradigm_pb2.ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_paradigm_pb2.ParamValue, _Mapping]] = ...) -> None: ...
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PARADIGM_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    FIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DEVICE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_JOULES_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DOLLARS_FIELD_NUMBER: _ClassVar[int]
    MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    SERVING_ERROR_FIELD_NUMBER: _ClassVar[int]
    PARETO_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    rank: int
    algorithm: str
    paradigm: _paradigm_pb2.Paradigm
    trial: int
    model_name: str
    model_version: str
    value: float
    ci_low: float
    ci_high: float
    fit_seconds: float
    training_device_seconds: float
    training_joules: float
    training_dollars: float
    model_bytes: int
    serving: _containers.RepeatedCompositeFieldContainer[ServingFigures]
    serving_error: str
    pareto: bool
    hyperparameters: _containers.MessageMap[str, _paradigm_pb2.ParamValue]
    def __init__(self, rank: _Optional[int] = ..., algorithm: _Optional[str] = ..., paradigm: _Optional[_Union[_paradigm_pb2.Paradigm, str]] = ..., trial: _Optional[int] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., value: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., fit_seconds: _Optional[float] = ..., training_device_seconds: _Optional[float] = ..., training_joules: _Optional[float] = ..., training_dollars: _Optional[float] = ..., model_bytes: _Optional[int] = ..., serving: _Optional[_Iterable[_Union[ServingFigures, _Mapping]]] = ..., serving_error: _Optional[str] = ..., pareto: _Optional[bool] = ..., hyperparameters: _Optional[_Mapping[str, _paradigm_pb2.ParamValue]] = ...) -> None: ...

class Leaderboard(_message.Message):
    __slots__ = ("search_id", "dataset", "metric", "maximize", "entries", "final")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MAXIMIZE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    dataset: str
    metric: str
    maximize: bool
    entries: _containers.RepeatedCompositeFieldContainer[LeaderboardEntry]
    final: bool
    def __init__(self, search_id: _Optional[str] = ..., dataset: _Optional[str] = ..., metric: _Optional[str] = ..., maximize: _Optional[bool] = ..., entries: _Optional[_Iterable[_Union[LeaderboardEntry, _Mapping]]] = ..., final: _Optional[bool] = ...) -> None: ...
