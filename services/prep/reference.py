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

from streamml.manifest import SPLITS, CategoryReference, CategoryTransform, NumericReference, NumericTransform
from streamml.settings import S3Settings
from streamml.specs import DatasetSpec, FieldSpec

from services.prep import fit, rules
from services.prep.content import arrow_filesystem, split_files
from services.prep.result import PrepResult, RowCounts

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
    rules.check_spec(spec)
    if not raw_paths:
        raise rules.PrepError(f"dataset {spec.name!r}: no raw files to prepare")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    con.read_parquet(raw_paths, union_by_name=True).create_view("raw")
    present = {name: kind.upper() for name, kind, *_ in con.execute("DESCRIBE raw").fetchall()}
    values, flags = [], []
    for field in spec.fields:
        value, bad_type = _cast_sql(field, present.get(field.name))
        values.append(f'{value} AS "{field.name}"')
        for rule in rules.rules_of(field):
            flags.append((rules.violation_name(field, rule), _violation_sql(field, rule, value, bad_type)))
    flag_columns = [f"coalesce({sql}, false) AS \"{name}\"" for name, sql in flags]
    con.execute(f"CREATE TEMP TABLE typed AS SELECT {', '.join(values + flag_columns)} FROM raw")
    any_flag = " OR ".join(f'"{name}"' for name, _ in flags) or "false"
    checked = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {any_flag}), "
        + ", ".join([f'count(*) FILTER (WHERE "{name}")' for name, _ in flags] or ["0"])
        + " FROM typed"
    ).fetchall()[0]
    names = [f'"{field.name}"' for field in spec.fields]
    key = f'"{spec.key}"'
    order = ", ".join(f'"{name}" DESC NULLS LAST' for name in rules.dedupe_order(spec))
    digits = rules.KEY_HASH_HEX_DIGITS
    table = con.sql(
        f"""
        SELECT *, ('0x' || substr(sha256({key}::VARCHAR), 1, {digits}))::BIGINT AS _hash
        FROM (
            SELECT {', '.join(names)},
                   row_number() OVER (PARTITION BY {key} ORDER BY {order}) AS _version
            FROM typed WHERE NOT ({any_flag})
        )
        WHERE _version = 1
        ORDER BY {key}
        """
    ).to_arrow_table().drop(["_version"])
    con.close()

    drop = np.zeros(table.num_rows, dtype=bool)
    for name in rules.null_dropping_fields(spec):
        drop |= table[name].is_null().to_numpy(zero_copy_only=False)
    kept = table.filter(pa.array(~drop))
    splits = _splits(kept["_hash"].to_numpy(), spec)
    rows = {split: int((splits == split).sum()) for split in SPLITS}
    if rows["train"] == 0:
        raise rules.PrepError(f"dataset {spec.name!r}: the train split is empty after validation")
    train = kept.filter(pa.array(splits == "train"))  # still in key order
    numeric_transform, numeric_reference = _fit_numeric(train, spec)
    transform: dict[str, NumericTransform | CategoryTransform] = {}
    reference: dict[str, NumericReference | CategoryReference] = {}
    for field in spec.features:
        if field.type == "category":
            counts = _value_counts(train[field.name])
            transform[field.name] = fit.category_transform(
                counts, spec.prep.category_min_count, impute=field.nulls == "impute"
            )
            reference[field.name] = fit.category_reference(counts)
        else:
            transform[field.name] = numeric_transform[field.name]
            reference[field.name] = numeric_reference[field.name]
    label_reference = None
    if spec.label is not None:
        label_reference = (
            numeric_reference[spec.label]
            if rules.label_is_numeric(spec)
            else fit.category_reference(_value_counts(train[spec.label]))
        )

    schema = rules.prepared_schema(spec)
    prepared = _transformed(kept, spec, transform, schema)
    fs, folder = arrow_filesystem(out_prefix.rstrip("/"), s3)
    files, hashes = {}, {}
    for split in SPLITS:
        fs.create_dir(f"{folder}/{split}", recursive=True)
        pq.write_table(prepared.filter(pa.array(splits == split)), f"{folder}/{split}/part-00000.parquet", filesystem=fs)
        files[split], hashes[split] = split_files(f"{out_prefix.rstrip('/')}/{split}", schema, spec.key, s3)
    return PrepResult(
        engine=ENGINE,
        schema=schema,
        counts=RowCounts(
            input=checked[0],
            rejected=checked[1],
            violations={name: count for (name, _), count in zip(flags, checked[2:], strict=False)},
            duplicates=(checked[0] - checked[1]) - table.num_rows,
            null_dropped=int(drop.sum()),
        ),
        rows=rows,
        files=files,
        content_sha256=hashes,
        transform=transform,
        reference=reference,
        label_reference=label_reference,
    )


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
        whole = f"coalesce(isfinite({number}) AND abs({number}) < 9223372036854775808.0 AND {number} = floor({number}), false)"
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


def _bucketed_sum(values: np.ndarray, buckets: np.ndarray) -> float:
    """``fit.ordered_sum`` of per-bucket sums, each taken left to right in row (key) order."""
    order = np.argsort(buckets, kind="stable")  # stable: key order within each bucket
    ordered, ordered_buckets = values[order], buckets[order]
    starts = np.flatnonzero(np.diff(ordered_buckets, prepend=-1))
    ends = [*starts[1:], len(ordered)]
    # accumulate adds strictly left to right; np.sum is pairwise and would round differently.
    return fit.ordered_sum(
        {int(ordered_buckets[start]): float(np.add.accumulate(ordered[start:end])[-1]) for start, end in zip(starts, ends, strict=True)}
    )


def _fit_numeric(
    train: pa.Table, spec: DatasetSpec
) -> tuple[dict[str, NumericTransform], dict[str, NumericReference]]:
    # The sample: train rows with the smallest key hashes (unique with the key as tie-break).
    sampled = train.take(
        pc.select_k_unstable(train, fit.SAMPLE_SIZE, [("_hash", "ascending"), (spec.key, "ascending")])
    )
    buckets = train["_hash"].to_numpy() % fit.SUM_BUCKETS
    transforms, references = {}, {}
    for plan in fit.numeric_plans(spec):
        raw = _as_float(train[plan.name])
        has_raw = ~np.isnan(raw)
        present = raw[has_raw]
        ordered = np.sort(present)
        ranks = fit.quantile_ranks(len(ordered), plan.probabilities) if len(ordered) else []
        cuts = fit.numeric_cuts(plan, len(ordered), {rank: float(ordered[rank]) for rank in ranks})
        processed = raw
        if cuts.impute is not None:
            processed = np.where(np.isnan(processed), cuts.impute, processed)
        if cuts.clip is not None:
            processed = np.minimum(np.maximum(processed, cuts.clip[0]), cuts.clip[1])
        has_processed = ~np.isnan(processed)
        processed = processed[has_processed]
        raw_buckets, processed_buckets = buckets[has_raw], buckets[has_processed]
        raw_sum = _bucketed_sum(present, raw_buckets)
        processed_sum = _bucketed_sum(processed, processed_buckets)
        raw_mean = fit.mean_of(raw_sum, len(present))
        mean = fit.mean_of(processed_sum, len(processed)) if len(processed) else 0.0
        bins = np.bincount(np.searchsorted(cuts.edges, present, side="right"), minlength=len(cuts.edges) + 1)
        sums = fit.NumericSums(
            raw_count=len(present),
            raw_sum=raw_sum,
            raw_sum_sq_dev=_bucketed_sum((present - raw_mean) * (present - raw_mean), raw_buckets),
            processed_count=len(processed),
            processed_sum=processed_sum,
            processed_sum_sq_dev=_bucketed_sum((processed - mean) * (processed - mean), processed_buckets),
            bin_counts=[int(count) for count in bins],
        )
        sample = _as_float(sampled[plan.name])
        references[plan.name] = fit.numeric_reference(cuts, sums, [float(v) for v in sample[~np.isnan(sample)]])
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
