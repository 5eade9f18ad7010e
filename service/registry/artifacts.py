"""Where the registry keeps model files: a directory (the default), or an S3 bucket.

One interface, ArtifactStore, two implementations. LocalArtifacts is today's layout,
<models_dir>/<name>/<version>/{model.onnx, manifest.json}, published by renaming a complete
staging directory into place. S3Artifacts keeps the same two files under
<prefix>/<name>/<version>/ in a bucket, and gives a server a local file to load by
downloading it once into a cache in its data directory, checked against the manifest's
sha256. boto3 is imported only by S3Artifacts: the default server never loads it.

Files are written before the metadata row that makes a version visible (service/registry/
store.py), so a crash here leaves at most files nobody refers to.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import signal
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from service.errors import FailedPrecondition, NotFound, ParadigmError, Unavailable
from service.registry.manifest import MANIFEST_FILE, MODEL_FILE, Manifest

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

# Test-only: tests/test_faults.py sets PARADIGM_FAULT_INJECT=<point> (for example
# "publish:after-rename") on a server subprocess, which then SIGKILLs itself at that point,
# so that a crash lands exactly where the recovery code must cope with it. Nobody sets it
# in production; reading one variable is nothing beside a publish's fsyncs. Defined here,
# beside the rename it brackets; service/registry/store.py re-exports it.
FAULT_VARIABLE = "PARADIGM_FAULT_INJECT"


def fault_point(point: str) -> None:
    """Test-only crash point: see FAULT_VARIABLE."""
    if os.environ.get(FAULT_VARIABLE) == point:
        log.warning("%s=%s: killing this process on purpose", FAULT_VARIABLE, point)
        os.kill(os.getpid(), signal.SIGKILL)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ArtifactStore(Protocol):
    """The files of published versions; every method is safe to call from several threads."""

    def describe(self) -> str:
        """Where the files are, for logs and error messages."""
        ...

    def put(self, name: str, version: str, staging: Path) -> None:
        """Stores staging's model.onnx and manifest.json as name/version.

        May move staging away (the local store renames it into place); withdraw gives it
        back. Not visible to anyone until the metadata row is committed.
        """
        ...

    def withdraw(self, name: str, version: str, staging: Path) -> None:
        """Undoes put after the commit failed; staging is left for the caller to remove."""
        ...

    def local_path(self, manifest: Manifest) -> Path:
        """A local model.onnx of the version; may download (call it off the event loop)."""
        ...

    def delete(self, name: str, version: str) -> None:
        """Removes the version's files (its metadata row is already gone)."""
        ...

    def forget(self, name: str, version: str) -> None:
        """Drops this server's local copies of a version deleted by another server."""
        ...


# ------------------------------------------------------------------------- directory


class LocalArtifacts:
    """<models_dir>/<name>/<version>/: a directory of this server's, or one shared by several."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        models_dir.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return str(self.models_dir)

    def version_dir(self, name: str, version: str) -> Path:
        return self.models_dir / name / version

    def put(self, name: str, version: str, staging: Path) -> None:
        target = self.version_dir(name, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        _fsync_tree(staging)
        fault_point("publish:before-rename")
        try:
            os.rename(staging, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # A shared directory on another file system (NFS) than the data directory:
            # copy into a hidden directory beside the target, then rename on that side.
            self._copy_in(staging, target)
        _fsync_directory(target.parent)

    @staticmethod
    def _copy_in(staging: Path, target: Path) -> None:
        incoming = target.parent / f".incoming-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(staging, incoming)
            _fsync_tree(incoming)
            os.rename(incoming, target)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise

    def withdraw(self, name: str, version: str, staging: Path) -> None:
        target = self.version_dir(name, version)
        if staging.exists():  # copied in (another file system): the staging is intact
            shutil.rmtree(target)
        else:
            os.rename(target, staging)

    def local_path(self, manifest: Manifest) -> Path:
        return self.version_dir(manifest.name, manifest.version) / MODEL_FILE

    def delete(self, name: str, version: str) -> None:
        directory = self.version_dir(name, version)
        # Renamed away first, so a crash mid-removal never leaves a numbered directory
        # without its model; the hidden name is skipped by everyone and swept at start.
        trash = directory.parent / f".deleted-{uuid.uuid4().hex[:8]}"
        if directory.exists():
            os.rename(directory, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def forget(self, name: str, version: str) -> None:
        """Nothing to drop: the files are read where they lie."""

    def sweep(self) -> None:
        """Removes what a crash left half-copied or half-deleted (single-server stores)."""
        for leftover in self.models_dir.glob("*/.*"):
            if leftover.name.startswith((".incoming-", ".deleted-")):
                shutil.rmtree(leftover, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    """Makes a rename into directory durable (the entry lives in the directory's data)."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


# -------------------------------------------------------------------------------- S3

_DOWNLOAD_CHUNK = 1 << 20
_ACCESS_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "AllAccessDisabled"}
)


class S3Artifacts:
    """s3://bucket/prefix on AWS or any S3-compatible endpoint; credentials as boto3 finds
    them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role)."""

    def __init__(self, url: str, endpoint_url: str = "", cache_dir: Path | None = None) -> None:
        import boto3
        from botocore.config import Config

        if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
            raise FailedPrecondition(f"artifacts_url {url!r} is not s3://bucket[/prefix]")
        bucket, _, prefix = url[5:].partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.cache_dir = cache_dir or Path("artifact-cache")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._where = url.rstrip("/") + (f" at {endpoint_url}" if endpoint_url else "")
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            # Bounded waits: an unreachable endpoint is reported in seconds, not minutes.
            config=Config(
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )
        # Fail the start, not the first publish, when the bucket or credentials are wrong.
        with self._errors("cannot use the artifact store", bucket_check=True):
            self._client.head_bucket(Bucket=self.bucket)

    def describe(self) -> str:
        return self._where

    def key(self, name: str, version: str, file: str) -> str:
        return "/".join(part for part in (self.prefix, name, version, file) if part)

    def put(self, name: str, version: str, staging: Path) -> None:
        with self._errors(f"could not store model {name!r} version {version}"):
            # The model first, its manifest last: a listing that shows the manifest shows
            # a complete version.
            for file in (MODEL_FILE, MANIFEST_FILE):
                with (staging / file).open("rb") as body:
                    self._client.put_object(
                        Bucket=self.bucket, Key=self.key(name, version, file), Body=body
                    )

    def withdraw(self, name: str, version: str, staging: Path) -> None:
        self._delete_objects(name, version)

    def local_path(self, manifest: Manifest) -> Path:
        name, version = manifest.name, manifest.version
        # The checksum in the path: a number reused after a crash (single-server metadata)
        # can never be served from an older copy.
        path = self.cache_dir / name / f"{version}-{manifest.checksum[:16]}" / MODEL_FILE
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.parent / f".download-{uuid.uuid4().hex[:8]}"
        try:
            with self._errors(f"could not fetch model {name!r} version {version}"):
                response = self._client.get_object(
                    Bucket=self.bucket, Key=self.key(name, version, MODEL_FILE)
                )
                with partial.open("wb") as handle:
                    for chunk in _chunks(response["Body"]):
                        handle.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
            actual = sha256_file(partial)
            if manifest.checksum and actual != manifest.checksum:
                raise FailedPrecondition(
                    f"model {name!r} version {version} in {self._where} does not match its "
                    f"manifest (sha256 {actual}, expected {manifest.checksum}): it was "
                    "changed or damaged after publishing; publish it again"
                )
            os.replace(partial, path)  # concurrent downloads: the last identical copy wins
        finally:
            partial.unlink(missing_ok=True)
        log.info("fetched %s version %s from %s", name, version, self._where)
        return path

    def delete(self, name: str, version: str) -> None:
        self._delete_objects(name, version)
        self.forget(name, version)

    def _delete_objects(self, name: str, version: str) -> None:
        with self._errors(f"could not delete model {name!r} version {version}"):
            self._client.delete_objects(
                Bucket=self.bucket,
                Delete={
                    "Objects": [
                        {"Key": self.key(name, version, file)}
                        for file in (MODEL_FILE, MANIFEST_FILE)
                    ],
                    "Quiet": True,
                },
            )

    def forget(self, name: str, version: str) -> None:
        for cached in (self.cache_dir / name).glob(f"{version}-*"):
            shutil.rmtree(cached, ignore_errors=True)

    def _errors(self, doing: str, *, bucket_check: bool = False) -> _S3Errors:
        return _S3Errors(self, doing, bucket_check)


class _S3Errors:
    """Turns boto errors into the caller's: a wrong bucket or credentials is
    FAILED_PRECONDITION (an operator must fix the configuration), an endpoint that does not
    answer is UNAVAILABLE, a missing object NOT_FOUND; never INTERNAL or UNKNOWN."""

    def __init__(self, store: S3Artifacts, doing: str, bucket_check: bool) -> None:
        self._store = store
        self._doing = doing
        self._bucket_check = bucket_check

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None and not isinstance(exc, ParadigmError):
            error = self._translate(exc)
            if error is not None:
                raise error from exc

    def _translate(self, exc: BaseException) -> ParadigmError | None:
        from botocore import exceptions as boto

        where, doing = self._store.describe(), self._doing
        if isinstance(exc, boto.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            detail = error.get("Message") or code
            if code == "NoSuchBucket" or (self._bucket_check and code in ("404", "NotFound")):
                bucket = self._store.bucket
                return FailedPrecondition(f"{doing}: bucket {bucket!r} does not exist ({where})")
            if code in _ACCESS_CODES:
                return FailedPrecondition(
                    f"{doing}: access to {where} denied ({detail}); "
                    "check the AWS credentials and the bucket policy"
                )
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"{doing}: its file is missing from {where}")
            return Unavailable(f"{doing}: {where} answered {code}: {detail}")
        if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
            return FailedPrecondition(
                f"{doing}: no S3 credentials ({exc}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            )
        if isinstance(exc, boto.ConnectionError | boto.HTTPClientError):
            return Unavailable(f"{doing}: {where} unreachable ({exc})")
        return None


def _chunks(body: Any) -> Iterator[bytes]:
    while chunk := body.read(_DOWNLOAD_CHUNK):
        yield chunk


def open_artifacts(
    url: str, default_dir: Path, endpoint_url: str, cache_dir: Path
) -> ArtifactStore:
    """LocalArtifacts(default_dir) for an empty url, a directory path, or s3://."""
    if not url:
        return LocalArtifacts(default_dir)
    if url.startswith("s3://"):
        try:
            return S3Artifacts(url, endpoint_url, cache_dir)
        except ImportError:
            raise FailedPrecondition(
                "artifacts_url names S3, but boto3 is not installed: pip install 'paradigm[s3]'"
            ) from None
    if "://" in url and not url.startswith("file://"):
        raise FailedPrecondition(
            f"artifacts_url {url.split('://')[0]}://... is not supported: use a directory "
            "path or s3://bucket/prefix"
        )
    return LocalArtifacts(Path(url.removeprefix("file://")).expanduser().resolve())
