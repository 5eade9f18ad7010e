"""paradigm.v1 services: datasets, algorithms, training jobs and models. Thin: each RPC
converts its message, calls the one object that does the work, and converts back."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeAlias

import grpc.aio

from service.api import convert
from service.api.codec import check_strings
from service.datasets.layout import DEFAULT_IMAGE_SIZE
from service.datasets.store import DatasetStore, spool_stream
from service.errors import InvalidArgument
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as pb_grpc
from service.registry.store import ModelRegistry, validate_model_name
from service.serving.promotion import Promoter
from service.training import catalog, uploads
from service.training.explain import Explainer
from service.training.jobs import JobManager
from service.training.validation import ImportRequest, TrainingRequest

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
EXPORT_CHUNK_BYTES = 1 << 20
DATASET_FORMATS = {
    pb.DATASET_FORMAT_NPZ: "npz",
    pb.DATASET_FORMAT_CSV: "csv",
    pb.DATASET_FORMAT_PARQUET: "parquet",
    pb.DATASET_FORMAT_IMAGES: "images",
}
MODEL_FORMATS = {pb.MODEL_FORMAT_ONNX: "onnx", pb.MODEL_FORMAT_SKOPS: "skops"}


async def _split_upload(
    requests: AsyncIterator[pb.UploadDatasetRequest] | AsyncIterator[pb.ImportModelRequest],
    what: str,
) -> tuple[object, AsyncIterator[bytes]]:
    """First message must be the header; the rest are chunks, returned as a byte stream."""
    first: Any = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("part") != "header":
        raise InvalidArgument(f"the first message of {what} must be its header")
    check_strings(first.header, "header.")

    async def chunks() -> AsyncIterator[bytes]:
        async for message in requests:
            if message.WhichOneof("part") != "chunk":
                raise InvalidArgument(f"{what}: only the first message may be a header")
            yield message.chunk

    return first.header, chunks()


class DatasetServicer(pb_grpc.DatasetServiceServicer):
    def __init__(self, store: DatasetStore) -> None:
        self._store = store

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: Context
    ) -> pb.ListDatasetsResponse:
        return pb.ListDatasetsResponse(
            datasets=[convert.dataset_to_proto(info) for info in self._store.list()]
        )

    async def GetDataset(self, request: pb.GetDatasetRequest, context: Context) -> pb.Dataset:
        check_strings(request)
        dataset = convert.dataset_to_proto(self._store.get(request.name))
        if request.contact_sheet:
            dataset.contact_sheet = await asyncio.to_thread(self._store.contact_sheet, request.name)
        return dataset

    async def UploadDataset(
        self, request_iterator: AsyncIterator[pb.UploadDatasetRequest], context: Context
    ) -> pb.Dataset:
        header, chunks = await _split_upload(request_iterator, "UploadDataset")
        assert isinstance(header, pb.UploadDatasetHeader)
        if header.format not in DATASET_FORMATS:
            raise InvalidArgument(
                "header.format must be DATASET_FORMAT_NPZ, DATASET_FORMAT_CSV, "
                "DATASET_FORMAT_PARQUET or DATASET_FORMAT_IMAGES"
            )
        self._store.check_new_name(header.name)
        task = convert.task_name(header.task)
        file_format = DATASET_FORMATS[header.format]
        kinds = convert.column_kinds(header.column_kinds)
        if kinds and file_format in ("npz", "images"):
            raise InvalidArgument(
                f"column_kinds are for CSV and Parquet uploads, not {file_format} uploads"
            )
        if (header.image_size or header.grayscale) and file_format != "images":
            raise InvalidArgument(
                "image_size and grayscale are for image archives (DATASET_FORMAT_IMAGES)"
            )
        if file_format == "images" and task not in ("", "classification"):
            raise InvalidArgument(
                f"image archives are classification datasets (their folders are the classes), "
                f"not {task}"
            )
        spool = self._store.new_spool()
        try:
            await self._store.receive(chunks, spool)
            if file_format == "npz":
                info = await asyncio.to_thread(
                    self._store.store_upload,
                    spool,
                    name=header.name,
                    file_format=file_format,
                    task=task,
                    description=header.description,
                )
            elif file_format == "images":
                info = await self._store.ingest_images(
                    spool,
                    name=header.name,
                    image_size=header.image_size or DEFAULT_IMAGE_SIZE,
                    grayscale=header.grayscale,
                    description=header.description,
                )
            else:
                info = await self._store.ingest_table(
                    spool,
                    name=header.name,
                    file_format=file_format,
                    label_column=header.label_column,
                    column_kinds=kinds,
                    task=task,
                    description=header.description,
                )
        finally:
            spool.unlink(missing_ok=True)
        return convert.dataset_to_proto(info)

    async def GenerateDataset(
        self, request: pb.GenerateDatasetRequest, context: Context
    ) -> pb.Dataset:
        check_strings(request)
        info = await self._store.generate(
            name=request.name,
            generator=request.generator or "digits_scaled",
            n_samples=request.n_samples,
            image_size=request.image_size or 28,
            seed=request.seed,
        )
        return convert.dataset_to_proto(info)

    async def DeleteDataset(
        self, request: pb.DeleteDatasetRequest, context: Context
    ) -> pb.DeleteDatasetResponse:
        check_strings(request)
        self._store.delete(request.name)
        return pb.DeleteDatasetResponse()


class AlgorithmServicer(pb_grpc.AlgorithmServiceServicer):
    async def ListAlgorithms(
        self, request: pb.ListAlgorithmsRequest, context: Context
    ) -> pb.ListAlgorithmsResponse:
        wanted = convert.paradigm_name(request.paradigm)
        return pb.ListAlgorithmsResponse(
            algorithms=[
                convert.algorithm_to_proto(algorithm)
                for algorithm in catalog.ALGORITHMS.values()
                if not wanted or algorithm.paradigm == wanted
            ]
        )


class TrainingServicer(pb_grpc.TrainingServiceServicer):
    def __init__(self, jobs: JobManager) -> None:
        self._jobs = jobs

    async def StartTraining(self, request: pb.StartTrainingRequest, context: Context) -> pb.Job:
        check_strings(request)
        job = await self._jobs.start_training(
            TrainingRequest(
                dataset=request.dataset,
                algorithm=request.algorithm,
                hyperparameters=convert.params_from_proto(request.hyperparameters),
                model_name=request.model_name,
                task=convert.task_name(request.task),
                device=convert.device_name(request.device),
                seed=request.seed if request.HasField("seed") else None,
                test_fraction=request.test_fraction,
                train_size=request.train_size,
                world_size=request.world_size,
                column_inputs=request.column_inputs,
                image_features=request.image_features,
            )
        )
        return convert.job_to_proto(job)

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        check_strings(request)
        return convert.job_to_proto(self._jobs.get(request.id))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        return pb.ListJobsResponse(jobs=[convert.job_to_proto(job) for job in self._jobs.list()])

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Context
    ) -> AsyncIterator[pb.JobEvent]:
        check_strings(request)
        job = self._jobs.get(request.id)
        async for event in self._jobs.watch(request.id):
            yield convert.event_to_proto(job, event)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.Job:
        check_strings(request)
        return convert.job_to_proto(await self._jobs.cancel(request.id))


class ModelServicer(pb_grpc.ModelServiceServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        jobs: JobManager,
        explainer: Explainer,
        uploads: Path,
        max_bytes: int,
        promoter: Promoter,
    ):
        self._registry = registry
        self._promoter = promoter
        self._jobs = jobs
        self._explainer = explainer
        self._uploads = uploads
        self._max_bytes = max_bytes
        uploads.mkdir(parents=True, exist_ok=True)
        for leftover in uploads.glob("import-*"):  # imports a crash cut short
            leftover.unlink(missing_ok=True)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        check_strings(request)
        # One scan, off the loop: it reads every manifest of the metadata store. Each name's
        # versions come oldest first, so the last one seen is the latest.
        manifests = await asyncio.to_thread(self._registry.manifests, request.name)
        aliases = await asyncio.to_thread(self._aliases_by_version, request.name)
        newest = {m.name: m.version for m in manifests}
        if request.latest_only:
            manifests = [m for m in manifests if newest[m.name] == m.version]
        return pb.ListModelsResponse(
            models=[
                convert.model_to_proto(
                    m,
                    latest=newest.get(m.name) == m.version,
                    aliases=aliases.get((m.name, m.version), []),
                )
                for m in manifests
            ]
        )

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.Model:
        check_strings(request)
        manifest = await asyncio.to_thread(self._registry.get, request.name, request.version)
        aliases = await asyncio.to_thread(self._aliases_by_version, request.name)
        return convert.model_to_proto(
            manifest,
            latest=self._registry.is_latest(manifest),
            aliases=aliases.get((manifest.name, manifest.version), []),
        )

    def _aliases_by_version(self, name: str) -> dict[tuple[str, str], list[str]]:
        by_version: dict[tuple[str, str], list[str]] = {}
        for alias in self._registry.aliases(name):
            by_version.setdefault((alias.name, alias.version), []).append(alias.alias)
        return by_version

    async def DeleteModel(
        self, request: pb.DeleteModelRequest, context: Context
    ) -> pb.DeleteModelResponse:
        check_strings(request)
        # In a thread: deleting from S3 is a network round trip per file.
        removed = await asyncio.to_thread(
            functools.partial(
                self._registry.delete, request.name, request.version, force=request.force
            )
        )
        return pb.DeleteModelResponse(versions=removed)

    async def SetAlias(self, request: pb.SetAliasRequest, context: Context) -> pb.AliasChange:
        check_strings(request)
        event = await self._promoter.promote(
            request.name,
            request.version,
            request.alias,
            convert.gates_from_proto(request.gates),
            note=request.note,
        )
        return convert.alias_change_to_proto(event)

    async def DeleteAlias(self, request: pb.DeleteAliasRequest, context: Context) -> pb.AliasChange:
        check_strings(request)
        evidence = {"note": request.note} if request.note else {"reason": "removed"}
        event = await asyncio.to_thread(
            self._registry.delete_alias, request.name, request.alias, evidence
        )
        return convert.alias_change_to_proto(event)

    async def ListAliases(
        self, request: pb.ListAliasesRequest, context: Context
    ) -> pb.ListAliasesResponse:
        check_strings(request)
        if request.alias and not request.name:
            raise InvalidArgument("name the model whose alias to list")
        aliases = await asyncio.to_thread(self._registry.aliases, request.name)
        history = (
            await asyncio.to_thread(self._registry.alias_history, request.name, request.alias)
            if request.name
            else []
        )
        if request.name and not aliases and not history:
            # An unknown name is NOT_FOUND, as everywhere; a known one may have no aliases.
            await asyncio.to_thread(self._registry.get, request.name)
        return pb.ListAliasesResponse(
            aliases=[
                convert.alias_to_proto(a)
                for a in aliases
                if not request.alias or a.alias == request.alias
            ],
            history=[convert.alias_change_to_proto(e) for e in history],
        )

    async def ImportModel(
        self, request_iterator: AsyncIterator[pb.ImportModelRequest], context: Context
    ) -> pb.Job:
        header, chunks = await _split_upload(request_iterator, "ImportModel")
        assert isinstance(header, pb.ImportModelHeader)
        if header.format not in MODEL_FORMATS:
            raise InvalidArgument("header.format must be MODEL_FORMAT_ONNX or MODEL_FORMAT_SKOPS")
        validate_model_name(header.name)
        if header.n_features < 0:
            raise InvalidArgument(
                f"header.n_features is {header.n_features}; send the model's feature count, "
                "or 0 to take it from the file"
            )
        paradigm = convert.paradigm_name(header.paradigm)
        task = convert.task_name(header.task)
        file_format = MODEL_FORMATS[header.format]
        spool = self._uploads / f"import-{uuid.uuid4().hex[:12]}.{file_format}"
        try:
            await spool_stream(chunks, spool, self._max_bytes, "import")
            # Cheap checks of the file's outer structure now, so that a file that is not
            # ONNX (or skops) at all is refused at once instead of by a failed job.
            await asyncio.to_thread(uploads.check_file, spool, file_format)
            job = await self._jobs.start_import(
                ImportRequest(
                    source=spool,
                    model_name=header.name,
                    file_format=file_format,
                    paradigm=paradigm,
                    task=task,
                    n_features=header.n_features,
                    trusted_types=list(header.trusted_types),
                )
            )
        except BaseException:
            spool.unlink(missing_ok=True)
            raise
        return convert.job_to_proto(job)

    async def ExportModel(
        self, request: pb.ExportModelRequest, context: Context
    ) -> AsyncIterator[pb.ExportModelResponse]:
        check_strings(request)
        manifest = self._registry.get(request.name, request.version)
        # Off the loop: with artifacts on S3 this downloads the file first.
        path = await asyncio.to_thread(self._registry.model_path, manifest)
        first = True
        with path.open("rb") as handle:
            while chunk := handle.read(EXPORT_CHUNK_BYTES):
                if first:
                    model = convert.model_to_proto(
                        manifest, latest=self._registry.is_latest(manifest)
                    )
                    yield pb.ExportModelResponse(model=model, chunk=chunk)
                    first = False
                else:
                    yield pb.ExportModelResponse(chunk=chunk)

    async def Explain(self, request: pb.ExplainRequest, context: Context) -> pb.Explanation:
        check_strings(request)
        explanation = await self._explainer.explain(
            name=request.name,
            version=request.version,
            dataset=request.dataset,
            n_repeats=request.n_repeats,
            max_rows=request.max_rows,
            seed=request.seed,
            timeout=context.time_remaining(),
        )
        return convert.explanation_to_proto(
            explanation, latest=self._registry.is_latest(explanation.manifest)
        )
