"""The extraction loads and preprocesses the next batch on a background thread while the models run.

:class:`cfviz.data.prefetch.Prefetcher` on its own (order, errors, shutdown), then
:func:`cfviz.evaluation.extraction.extract` with it: the store is byte-identical to the one made
without a thread, a loader error surfaces as the same error after the earlier batches are
stored, an error or KeyboardInterrupt in the models stops the thread, and batch k+1 is loaded
while batch k is in the UNet. Tiny models, 64 px images, two timesteps.

No test here measures time: the overlap test synchronises on events (with a generous timeout
that only a run without prefetching waits out).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cfviz.capture.store import CaptureStore
from cfviz.data.prefetch import Prefetcher
from cfviz.errors import CfvizError, DatasetError

WAIT_S = 30.0  # only a run that never overlaps waits this long
THREAD = "cfviz-extract-prefetch"


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in (THREAD, "cfviz-prefetch") and t.is_alive()]


# ---------------------------------------------------------------------------------- the helper
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_results_in_order_like_map(depth: int) -> None:
    calls: list[int] = []

    def square(x: int) -> int:
        calls.append(x)
        return x * x

    with Prefetcher(square, range(20), depth=depth) as out:
        assert list(out) == [x * x for x in range(20)]
    assert calls == list(range(20))  # each item once, in order
    assert not _prefetch_threads()


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_error_surfaces_unchanged_when_its_item_comes(depth: int) -> None:
    error = DatasetError("image /data/x.png cannot be read. Fix: replace the file")

    def prepare(x: int) -> int:
        if x == 3:
            raise error
        return x

    got = []
    with pytest.raises(DatasetError) as caught, Prefetcher(prepare, range(10), depth=depth) as out:
        for x in out:
            got.append(x)
    assert caught.value is error  # the very exception: type, message and arguments unchanged
    assert got == [0, 1, 2]  # every result before the failing item was delivered first
    assert not _prefetch_threads()


def test_error_of_the_items_iterator_surfaces_too() -> None:
    def items():
        yield 1
        raise OSError("listing failed")

    with pytest.raises(OSError, match="listing failed"), Prefetcher(lambda x: x, items()) as out:
        assert next(out) == 1
        next(out)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_consumer_error_stops_the_thread(stop: type[BaseException]) -> None:
    calls: list[int] = []
    with pytest.raises(stop), Prefetcher(lambda x: calls.append(x) or x, range(10_000), depth=2) as out:
        for x in out:
            if x == 5:
                raise stop()
    assert not _prefetch_threads()
    n = len(calls)
    assert n <= 5 + 1 + 2 + 1  # consumed, the one in hand, the queue, one in progress: no more
    threading.Event().wait(0.3)  # nothing runs on behind our back
    assert len(calls) == n


def test_close_and_iteration_after_close() -> None:
    out = Prefetcher(lambda x: x, range(10_000), depth=1)
    assert next(out) == 0
    out.close()
    assert not out.alive
    with pytest.raises(StopIteration):
        next(out)


def test_runs_ahead_of_the_consumer() -> None:
    second_prepared = threading.Event()

    def prepare(x: int) -> int:
        if x == 1:
            second_prepared.set()
        return x

    with Prefetcher(prepare, range(3), depth=1) as out:
        assert next(out) == 0
        # while the consumer works on item 0, item 1 is prepared without being asked for
        assert second_prepared.wait(WAIT_S)
        assert list(out) == [1, 2]


@pytest.mark.parametrize("depth", [-1, True, 1.5, "2"])
def test_bad_depth_is_one_clear_error(depth: object) -> None:
    with pytest.raises(CfvizError, match="prefetch depth must be an int >= 0"):
        Prefetcher(lambda x: x, [], depth=depth)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- in extract
@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    from cfviz.data.textures import TexturesDataset, generate_textures
    from cfviz.experiments import ExtractionConfig
    from cfviz.evaluation.config import ModelChoice
    from cfviz.evaluation.models import LoadedModels
    from cfviz.models import tiny_clip, tiny_inpaint_pipeline

    params = dict(image_size=64, n_train=1, n_test_good=3, n_per_defect=1, defect_kinds=["stain", "hole"])
    root = generate_textures(tmp_path_factory.mktemp("prefetch") / "tex", seed=5, categories=["grass"], **params)
    data = TexturesDataset(root, categories="grass", split="all", seed=5, categories_generated=["grass"], **params)
    models = LoadedModels(clip=tiny_clip(seed=0), pipe=tiny_inpaint_pipeline(seed=0), choice=ModelChoice())
    extraction = ExtractionConfig(diffusion_size=64, timesteps=(100, 400))
    return data, models, extraction


def _tests(data):
    return [r for r in data.records if r.split == "test"]  # 5 images: batches of 2, 2, 1


def _files(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_store_is_byte_identical_with_and_without_prefetching(setup, tmp_path: Path) -> None:
    from cfviz.evaluation.extraction import extract

    data, models, extraction = setup
    stores = {}
    for depth in (0, 1, 2):
        path = tmp_path / f"depth{depth}"
        report = extract(data, data.records, models, extraction, CaptureStore(path, {"t": 1}), batch_size=2,
                         progress=False, prefetch=depth)
        assert report.new == len(data.records) == 6
        stores[depth] = _files(path)
    assert len(stores[0]) == 2 * 6 + 1  # entries (tensors + JSON) and the header
    assert stores[1] == stores[0] and stores[2] == stores[0]
    assert not _prefetch_threads()


def test_loader_error_surfaces_as_the_same_error_after_earlier_batches(setup, tmp_path: Path) -> None:
    from cfviz.evaluation.extraction import extract, run_batches

    data, models, extraction = setup
    records = _tests(data)
    bad_id = run_batches(records, 2)[1][0]  # the first image of the second batch
    bad = next(r for r in records if r.image_id == bad_id)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    from dataclasses import replace

    records = [replace(r, image_path=broken) if r is bad else r for r in records]
    with pytest.raises(DatasetError) as direct:
        data.load(records[[r.image_id for r in records].index(bad_id)])
    for depth in (0, 1):
        store = CaptureStore(tmp_path / f"store{depth}", {"t": 1})
        with pytest.raises(DatasetError) as caught:
            extract(data, records, models, extraction, store, batch_size=2, progress=False, prefetch=depth)
        assert type(caught.value) is type(direct.value) and str(caught.value) == str(direct.value)
        assert store.ids == run_batches(records, 2)[0]  # the batch before it was stored, nothing after
        assert not _prefetch_threads()


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_error_in_the_models_stops_the_prefetch_thread(setup, tmp_path: Path, stop: type[BaseException]) -> None:
    from cfviz.evaluation.extraction import extract

    data, models, extraction = setup
    loads: list[str] = []
    original_load = data.load

    def counting_load(record):  # type: ignore[no-untyped-def]
        loads.append(record.image_id)
        return original_load(record)

    calls = []

    def interrupt(_module, _args):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:  # the first UNet call of the second batch (two timesteps per batch)
            raise stop("stopped")

    data.load = counting_load
    handle = models.pipe.unet.register_forward_pre_hook(interrupt)
    try:
        store = CaptureStore(tmp_path / "store", {"t": 1})
        with pytest.raises(stop):
            extract(data, _tests(data), models, extraction, store, batch_size=2, progress=False)
    finally:
        handle.remove()
        del data.load
    assert not _prefetch_threads()
    assert len(store.ids) == 2  # the first batch
    n = len(loads)
    assert n <= 5
    threading.Event().wait(0.3)
    assert len(loads) == n  # nothing loads on after extract returned


def test_next_batch_loads_while_the_unet_runs(setup, tmp_path: Path) -> None:
    """Batch 2's pixels are read while batch 1 is inside the UNet: the UNet call waits for it."""
    from cfviz.evaluation.extraction import extract, run_batches

    data, models, extraction = setup
    records = _tests(data)
    second = set(run_batches(records, 2)[1])
    loaded_second = threading.Event()
    overlapped: list[bool] = []
    original_load = data.load

    def load(record):  # type: ignore[no-untyped-def]
        if record.image_id in second:
            loaded_second.set()
        return original_load(record)

    def first_unet_call(_module, _args):  # type: ignore[no-untyped-def]
        if not overlapped:
            overlapped.append(loaded_second.wait(WAIT_S))  # without a prefetch thread: never set here

    data.load = load
    handle = models.pipe.unet.register_forward_pre_hook(first_unet_call)
    try:
        extract(data, records, models, extraction, CaptureStore(tmp_path / "s", {"t": 1}), batch_size=2,
                progress=False)
    finally:
        handle.remove()
        del data.load
    assert overlapped == [True]
