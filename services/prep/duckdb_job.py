"""The DuckDB preparation: the same steps and output as the Spark job, on one machine.

    raw = ["s3a://streamml/raw/..."]
    result = prepare_with_duckdb(spec, raw, "s3a://streamml/datasets/tx/v3", settings.s3)

DuckDB casts, validates, deduplicates and assigns splits; numpy fits and
transforms; ``fit`` finishes the statistics, as for Spark, so both engines
produce bit-identical rows, statistics and content hashes (the integration
test ``test_duckdb_vs_spark.py`` holds them to it). The raw objects are read
where they are (an ``s3a://`` URI through pyarrow's S3 filesystem, or a
local path), streamed into DuckDB, never copied whole to local disk; each
split is written as one object. Written independently of ``job.py``: the
two check each other.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from services.prep import fit, rules
from services.prep.content import arrow_filesystem, object_key, split_files
from services.prep.result import DriftSides, PrepResult, RowCounts
from streamml.manifest import SPLITS, CategoryTransform, NumericReference, NumericTransform
from streamml.settings import S3Settings
from streamml.specs import KAFKA_TIME, DatasetSpec, FieldSpec
from streamml.store import ObjectStore, make_client

ENGINE = "duckdb"
SQL_TYPES = {
    "string": "VARCHAR",
    "category": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
}
FRACTIONAL_SQL = ("FLOAT", "DOUBLE", "REAL", "DECIMAL")
AFTER = "_after_drift"  # a drift build's rows: landed at or after the drift point
WEIGHT = rules.WEIGHT


def prepare_with_duckdb(
    spec: DatasetSpec,
    raw_paths: list[str],
    out_prefix: str,
    s3: S3Settings | None = None,
    since_ms: int | None = None,
    drift_point_ms: int | None = None,
    half_life_s: float | None = None,
) -> PrepResult:
    """Prepare ``raw_paths`` (local or s3a://) into ``out_prefix``: the contract of
    ``job.prepare_with_spark``, training window, drift sides and recency weights included."""
    spec = rules.engine_spec(spec, raw_paths)
    weighted = drift_point_ms is not None and half_life_s is not None
    checked, latest = _validated_latest(spec, _raw_dataset(raw_paths, s3), since_ms, drift_point_ms,
                                        half_life_s if weighted else None)
    drop = np.zeros(latest.num_rows, dtype=bool)
    for name in rules.null_dropping_fields(spec):
        drop |= latest[name].is_null().to_numpy(zero_copy_only=False)
    splits = _splits(latest["_hash"].to_numpy(), spec)
    keep = ~drop
    sides = None
    if drift_point_ms is not None:
        after = latest[AFTER].to_numpy(zero_copy_only=False)
        old_test = (splits == "test") & ~after
        sides = DriftSides(before=int((keep & ~old_test & ~after).sum()), after=int((keep & after).sum()),
                           test_left_out=int((keep & old_test).sum()))
        keep &= ~old_test
    kept, splits = latest.filter(pa.array(keep)), splits[keep]
    rows = {split: int((splits == split).sum()) for split in SPLITS}
    if rows["train"] == 0:
        raise rules.PrepError(f"dataset {spec.name!r}: the train split is empty after validation")
    train = kept.filter(pa.array(splits == "train"))  # still in (hash, key) order
    numeric_transform, numeric_reference = _fit_numeric(train, spec)
    counts = {name: _value_counts(train[name]) for name in fit.counted_fields(spec)}
    fitted = fit.fitted(spec, numeric_transform, numeric_reference, counts)

    schema = rules.prepared_schema(spec, weighted)
    prepared = _transformed(kept, spec, fitted.transform, schema)
    files, hashes = {}, {}
    for split in SPLITS:
        split_uri = f"{out_prefix.rstrip('/')}/{split}"
        _write_parquet(prepared.filter(pa.array(splits == split)), f"{split_uri}/part-00000.parquet", s3)
        files[split], hashes[split] = split_files(split_uri, schema, spec.key, s3)
    input_rows, rejected = checked.pop("input"), checked.pop("rejected")
    return PrepResult(
        engine=ENGINE,
        schema=schema,
        counts=RowCounts(
            input=input_rows,
            rejected=rejected,
            violations=checked,
            duplicates=(input_rows - rejected) - latest.num_rows,
            null_dropped=int(drop.sum()),
        ),
        rows=rows,
        files=files,
        content_sha256=hashes,
        transform=fitted.transform,
        reference=fitted.reference,
        label_reference=fitted.label_reference,
        drift_sides=sides,
    )


def _raw_dataset(raw_paths: list[str], s3: S3Settings | None) -> ds.Dataset:
    """The raw objects as one dataset: columns by name across objects (a missing one is null), types
    widened where they differ (int32 and int64 read as int64), as Spark's mergeSchema does."""
    located = [arrow_filesystem(path, s3) for path in raw_paths]
    fs = located[0][0]
    factory = ds.FileSystemDatasetFactory(fs, [path for _, path in located], ds.ParquetFileFormat(),
                                          ds.FileSystemFactoryOptions())
    try:
        schema = factory.inspect(promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as error:
        raise rules.PrepError(f"the raw objects disagree on a column's type: {error}") from None
    return factory.finish(schema)


def _write_parquet(table: pa.Table, uri: str, s3: S3Settings | None) -> None:
    """One Parquet file at a local path, or one object written in a single PUT through the store
    helper (pyarrow's multipart upload sends parts without a length, which Ceph's gateway refuses)."""
    fs, path = arrow_filesystem(uri, s3)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, path, filesystem=fs)
        return
    assert s3 is not None  # arrow_filesystem refuses an S3 URI without settings
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    ObjectStore(s3, make_client(s3)).put(object_key(uri), buffer.getvalue().to_pybytes())


def _validated_latest(
    spec: DatasetSpec, raw: ds.Dataset, since_ms: int | None, drift_point_ms: int | None,
    half_life_s: float | None = None,
) -> tuple[dict[str, int], pa.Table]:
    """Row counts (input, rejected, per violation) and the latest valid row per key, by (hash, key)."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        con.register("raw_objects", raw)
        # Whole microseconds compare exactly with the millisecond bounds; a row without a Kafka
        # time counts as landed at time 0 (as ``builder.kafka_times`` counts it).
        kafka_us = f'coalesce(epoch_us("{KAFKA_TIME}"), 0)' if KAFKA_TIME in raw.schema.names else "0"
        window = "" if since_ms is None else f"WHERE {kafka_us} >= {int(since_ms) * 1000}"
        con.execute(f"CREATE TEMP VIEW raw AS SELECT * FROM raw_objects {window}")
        present = {name: kind.upper() for name, kind, *_ in con.execute("DESCRIBE raw").fetchall()}
        values, flags = [], {}
        for field in spec.fields:
            value, bad_type = _cast_sql(field, present.get(field.name))
            values.append(f'{value} AS "{field.name}"')
            for rule in rules.rules_of(field):
                flags[rules.violation_name(field, rule)] = _violation_sql(field, rule, value, bad_type)
        flag_columns = [f'coalesce({sql}, false) AS "{name}"' for name, sql in flags.items()]
        carried = [] if drift_point_ms is None else [f"{kafka_us} >= {int(drift_point_ms) * 1000} AS {AFTER}"]
        if half_life_s is not None:
            carried.append(f"{rules.recency_weight_sql(kafka_us, drift_point_ms, half_life_s)} AS {WEIGHT}")
        carried_names = [AFTER, WEIGHT][:len(carried)]
        con.execute(f"CREATE TEMP TABLE typed AS SELECT {', '.join(values + flag_columns + carried)} FROM raw")
        any_flag = " OR ".join(f'"{name}"' for name in flags)
        counted = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {any_flag}), "
            + ", ".join(f'count(*) FILTER (WHERE "{name}")' for name in flags)
            + " FROM typed"
        ).fetchall()[0]
        checked = dict(zip(["input", "rejected", *flags], counted, strict=True))
        names = ", ".join([f'"{field.name}"' for field in spec.fields] + carried_names)
        key = f'"{spec.key}"'
        # The drift side (and weight) come last in the order: they only tell apart rows equal in every field.
        order = ", ".join([f'"{name}" DESC NULLS LAST' for name in rules.dedupe_order(spec)]
                          + [f"{name} DESC" for name in carried_names])
        digits = rules.KEY_HASH_HEX_DIGITS
        latest = con.sql(
            f"""
            SELECT *, ('0x' || substr(sha256({key}::VARCHAR), 1, {digits}))::BIGINT AS _hash
            FROM (
                SELECT {names}, row_number() OVER (PARTITION BY {key} ORDER BY {order}) AS _version
                FROM typed WHERE NOT ({any_flag})
            )
            WHERE _version = 1
            ORDER BY _hash, {key}
            """
        ).to_arrow_table()
    finally:
        con.close()
    return checked, latest.drop(["_version"])


def _cast_sql(field: FieldSpec, raw_type: str | None) -> tuple[str, str]:
    """SQL for (value of the declared type, whether a present value failed to convert)."""
    target = SQL_TYPES[field.type]
    if raw_type is None:
        return f"NULL::{target}", "false"
    source = f'"{field.name}"'
    value = f"TRY_CAST({source} AS {target})"
    bad_type = f"({source} IS NOT NULL AND {value} IS NULL)"
    if field.type == "int" and raw_type.startswith(FRACTIONAL_SQL):
        # TRY_CAST rounds 2.5 to 3; only whole numbers are ints.
        number = f"{source}::DOUBLE"
        fits = f"isfinite({number}) AND abs({number}) < 9223372036854775808.0"
        whole = f"coalesce({fits} AND {number} = floor({number}), false)"
        bad_type = f"({source} IS NOT NULL AND NOT {whole})"
        value = f"CASE WHEN NOT {bad_type} THEN {value} END"
    if field.type == "float":
        value = f"CASE WHEN {value} = 0 THEN 0.0::DOUBLE WHEN isfinite({value}) THEN {value} END"
    return value, bad_type


def _violation_sql(field: FieldSpec, rule: rules.Rule, value: str, bad_type: str) -> str:
    if rule == "type":
        return bad_type
    if rule == "null":
        return f"({value} IS NULL AND NOT {bad_type})"
    if rule == "min":
        return f"({value} < {field.min!r})"
    if rule == "max":
        return f"({value} > {field.max!r})"
    allowed = ", ".join("'" + category.replace("'", "''") + "'" for category in field.categories or [])
    return f"({value} NOT IN ({allowed}))"


def _splits(hashes: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    train_end, validation_end = rules.split_bounds(spec.prep.splits)
    buckets = hashes % rules.SPLIT_BUCKETS
    return np.where(buckets < train_end, "train", np.where(buckets < validation_end, "validation", "test"))


def _as_float(column: pa.ChunkedArray) -> np.ndarray:
    """Float64 values with NaN for null (real NaNs were nulled when cast)."""
    return pc.fill_null(column.cast(pa.float64()), np.nan).to_numpy()


class _BucketOrder:
    """Sums in the order ``fit`` defines: per bucket in (key hash, key) order, then buckets in order."""

    def __init__(self, key_hashes: np.ndarray) -> None:
        buckets = key_hashes % fit.SUM_BUCKETS
        self.order = np.argsort(buckets, kind="stable")  # stable: (hash, key) order within a bucket
        ordered = buckets[self.order]
        starts = np.flatnonzero(np.diff(ordered, prepend=-1))
        ends = [*starts[1:], len(ordered)]
        self.segments = [(int(ordered[start]), start, end) for start, end in zip(starts, ends, strict=True)]

    def sum(self, values: np.ndarray) -> float:
        """Sum of the non-NaN values of a column given in (key hash, key) order."""
        ordered = values[self.order]
        per_bucket = {}
        for bucket, start, end in self.segments:
            segment = ordered[start:end]
            segment = segment[~np.isnan(segment)]
            if len(segment):
                # accumulate adds strictly left to right; np.sum is pairwise and would round differently.
                per_bucket[bucket] = float(np.add.accumulate(segment)[-1])
        return fit.ordered_sum(per_bucket)


def _fit_numeric(
    train: pa.Table, spec: DatasetSpec
) -> tuple[dict[str, NumericTransform], dict[str, NumericReference]]:
    # The sample: train rows with the smallest key hashes (unique with the key as tie-break).
    sampled = train.take(
        pc.select_k_unstable(train, fit.SAMPLE_SIZE, [("_hash", "ascending"), (spec.key, "ascending")])
    )
    in_order = _BucketOrder(train["_hash"].to_numpy())
    transforms, references = {}, {}
    for plan in fit.numeric_plans(spec):
        raw = _as_float(train[plan.name])
        present = raw[~np.isnan(raw)]  # in (key hash, key) order: the quantile sample is its head
        cuts = fit.cuts_from_sample(plan, [float(value) for value in present[: fit.QUANTILE_SAMPLE]])
        processed = raw  # NaN stands for null throughout
        if cuts.impute is not None:
            processed = np.where(np.isnan(processed), cuts.impute, processed)
        if cuts.clip is not None:
            processed = np.minimum(np.maximum(processed, cuts.clip[0]), cuts.clip[1])
        processed_count = int((~np.isnan(processed)).sum())
        raw_sum, processed_sum = in_order.sum(raw), in_order.sum(processed)
        raw_mean = fit.mean_of(raw_sum, len(present))
        mean = fit.mean_of(processed_sum, processed_count) if processed_count else 0.0
        bins = np.bincount(np.searchsorted(cuts.edges, present, side="right"), minlength=len(cuts.edges) + 1)
        sums = fit.NumericSums(
            raw_count=len(present),
            raw_sum=raw_sum,
            raw_sum_sq_dev=in_order.sum((raw - raw_mean) * (raw - raw_mean)),
            processed_count=processed_count,
            processed_sum=processed_sum,
            processed_sum_sq_dev=in_order.sum((processed - mean) * (processed - mean)),
            bin_counts=[int(count) for count in bins],
        )
        in_sample = _as_float(sampled[plan.name])
        sample = [float(value) for value in in_sample[~np.isnan(in_sample)]]
        references[plan.name] = fit.numeric_reference(cuts, sums, sample)
        if plan.transformed:
            transforms[plan.name] = fit.numeric_transform(plan, cuts, sums)
    return transforms, references


def _value_counts(column: pa.ChunkedArray) -> dict[str, int]:
    counted = pc.value_counts(column.drop_null()).to_pylist()
    return {fit.label_text(item["values"]): item["counts"] for item in counted}


def _transformed(
    kept: pa.Table,
    spec: DatasetSpec,
    transform: dict[str, NumericTransform | CategoryTransform],
    schema: pa.Schema,
) -> pa.Table:
    columns = {spec.key: kept[spec.key], spec.event_time: kept[spec.event_time]}
    for field in spec.features:
        fitted = transform[field.name]
        if isinstance(fitted, CategoryTransform):
            values = kept[field.name]
            if fitted.impute is not None:
                values = pc.fill_null(values, fitted.impute)
            found = pc.index_in(values, value_set=pa.array(fitted.vocabulary, pa.string()))
            columns[field.name] = pc.fill_null(pc.add(found, 1), 0).cast(pa.int64())
            continue
        value = _as_float(kept[field.name])
        value = np.where(np.isnan(value), fitted.impute if fitted.impute is not None else fitted.mean, value)
        if fitted.clip is not None:
            value = np.minimum(np.maximum(value, fitted.clip[0]), fitted.clip[1])
        columns[field.name] = pa.array((value - fitted.mean) / fitted.std)
    if spec.label is not None:
        columns[spec.label] = kept[spec.label]
    if rules.WEIGHT in schema.names:
        columns[rules.WEIGHT] = kept[rules.WEIGHT]
    return pa.table(columns).cast(schema)
