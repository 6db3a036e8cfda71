"""The same preparation as the Spark job, written independently with DuckDB and numpy.

It exists to check the Spark job (same rows, statistics and content hashes)
and as the baseline of ``bench/prep``. DuckDB casts, validates, deduplicates
and assigns splits; numpy fits and transforms. It reads and writes local
paths (or S3 through pyarrow when given S3 settings for the output).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.prep import fit, rules
from services.prep.content import arrow_filesystem, split_files
from services.prep.result import PrepResult, RowCounts
from streamml.manifest import SPLITS, CategoryTransform, NumericReference, NumericTransform
from streamml.settings import S3Settings
from streamml.specs import DatasetSpec, FieldSpec

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


def prepare_with_duckdb(
    spec: DatasetSpec, raw_paths: list[str], out_prefix: str, s3: S3Settings | None = None
) -> PrepResult:
    spec = rules.with_event_time(spec)
    rules.check_spec(spec)
    if not raw_paths:
        raise rules.PrepError(f"dataset {spec.name!r}: no raw files to prepare")
    checked, latest = _validated_latest(spec, raw_paths)
    drop = np.zeros(latest.num_rows, dtype=bool)
    for name in rules.null_dropping_fields(spec):
        drop |= latest[name].is_null().to_numpy(zero_copy_only=False)
    kept = latest.filter(pa.array(~drop))
    splits = _splits(kept["_hash"].to_numpy(), spec)
    rows = {split: int((splits == split).sum()) for split in SPLITS}
    if rows["train"] == 0:
        raise rules.PrepError(f"dataset {spec.name!r}: the train split is empty after validation")
    train = kept.filter(pa.array(splits == "train"))  # still in (hash, key) order
    numeric_transform, numeric_reference = _fit_numeric(train, spec)
    counts = {name: _value_counts(train[name]) for name in fit.counted_fields(spec)}
    fitted = fit.fitted(spec, numeric_transform, numeric_reference, counts)

    schema = rules.prepared_schema(spec)
    prepared = _transformed(kept, spec, fitted.transform, schema)
    fs, folder = arrow_filesystem(out_prefix.rstrip("/"), s3)
    files, hashes = {}, {}
    for split in SPLITS:
        fs.create_dir(f"{folder}/{split}", recursive=True)
        rows_of_split = prepared.filter(pa.array(splits == split))
        pq.write_table(rows_of_split, f"{folder}/{split}/part-00000.parquet", filesystem=fs)
        files[split], hashes[split] = split_files(f"{out_prefix.rstrip('/')}/{split}", schema, spec.key, s3)
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
    )


def _validated_latest(spec: DatasetSpec, raw_paths: list[str]) -> tuple[dict[str, int], pa.Table]:
    """Row counts (input, rejected, per violation) and the latest valid row per key, by (hash, key)."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        con.read_parquet(raw_paths, union_by_name=True).create_view("raw")
        present = {name: kind.upper() for name, kind, *_ in con.execute("DESCRIBE raw").fetchall()}
        values, flags = [], {}
        for field in spec.fields:
            value, bad_type = _cast_sql(field, present.get(field.name))
            values.append(f'{value} AS "{field.name}"')
            for rule in rules.rules_of(field):
                flags[rules.violation_name(field, rule)] = _violation_sql(field, rule, value, bad_type)
        flag_columns = [f'coalesce({sql}, false) AS "{name}"' for name, sql in flags.items()]
        con.execute(f"CREATE TEMP TABLE typed AS SELECT {', '.join(values + flag_columns)} FROM raw")
        any_flag = " OR ".join(f'"{name}"' for name in flags)
        counted = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {any_flag}), "
            + ", ".join(f'count(*) FILTER (WHERE "{name}")' for name in flags)
            + " FROM typed"
        ).fetchall()[0]
        checked = dict(zip(["input", "rejected", *flags], counted, strict=True))
        names = ", ".join(f'"{field.name}"' for field in spec.fields)
        key = f'"{spec.key}"'
        order = ", ".join(f'"{name}" DESC NULLS LAST' for name in rules.dedupe_order(spec))
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
    return pa.table(columns).cast(schema)
