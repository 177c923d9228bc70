"""Extraction on every process that ``accelerate launch`` starts; scoring on one of them.

``accelerate launch [--num_processes N] [--num_machines M ...] -m cfviz evaluate ...`` starts N
processes (per machine); each one runs this same command. cfviz reads accelerate's own process
state (:class:`accelerate.PartialState`) and maps it onto the run's batch plan:

* process ``p`` of ``n`` (``state.process_index`` / ``state.num_processes``, counted over every
  machine) extracts the batches ``p, p+n, p+2n, ...`` of
  :func:`~cfviz.evaluation.extraction.run_batches`, exactly what ``--shard p/n`` takes
  (:func:`~cfviz.evaluation.extraction.batches_for_shard`). Round robin rather than contiguous
  chunks (``split_between_processes``) keeps the load even: the plan lists each category's
  batches together and categories differ in size and image cost;
* every process writes into the same store folder (on a file system all machines share); entries
  are written atomically, so the merged store is byte for byte the store of one process;
* then all processes wait for each other (``state.wait_for_everyone()``) and the main process
  (``state.is_main_process``) scores the merged store and writes the tables; the others return
  their extraction report (the CLI exits 0 without printing).

When is a run distributed? ``distributed="auto"`` (the default; ``--distributed auto``) uses
accelerate when the environment says this process is one of several (``WORLD_SIZE`` > 1, which
``accelerate launch`` and ``torchrun`` set); otherwise nothing changes and accelerate is not even
imported. ``distributed="off"`` (``--distributed off``) ignores the launcher: every process runs
the whole job (only useful when something else splits the work).

Devices: ``--device cuda`` (a bare type) becomes the process's own device from accelerate
(``cuda:<local rank>``); ``--device cuda:3`` or ``--device cpu`` is used as given.

>>> launched({"WORLD_SIZE": "2"}), launched({"WORLD_SIZE": "1"}), launched({})
(True, False, False)
>>> process_device("cuda", "cuda:3"), process_device("cuda:1", "cuda:3"), process_device("cpu", "cuda:3")
('cuda:3', 'cuda:1', 'cpu')
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cfviz.errors import ConfigError

MODES = ("auto", "off")

#: How long a process waits at the barrier for the slowest one. Extraction shares are uneven
#: (last batches, slower machines), and torch's default (10-30 min) would abort a long run.
BARRIER_TIMEOUT = timedelta(hours=48)


def launched(env: Mapping[str, str] | None = None) -> bool:
    """True when this process is one of several started by a launcher (``WORLD_SIZE`` > 1)."""
    env = os.environ if env is None else env
    try:
        return int(env.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def process_device(requested: str, given: str) -> str:
    """The device of this process: accelerate's ``given`` device when ``requested`` is its bare type."""
    requested = str(requested)
    return str(given) if requested.strip().lower() == str(given).split(":", 1)[0] else requested


@dataclass
class Processes:
    """This process's place among the launched ones (a thin view of accelerate's ``PartialState``)."""

    state: Any  #: the ``accelerate.PartialState``

    @property
    def index(self) -> int:
        return int(self.state.process_index)

    @property
    def count(self) -> int:
        return int(self.state.num_processes)

    @property
    def is_main(self) -> bool:
        return bool(self.state.is_main_process)

    @property
    def shard(self) -> tuple[int, int]:
        """The ``--shard i/n`` this process is: ``(process_index, num_processes)``."""
        return self.index, self.count

    @property
    def device(self) -> str:
        return str(self.state.device)

    def wait(self) -> None:
        """Block until every process has reached this point (``wait_for_everyone``)."""
        self.state.wait_for_everyone()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block on the main process first (it may generate the data set), then on the others."""
        with self.state.main_process_first():
            yield

    def place(self, spec: Any) -> Any:
        """``spec`` with this process's device (see :func:`process_device`)."""
        from dataclasses import replace

        device = process_device(spec.models.device, self.device)
        if device == spec.models.device and self.device.split(":", 1)[0] not in ("cpu", device.split(":", 1)[0]):
            warnings.warn(f"accelerate gave process {self.index} the device {self.device}, but the run asks for "
                          f"{spec.models.device}; pass --device {self.device.split(':', 1)[0]} to use it",
                          stacklevel=2)
        return replace(spec, models=replace(spec.models, device=device))

    def close(self) -> None:
        """Tear down the process group (torch warns at exit otherwise)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def processes(mode: str = "auto", shard: tuple[int, int] | None = None, device: str = "cpu") -> Processes | None:
    """The launched processes this one belongs to, or ``None`` for a plain single-process run.

    ``device`` is the run's ``--device``: processes of a CPU run talk over gloo (accelerate's
    ``cpu=True``), the others over the accelerator's backend (NCCL on CUDA).

    Raises :class:`~cfviz.errors.ConfigError` for an unknown ``mode``, for ``shard`` given to a
    launched process (the two are the same split: use one), or when accelerate does not see the
    processes the launcher started (every one of them would run the whole job).
    """
    if mode not in MODES:
        raise ConfigError(f"{{distributed}} must be one of {', '.join(MODES)}, got {mode!r}", "distributed")
    if mode == "off" or not launched():
        return None
    if shard is not None:
        raise ConfigError(f"{{shard}} {shard[0]}/{shard[1]} cannot be combined with accelerate launch "
                          f"({os.environ.get('WORLD_SIZE')} processes): each launched process already takes its "
                          "share of the batches; drop {shard} (or pass {distributed} off)", "shard",
                          mentions=("distributed",))
    try:
        from accelerate import PartialState
    except ImportError as exc:
        raise ConfigError("this process was started by a launcher (WORLD_SIZE > 1) but accelerate is not "
                          "installed; `pip install accelerate`, or pass {distributed} off", "distributed") from exc
    cpu = str(device).split(":", 1)[0].strip().lower() == "cpu"
    state = PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)
    world = int(os.environ["WORLD_SIZE"])
    if int(state.num_processes) != world:
        raise ConfigError(f"the launcher started {world} processes but accelerate sees {state.num_processes} "
                          f"({state.distributed_type}); with {{models.device}} {device} launch with "
                          "`accelerate launch --multi_gpu --num_processes N` (see the README, Scale out), or pass "
                          "{distributed} off", "models.device", mentions=("distributed",))
    return Processes(state)
