"""Batch scoring on Ray: Ray Data reads the input, an actor pool runs the bundle, Parquet parts come out.

* :func:`predict_dataset` — the building block: a ``ray.data.Dataset`` of raw rows
  in, a lazy ``Dataset`` of predictions (plus kept columns) out. Each actor of
  the pool loads the :class:`~seqdeploy.runtime.predictor.Predictor` once; the bundle's
  bytes travel with the job through Ray's object store (no shared disk is
  assumed) and their sha256 is checked on the worker against the manifest.
* :func:`predict_files_ray` — what ``seqdeploy predict --engine ray`` runs: files,
  a directory or a glob (Parquet, CSV, JSONL) read by a Ray Data datasource that
  numbers every row within its file, scored in input order and written as
  ``part-*.parquet`` into a staged directory that is moved into place with a
  ``_SUCCESS`` marker only when every row is written.

Scoring itself is :func:`seqdeploy.scoring.tables.score_table`, the same code the
local engine runs, so both engines give the same rows.

    >>> from seqdeploy.scoring.ray import predict_files_ray
    >>> predict_files_ray("runs/breast_cancer_mlp", "rows/", "preds/", actors=2)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from seqdeploy.errors import DataError, SeqdeployError, UsageError

#: Test hook: a path; the first actor call that finds no file there creates it and kills its actor process.
KILL_ONCE_ENV = "SEQDEPLOY_TEST_KILL_ACTOR_ONCE"
SKIPPED_PARTS = "_skipped_parts"
DEFAULT_RAY_BATCH_SIZE = 4096
_IO_CPUS = 0.1  # CPU share a read or write task asks for (actors hold whole CPUs)


# --------------------------------------------------------------------------- the bundle, shipped


@dataclass(frozen=True)
class BundlePayload:
    """A bundle as bytes: ``manifest.json`` and every file it names, plus the manifest's sha256."""

    name: str
    manifest_sha256: str
    files: dict[str, bytes] = field(repr=False)

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.files.values())


def pack_bundle(bundle: str | os.PathLike) -> BundlePayload:
    """Read a bundle (checked against its manifest) into memory, ready for the object store."""
    from seqdeploy.runtime.extensions import libraries_for
    from seqdeploy.runtime.manifest import MANIFEST_NAME, bundle_path, load_manifest

    root = Path(bundle)
    root = root.parent if root.is_file() else root
    manifest = load_manifest(root)  # checks every named file's size and sha256
    # custom-op libraries (e.g. onnxruntime-extensions for string ops): refused here, before any worker starts,
    # when missing; each worker's Predictor registers them from the manifest
    libraries_for(manifest.contrib_ops, f"bundle {manifest.name!r}")
    names = [a.file for a in manifest.artifacts] + [f.file for f in manifest.files]
    for a in manifest.artifacts:  # portable deployment graphs, where the manifest has them
        portable = getattr(a, "portable", None)
        if portable is not None and getattr(portable, "file", None):
            names.append(portable.file)
    portable = getattr(manifest, "portable", None)
    if portable is not None and getattr(portable, "file", None):
        names.append(portable.file)
    raw = (root / MANIFEST_NAME).read_bytes()
    files = {MANIFEST_NAME: raw}
    for rel in dict.fromkeys(names):
        files[rel] = bundle_path(root, rel).read_bytes()
    return BundlePayload(manifest.name, hashlib.sha256(raw).hexdigest(), files)


def unpack_bundle(payload: BundlePayload, dest: str | os.PathLike) -> Path:
    """Write a shipped bundle under ``dest`` after checking the manifest's sha256; return its directory.

    The files' own sha256 are checked against the manifest when the
    :class:`~seqdeploy.runtime.predictor.Predictor` loads them.
    """
    from seqdeploy.errors import IntegrityError
    from seqdeploy.runtime.manifest import MANIFEST_NAME

    got = hashlib.sha256(payload.files[MANIFEST_NAME]).hexdigest()
    if got != payload.manifest_sha256:
        raise IntegrityError(f"shipped bundle {payload.name!r}: manifest.json has sha256 {got[:16]}... but the "
                             f"driver sent {payload.manifest_sha256[:16]}...; resubmit the job")
    root = Path(dest)
    for rel, data in payload.files.items():
        target = (root / rel).resolve()
        if root.resolve() not in target.parents:
            raise IntegrityError(f"shipped bundle {payload.name!r} names {rel!r} outside its directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


# --------------------------------------------------------------------------- the actor


class BundleScorer:
    """Ray Data callable class: loads the predictor once per actor, scores Arrow batches.

    ``bundle`` is a :class:`BundlePayload` or an object reference to one.
    """

    def __init__(self, bundle: Any, layout: Any, *, artifact: str | None = None, threads: int = 1,
                 on_bad_row: str = "fail", files: Sequence[str] | None = None, skipped_dir: str | None = None,
                 kill_once: str | None = None):
        import ray

        from seqdeploy.runtime.predictor import Predictor

        payload = ray.get(bundle) if isinstance(bundle, ray.ObjectRef) else bundle
        self._dir = tempfile.TemporaryDirectory(prefix="seqdeploy-bundle-")
        root = unpack_bundle(payload, self._dir.name)
        self.predictor = Predictor.from_bundle(root, artifact=artifact, threads=threads)
        self.layout, self.on_bad_row, self.files = layout, on_bad_row, list(files or [])
        self.skipped_dir, self.kill_once = skipped_dir, kill_once or os.environ.get(KILL_ONCE_ENV)
        self.calls = 0

    def __call__(self, batch: Any) -> Any:
        from seqdeploy.scoring.tables import score_table

        self.calls += 1
        if self.kill_once and self.calls == 2:
            _kill_once(self.kill_once)
        out, skipped = score_table(self.predictor, batch, self.layout, on_bad_row=self.on_bad_row,
                                   files=self.files)
        if skipped is not None and skipped.num_rows:
            if self.skipped_dir is None:
                raise UsageError("skipped rows need a directory reachable by the workers (skipped_dir)")
            _write_part(skipped, self.skipped_dir)
        return out


def _kill_once(marker: str) -> None:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)  # the actor process dies mid-run, as a lost node would


def _write_part(table: Any, directory: str) -> None:
    """A skipped-rows part named after its first row: a retried batch rewrites the same file."""
    import pyarrow.parquet as pq

    first = f"{table.column('file')[0].as_py()}\0{table.column('row')[0].as_py()}"
    name = hashlib.sha256(first.encode()).hexdigest()[:24]
    target = Path(directory) / f"{name}.parquet"
    tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
    pq.write_table(table, str(tmp))
    os.replace(tmp, target)


# --------------------------------------------------------------------------- datasets


def predict_dataset(ds: Any, bundle: str | os.PathLike | BundlePayload | Any, *, layout: Any = None,
                    keep: str | Sequence[str] | None = None, artifact: str | None = None, actors: int = 1,
                    batch_size: int = DEFAULT_RAY_BATCH_SIZE, threads: int = 1, on_bad_row: str = "fail",
                    files: Sequence[str] | None = None, skipped_dir: str | None = None,
                    actor_cpus: float | None = None) -> Any:
    """Score a ``ray.data.Dataset`` of raw rows with a bundle; returns the lazy ``Dataset`` of predictions.

    ``bundle`` is a bundle directory, a :class:`BundlePayload` or an object
    reference to one. The layout (which columns feed the model, which are kept)
    comes from the dataset's schema unless given. ``actors`` actors, each with
    ``threads`` onnxruntime threads and as many CPUs (``actor_cpus`` overrides), score batches of
    ``batch_size`` rows. Rows set aside with ``on_bad_row="skip"`` are written as
    Parquet parts into ``skipped_dir`` (a path every worker can write to).

    >>> ds = ray.data.read_parquet("rows/")                      # doctest: +SKIP
    >>> predict_dataset(ds, "runs/breast_cancer_mlp", keep="id").write_parquet("preds/")  # doctest: +SKIP
    """
    import ray

    from seqdeploy.runtime.manifest import load_manifest
    from seqdeploy.scoring.files import BAD_ROW_MODES
    from seqdeploy.scoring.tables import plan_layout

    if on_bad_row not in BAD_ROW_MODES:
        raise UsageError(f"on_bad_row = {on_bad_row!r} (expected one of {list(BAD_ROW_MODES)})")
    for what, v in (("actors", actors), ("batch_size", batch_size), ("threads", threads)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UsageError(f"{what} = {v!r} (expected an integer >= 1)")
    if on_bad_row == "skip" and skipped_dir is None:
        raise UsageError("on_bad_row='skip' needs skipped_dir: a directory every worker can write the skipped "
                         "rows to")
    if isinstance(bundle, (str, os.PathLike)):
        ref = ray.put(pack_bundle(bundle))
    elif isinstance(bundle, BundlePayload):
        ref = ray.put(bundle)
    else:
        ref = bundle
    if layout is None:
        payload = ray.get(ref)
        with tempfile.TemporaryDirectory() as tmp:
            manifest = load_manifest(unpack_bundle(payload, tmp))
        layout = plan_layout(manifest, ds.schema().names, keep, where="the dataset")
    return ds.map_batches(
        BundleScorer,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=actor_cpus if actor_cpus is not None else threads,
        fn_constructor_args=(ref, layout),
        fn_constructor_kwargs={"artifact": artifact, "threads": threads, "on_bad_row": on_bad_row,
                               "files": list(files or []), "skipped_dir": skipped_dir,
                               "kill_once": os.environ.get(KILL_ONCE_ENV)},
    )


@functools.lru_cache(maxsize=1)
def _datasource_class() -> type:
    """The Ray Data datasource of scoring inputs (built on first use: ray is imported lazily)."""
    import pyarrow as pa
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    from seqdeploy.io.arrow import ERROR_COLUMN, FILE_COLUMN, ROW_COLUMN, iter_batches, parquet_batches as _parquet_batches

    class ScoringInputs(Datasource):
        """Parquet / CSV / JSONL files read as Arrow blocks with each row's file index and row number.

        One read task per CSV or JSONL file and per group of Parquet row groups;
        each task streams blocks of ``batch_size`` rows.
        """

        def __init__(self, files: Sequence[Any], columns: Sequence[str], batch_size: int,
                     rows_per_task: int = 1 << 20):
            super().__init__()
            self.files, self.columns, self.batch_size = list(files), list(columns), batch_size
            self.rows_per_task = rows_per_task

        def estimate_inmemory_data_size(self) -> int:
            return sum(f.size for f in self.files)

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list:
            import pyarrow.parquet as pq

            tasks = []
            for index, f in enumerate(self.files):
                if f.format != "parquet":
                    tasks.append(self._task(index, f, None, 0, None))
                    continue
                meta = pq.ParquetFile(f.path).metadata
                groups, rows, start = [], 0, 0
                for g in range(meta.num_row_groups):
                    groups.append(g)
                    rows += meta.row_group(g).num_rows
                    if rows >= self.rows_per_task:
                        tasks.append(self._task(index, f, groups, start, rows))
                        start, groups, rows = start + rows, [], 0
                if groups or not tasks or meta.num_row_groups == 0:
                    tasks.append(self._task(index, f, groups, start, rows))
            return tasks

        def _task(self, index: int, f: Any, groups: list[int] | None, start: int, rows: int | None) -> Any:
            columns, bs = self.columns, self.batch_size

            def read() -> Any:
                batches = (_parquet_batches(f, columns, bs, row_groups=groups, row0=start) if groups is not None
                           else iter_batches(f, columns, bs))
                for table, row0 in batches:
                    n = table.num_rows
                    if ERROR_COLUMN not in table.column_names:  # every block has the same columns
                        table = table.append_column(ERROR_COLUMN, pa.nulls(n, type=pa.string()))
                    table = table.append_column(FILE_COLUMN, pa.array([index] * n, type=pa.int32()))
                    yield table.append_column(ROW_COLUMN, pa.array(range(row0, row0 + n), type=pa.int64()))

            size = f.size if groups is None or not rows else None
            return ReadTask(read, BlockMetadata(num_rows=rows, size_bytes=size, exec_stats=None,
                                                input_files=[f.path]))

        def get_name(self) -> str:
            return "SeqdeployScoringInputs"

    return ScoringInputs


@functools.lru_cache(maxsize=1)
def _filename_provider_class() -> type:
    from ray.data.datasource import FilenameProvider

    class OrderedParts(FilenameProvider):
        """``part-<task index>.parquet``: sorted names are the dataset's order."""

        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{task_index:06d}-{write_uuid}.parquet"

    return OrderedParts


# --------------------------------------------------------------------------- the runner


@dataclass(frozen=True)
class RayPredictResult:
    """What :func:`predict_files_ray` did."""

    bundle: str
    artifact: str | None
    input: str
    output: str
    format: str
    rows: int
    seconds: float
    rows_per_second: float
    files: int
    skipped: int
    skipped_output: str | None
    engine: str
    address: str
    actors: int
    batch_size: int
    output_files: int


def ray_started_here(address: str | None = None, *, num_cpus: int | None = None,
                     object_store_memory: int | None = None) -> bool:
    """Connect to Ray: reuse an initialised one, join ``address``, or start a local one sized for this machine.

    Returns True when this call started (and so should stop) Ray.
    """
    import ray

    if ray.is_initialized():
        return False
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if address:
        import seqdeploy

        env = {"py_modules": [str(Path(seqdeploy.__file__).parent)]} if address.startswith("ray://") else None
        try:
            ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"cannot connect to Ray at {address!r} ({str(exc).strip().splitlines()[0][:200]}); "
                             f"expected 'auto' (a cluster started with `ray start` on this machine) or "
                             f"ray://host:port of a running cluster's client server") from None
        return True
    ray.init(num_cpus=num_cpus or os.cpu_count() or 1,
             object_store_memory=object_store_memory or _store_bytes(), **quiet)
    return True


def _store_bytes() -> int:
    """An eighth of physical memory, between 256 MiB and 2 GiB: small machines are shared."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 4 << 30
    return int(min(max(total // 8, 256 << 20), 2 << 30))


def predict_files_ray(bundle: str | os.PathLike, input_spec: str | os.PathLike, output: str | os.PathLike, *,
                      artifact: str | None = None, keep: str | Sequence[str] | None = None,
                      on_bad_row: str = "fail", overwrite: bool = False, address: str | None = None,
                      actors: int | None = None, batch_size: int = DEFAULT_RAY_BATCH_SIZE, threads: int = 1,
                      rows_per_file: int = 1 << 20) -> RayPredictResult:
    """Score files with a bundle on Ray and write Parquet parts (in input order) into the ``output`` directory.

    Without ``address`` a local Ray sized for this machine is started (and
    stopped afterwards); an already initialised Ray is reused. ``actors``
    defaults to the cluster's CPUs divided by ``threads``. Bad rows stop the run
    with their file and row (``on_bad_row="fail"``) or are listed in
    ``<output>/_skipped.jsonl`` (``"skip"``). The output appears, with a
    ``_SUCCESS`` file, only once every row is written; an existing output is
    refused unless ``overwrite``.
    """
    from seqdeploy.runtime.manifest import load_manifest
    from seqdeploy.scoring.tables import (
        SKIPPED_NAME,
        check_output_free,
        file_columns,
        output_kind,
        plan_layout,
        resolve_inputs,
        staged_directory,
        write_skipped,
    )

    if output_kind(output) != "dir":
        raise UsageError(f"output {output} is a file; the Ray engine writes a directory of Parquet parts "
                         f"(expected a path without a suffix, e.g. preds/)")
    check_output_free(output, overwrite)  # before Ray starts: that alone takes seconds
    files = resolve_inputs(input_spec)
    manifest = load_manifest(bundle)
    layout = plan_layout(manifest, file_columns(files[0]), keep, where=files[0].path)
    payload = pack_bundle(bundle)
    art = manifest.deployment if artifact is None else manifest.artifact(artifact)
    t0 = time.perf_counter()
    started = ray_started_here(address)
    import ray.data  # configures Ray Data's loggers: quiet them after this

    # Ray Data logs a failed batch's whole traceback (and its plan, warnings) on stderr; the error that
    # matters is re-raised below as one line, so its loggers stay quiet during the run
    loggers = [logging.getLogger(n) for n in ("ray.data", "ray")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    saved = None
    try:
        import ray
        import pyarrow.parquet as pq

        ctx = ray.data.DataContext.get_current()
        saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.print_on_execution_start)
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        cpus = ray.cluster_resources().get("CPU", 1)
        n_actors = actors or max(1, int(cpus - _IO_CPUS * 2) // threads)
        if n_actors * threads > cpus - 2 * _IO_CPUS:  # leave the readers and writers their share
            threads_cpu = max(0.1, round((cpus - 2 * _IO_CPUS) / n_actors, 2))
        else:
            threads_cpu = float(threads)
        with staged_directory(output, overwrite) as work:
            skipped_dir = work / SKIPPED_PARTS
            if on_bad_row == "skip":
                skipped_dir.mkdir()
            source = _datasource_class()(files, layout.read_columns, batch_size)
            # reading and writing take a small CPU share: a pool of actors sized to the cluster's CPUs
            # would otherwise leave no CPU for them, and the run would wait forever
            n_reads = len(source.get_read_tasks(1))
            ds = ray.data.read_datasource(source, num_cpus=_IO_CPUS, concurrency=max(1, min(2 * n_actors, n_reads)))
            scored = predict_dataset(ds, ray.put(payload), layout=layout, artifact=art.file, actors=n_actors,
                                     batch_size=batch_size, threads=threads, actor_cpus=threads_cpu,
                                     on_bad_row=on_bad_row,
                                     files=[f.path for f in files],
                                     skipped_dir=str(skipped_dir) if on_bad_row == "skip" else None)
            try:
                scored.write_parquet(str(work), filename_provider=_filename_provider_class()(),
                                     min_rows_per_file=rows_per_file, ray_remote_args={"num_cpus": _IO_CPUS})
            except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's error; re-raise ours as is
                raise _worker_error(exc) from None
            parts = sorted(work.glob("part-*.parquet"))
            rows = sum(pq.read_metadata(p).num_rows for p in parts)
            n_skipped = 0
            if on_bad_row == "skip":
                n_skipped = write_skipped(work / SKIPPED_NAME, _merged_skipped(skipped_dir, files))
                import shutil

                shutil.rmtree(skipped_dir)
            if rows + n_skipped == 0:
                raise DataError(f"{input_spec} has no data rows (expected at least one row)")
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if saved is not None:  # the caller's Ray Data settings come back
            ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.print_on_execution_start = saved
        if started:
            ray.shutdown()
    secs = time.perf_counter() - t0
    out = Path(output)
    return RayPredictResult(
        bundle=str(bundle), artifact=art.file, input=os.fspath(input_spec), output=str(out), format="parquet",
        rows=rows, seconds=round(secs, 3), rows_per_second=round(rows / secs, 1) if secs > 0 else 0.0,
        files=len(files), skipped=n_skipped, skipped_output=str(out / SKIPPED_NAME) if on_bad_row == "skip" else None,
        engine="ray", address=address or "local", actors=n_actors, batch_size=batch_size, output_files=len(parts))


def _merged_skipped(directory: Path, files: Sequence[Any]) -> list:
    """Skipped-row parts merged in input order, each (file, row) once (a retried batch rewrites its part)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(directory.glob("*.parquet"))
    if not parts:
        return []
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    order = {f.path: i for i, f in enumerate(files)}
    seen, keep = set(), []
    recs = table.to_pylist()
    for i in sorted(range(len(recs)), key=lambda i: (order.get(recs[i]["file"], -1), recs[i]["row"])):
        key = (recs[i]["file"], recs[i]["row"])
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return [table.take(pa.array(keep, type=pa.int64()))]


def _worker_error(exc: BaseException) -> BaseException:
    """The seqdeploy error a worker raised, recovered from Ray's wrapping; else ``exc`` itself.

    Ray Data re-raises a failed batch as ``UserCodeException`` whose text holds the
    worker's traceback; the worker's exception object itself does not travel.
    """
    import re

    from seqdeploy import errors

    todo, seen = [exc], set()
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, SeqdeployError) and type(e).__module__ == errors.__name__:
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    found = re.findall(r"seqdeploy\.errors\.(\w+): (.+)", str(exc))
    if found:
        name, message = found[-1]
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, SeqdeployError):
            return cls(message.strip())
    return exc
