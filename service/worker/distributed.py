"""Deep training in several processes: torch.distributed DDP ranks launched by torchrun.

Two ways in, one training loop (deep_training.train with a deep_training.Shard):
- `fit`, in a job's worker process (one machine): writes the inputs to a work directory,
  runs `torchrun --standalone --nproc-per-node=N -m service.worker.distributed <workdir>`,
  relays rank 0's epoch events through `emit` while it runs, then loads rank 0's weights
  into the same network, so the pipeline evaluates, exports and checks the usual DeepModel.
- `fit_in_group`, in a process that torchrun already started as one rank of a job on any
  number of machines (standalone.py): trains this rank's part in place and returns the
  model, which rank 0 then evaluates, exports and publishes.

Work directory (inside the job's staging directory, removed when fit returns):
  inputs.json, inputs.npz   what every rank trains on, written by the parent
  events.jsonl              rank 0's progress events, one JSON object a line
  result.pt                 rank 0's final state_dict and history (torch.save, tensors only)
  error-<rank>.txt          why a rank failed, in the words the job should report
  torchrun.log              the launcher's and the ranks' stdout and stderr

No process outlives the job: the torchrun agent runs in a session of its own and dies with
the worker (PR_SET_PDEATHSIG, and a SIGTERM handler that kills it first), and every rank
dies with the agent (PR_SET_PDEATHSIG, set before anything else). torchrun starts each rank
in yet another session, so killing the agent's process group alone would not reach them.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from service.training.spec import Emit
from service.worker.fitting import FitRequest

if TYPE_CHECKING:
    from service.worker.deep import DeepModel
    from service.worker.deep_training import Trained

BACKENDS = ("auto", "gloo", "nccl")
INPUTS_JSON, INPUTS_NPZ = "inputs.json", "inputs.npz"
EVENTS_FILE, RESULT_FILE, LOG_FILE = "events.jsonl", "result.pt", "torchrun.log"
#: Set by `fit` on torchrun's environment: the worker's pid, which a rank checks its
#: launcher's parent against (see _die_with_launcher).
PARENT_VARIABLE = "PARADIGM_DDP_PARENT"
# How often the parent looks for new events while torchrun runs; it wakes at once when
# torchrun exits. An epoch takes ~0.1 s at the least, so events are seldom late by more.
_POLL_SECONDS = 0.2
_LOG_TAIL_CHARS = 2000
_PR_SET_PDEATHSIG = 1


class DistributedError(RuntimeError):
    """torchrun or a rank failed; the message is the failing rank's own error."""


def resolve_backend(backend: str, device: str) -> str:
    """auto means NCCL on CUDA, gloo on the CPU; NCCL needs CUDA."""
    if backend not in BACKENDS:
        raise ValueError(f"distributed_backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "nccl" if device == "cuda" else "gloo"
    if backend == "nccl" and device != "cuda":
        raise ValueError(
            f"distributed_backend nccl needs CUDA, but this job trains on {device}: "
            "use gloo or auto"
        )
    return backend


# --------------------------------------------------------------------------- the parent


def fit(request: FitRequest, *, world_size: int, backend: str = "auto", workdir: Path) -> DeepModel:
    """deep.fit, trained by `world_size` DDP processes on this machine.

    Same request and result as deep.fit, plus the world size, the backend (BACKENDS)
    and a work directory that must not exist yet (it is removed on return). The epoch
    events are rank 0's, relayed as they come; a failing rank's error is raised as
    DistributedError with that rank's message.
    """
    from service.worker import deep

    request = deep.check_inputs(request)
    run_on = deep.resolve_device(request.device)
    chosen = resolve_backend(backend, run_on)
    if chosen == "nccl" and world_size > deep.cuda_device_count():
        raise ValueError(
            f"world_size {world_size} with NCCL needs {world_size} GPUs on this machine, "
            f"which has {deep.cuda_device_count()}: ask for fewer processes, or use gloo"
        )
    request.emit(
        "fitting",
        f"training {request.algorithm} on {run_on} in {world_size} processes (DDP, {chosen}, "
        f"world_size {world_size})",
        device=run_on,
    )
    workdir.mkdir(parents=True)
    try:
        _write_inputs(workdir, replace(request, device=run_on), chosen)
        _launch(workdir, world_size, request.emit)
        return _load_result(workdir, replace(request, device=run_on))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _write_inputs(workdir: Path, request: FitRequest, backend: str) -> None:
    """What every rank trains on: the checked request (its device resolved) and the backend."""
    (workdir / INPUTS_JSON).write_text(
        json.dumps(
            {
                "algorithm": request.algorithm,
                "params": request.params,
                "task": request.task,
                "seed": request.seed,
                "device": request.device,
                "image_shape": request.image_shape,
                "threads": request.threads,
                "backend": backend,
                "has_classes": request.classes is not None,
            }
        )
    )
    classes = request.classes
    np.savez(
        workdir / INPUTS_NPZ,
        X=request.X_train,
        y=np.asarray(request.y_train),
        classes=np.asarray(classes if classes is not None else []),
    )


def _read_inputs(workdir: Path, emit: Emit) -> tuple[FitRequest, str]:
    """A rank's request and backend, as _write_inputs left them."""
    inputs = json.loads((workdir / INPUTS_JSON).read_text())
    with np.load(workdir / INPUTS_NPZ) as arrays:
        X, y, classes = arrays["X"], arrays["y"], arrays["classes"]
    request = FitRequest(
        algorithm=inputs["algorithm"],
        params=inputs["params"],
        X_train=X,
        y_train=y,
        task=inputs["task"],
        seed=inputs["seed"],
        emit=emit,
        device=inputs["device"],
        image_shape=inputs["image_shape"],
        classes=classes if inputs["has_classes"] else None,
        threads=inputs["threads"],
    )
    return request, inputs["backend"]


def _load_result(workdir: Path, request: FitRequest) -> DeepModel:
    """Rank 0's weights and history in the network `request` builds, as deep.fit's model."""
    import torch

    from service.worker import deep, deep_training

    result = torch.load(workdir / RESULT_FILE, weights_only=True)
    # The same network, untrained (epochs 0) and on the CPU, takes rank 0's weights;
    # building it also recomputes the scaling and classes the export heads need.
    untrained = replace(request, params={**request.params, "epochs": 0}, emit=_silent, device="cpu")
    trained = deep_training.train(untrained)
    trained.network.load_state_dict(result["state"])
    trained.history = result["history"]
    return deep.to_model(request, trained)


def _launch(workdir: Path, world_size: int, emit: Emit) -> None:
    """Runs torchrun until it exits, relaying rank 0's events; raises if it failed."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
        f"--nproc-per-node={world_size}", "-m", "service.worker.distributed", str(workdir),
    ]  # fmt: skip
    worker = os.getpid()
    # --standalone: a c10d rendezvous on a free local port, so concurrent jobs never share
    # a MASTER_PORT. The thread variables (set by entry.run) reach every rank.
    env = {**os.environ, PARENT_VARIABLE: str(worker)}
    with (workdir / LOG_FILE).open("wb") as log:
        agent = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: _die_with(worker),
        )
    with _kill_on_sigterm(agent):
        try:
            _relay(agent, workdir / EVENTS_FILE, emit)
        finally:
            if agent.poll() is None:  # the relay failed (the job's pipe broke): stop it
                _kill(agent)
                agent.wait()
    if agent.returncode != 0:
        raise DistributedError(failure_reason(workdir, agent.returncode))


def _relay(agent: subprocess.Popen[bytes], events: Path, emit: Emit) -> None:
    """Emits each complete line rank 0 appends to `events` until the agent exits."""
    handle = None
    partial = b""
    try:
        while True:
            try:
                agent.wait(timeout=_POLL_SECONDS)
                ended = True
            except subprocess.TimeoutExpired:
                ended = False
            if handle is None and events.exists():
                handle = events.open("rb")
            if handle is not None:
                *lines, partial = (partial + handle.read()).split(b"\n")
                for line in lines:
                    event = json.loads(line)
                    emit(event.pop("stage"), event.pop("message", ""), **event)
            if ended:
                return
    finally:
        if handle is not None:
            handle.close()


@contextlib.contextmanager
def _kill_on_sigterm(agent: subprocess.Popen[bytes]) -> Iterator[None]:
    """While torchrun runs, a SIGTERM (cancel, time limit) kills it before this process.

    The process then dies of the SIGTERM as it would have: the job manager sees the same
    exit as for a single-process job. Without this the agent would only go with the
    SIGKILL that follows the grace, by PR_SET_PDEATHSIG.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; PDEATHSIG still applies
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        _kill(agent)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _kill(agent: subprocess.Popen[bytes]) -> None:
    """SIGKILLs the agent's process group; the ranks follow by PR_SET_PDEATHSIG."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(agent.pid, signal.SIGKILL)


def failure_reason(workdir: Path, returncode: int) -> str:
    """The first error a rank wrote down, else the end of torchrun's log."""
    errors = sorted(workdir.glob("error-*.txt"), key=lambda path: path.stat().st_mtime_ns)
    for path in errors:
        text = path.read_text(errors="replace").strip()
        if text:
            return text
    log = (workdir / LOG_FILE).read_text(errors="replace")
    return f"distributed training failed: torchrun exited with code {returncode}: " + (
        _root_cause(log) or log[-_LOG_TAIL_CHARS:].strip()
    )


def _root_cause(log: str) -> str:
    """The rank, exit code and reason of torchrun's "Root Cause" report (a rank that died
    without writing its error, e.g. killed by a signal), or "" when there is none."""
    start = log.rfind("Root Cause")
    if start < 0:
        return ""
    section = log[start:].split("\n=", 1)[0].splitlines()[1:]
    wanted = ("rank", "exitcode", "traceback")
    return "; ".join(
        " ".join(line.split()).replace(" :", ":")
        for line in section
        if line.strip().startswith(wanted)
    )


def _silent(stage: str, message: str = "", **details: Any) -> None:
    """An Emit that reports nothing (the ranks other than 0; rebuilding the network)."""


# --------------------------------------------------------------------------- the ranks


def _die_with(parent: int) -> None:
    """Asks Linux to SIGKILL this process when its parent dies (Linux only).

    If `parent` (the pid this process was forked from) is already gone, it exits at once:
    the request would never fire.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _die_with_launcher() -> None:
    """A rank dies with the torchrun agent that started it.

    The agent may have died before this ran, leaving the rank with some reaper as parent;
    under `fit` the rank can tell (its parent's parent must be the job's worker) and exits.
    """
    parent = os.getppid()
    _die_with(parent)
    worker = os.environ.get(PARENT_VARIABLE)
    if worker and _parent_of(parent) != int(worker):
        os._exit(1)


def _parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ")" ends it.
    return int(stat.rsplit(")", 1)[1].split()[1])


@contextlib.contextmanager
def process_group(backend: str, device: str) -> Iterator[None]:
    """Joins the job's process group from torchrun's environment; leaves it on exit.

    On CUDA each rank takes the GPU of its LOCAL_RANK (modulo the GPUs there are, which
    gloo can share and NCCL cannot).
    """
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(backend)
    try:
        yield
    except BaseException:
        dist.destroy_process_group()  # no barrier: the other ranks may never reach one
        raise
    # The ranks leave together, once the DDP wrapper (whose reducer holds the group's
    # pending work) is collected: a gloo rank that tore its group down while rank 0 still
    # validated was measured to abort ("terminate called without an active exception").
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def exit_rank(code: int) -> NoReturn:
    """Ends a rank without the interpreter's teardown.

    Its results are files already closed; what teardown adds is destructors of gloo's
    C++ threads running in an unpredictable order, which was measured to abort one rank
    in about ten and so fail a job whose model was complete.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def train_shard(request: FitRequest) -> Trained:
    """This rank's part of a DDP job (inside process_group); deep_training.train's result.

    `request.device` must be resolved. Every rank passes the same rows, seed and
    parameters; only rank 0's `emit` is heard and only rank 0's history is filled (it
    validates).
    """
    import torch.distributed as dist

    from service.worker import deep, deep_training

    request = deep.check_inputs(request)
    shard = deep_training.Shard(dist.get_rank(), dist.get_world_size())
    if shard.rank != 0:
        request = replace(request, emit=_silent)
    return deep_training.train(request, shard)


def fit_in_group(request: FitRequest) -> DeepModel:
    """deep.fit as this rank of a running process group (standalone.py): the rank's model.

    Rank 0's model is the job's (the weights are the same on every rank; only rank 0's
    history is filled). Its signature is deep.fit's, so the pipeline can call it instead.
    """
    import torch.distributed as dist

    from service.worker import deep

    request = deep.check_inputs(request)
    request = replace(request, device=deep.resolve_device(request.device))
    rank, size = dist.get_rank(), dist.get_world_size()
    request.emit(
        "fitting",
        f"training {request.algorithm} on {request.device} as rank {rank} of {size} (DDP, "
        f"{dist.get_backend()}, world_size {size})",
        device=request.device,
    )
    return deep.to_model(request, train_shard(request))


class _EventWriter:
    """Rank 0's Emit under `fit`: one flushed JSON line per event, for the parent to tail."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __call__(self, stage: str, message: str = "", **details: Any) -> None:
        line = json.dumps({"stage": stage, "message": message, **details}) + "\n"
        # Appended whole in one write: the parent never reads half an event as a line.
        with self._path.open("a") as handle:
            handle.write(line)


def _rank_main(workdir: Path) -> int:
    """One rank under `fit`: train the shard; rank 0 writes the result. Exit status."""
    rank = int(os.environ.get("RANK", "0"))
    try:
        request, backend = _read_inputs(workdir, _EventWriter(workdir / EVENTS_FILE))
        with process_group(backend, request.device):
            trained = train_shard(request)
        if rank == 0:
            import torch

            state = {name: value.cpu() for name, value in trained.network.state_dict().items()}
            partial = workdir / f"{RESULT_FILE}.partial"
            torch.save({"state": state, "history": trained.history}, partial)
            partial.replace(workdir / RESULT_FILE)  # the parent never loads half a file
        return 0
    except BaseException as exc:
        from service.errors import describe_failure

        traceback.print_exc()  # into torchrun.log
        with contextlib.suppress(OSError):
            (workdir / f"error-{rank}.txt").write_text(describe_failure(exc))
        return 1


if __name__ == "__main__":
    # First, before torch's import takes its seconds: a rank started just as its job was
    # cancelled must not be left running.
    _die_with_launcher()
    exit_rank(_rank_main(Path(sys.argv[1])))
