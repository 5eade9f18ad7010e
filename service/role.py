"""What one serving process is, when `--workers N` runs several behind one port.

The supervisor (service/supervisor.py) starts N serving processes. Slot 0 is the owner: it
runs the training jobs, explanations and imports, owns the data directory's staging and
journal, and answers the control-plane RPCs (datasets, training, models, cost) on a private
Unix socket as well as on the shared port. The other slots serve inference themselves and
forward every control-plane call to the owner, so nothing runs twice and job state has one
home. All of them read the same registry and see its changes.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ServingRole:
    slot: int
    workers: int
    #: gRPC address where the owner answers forwarded control-plane calls ("unix:...").
    owner_address: str
    #: prometheus-client's multiprocess directory, where every worker's series are summed.
    metrics_dir: str
    #: One flag per slot, set while that worker is ready (a multiprocessing.Array of bytes,
    #: shared by every worker and the supervisor): health is SERVING only when all are.
    ready_flags: MutableSequence[int]
    #: Bumped by the owner whenever it publishes or deletes a version (a one-element shared
    #: array): a worker that sees it move looks at the registry before it answers, so a
    #: model is served everywhere as soon as its job says SUCCEEDED, not a poll later.
    registry_generation: MutableSequence[int]

    @property
    def owner(self) -> bool:
        return self.slot == 0

    def registry_changed(self, *_: object) -> None:
        self.registry_generation[0] += 1

    def all_ready(self) -> bool:
        return all(self.ready_flags[:])
