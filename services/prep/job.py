"""The Spark preparation: raw Parquet in, prepared splits and their statistics out.

    spark = spark_session("local[*]", state_dir, settings.s3, jars_dir)
    raw = ["s3a://streamml/raw/..."]
    result = prepare_with_spark(spark, spec, raw, "s3a://streamml/datasets/tx/v3", settings.s3)
    manifest = build_manifest(result, spec, version=3, lineage=..., trigger=..., code_version=...)

Steps, in order: cast every field to its declared type and drop (and count)
rows that break a rule; keep the latest version of each key; drop rows with
nulls where the spec says ``nulls: drop``; assign each key to a split by its
hash; fit imputation, clipping, standardisation and vocabularies on train;
write every split transformed as Parquet under ``<out_prefix>/<split>/``.

Statistics are finished in ``fit`` from counts, bounded quantile samples and
bucketed sums in a fixed order, so they do not depend on partitioning and
match the DuckDB engine (``duckdb_job.py``) bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import reduce

import pyarrow as pa
import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import types as T

from services.prep import fit, rules
from services.prep.content import split_files
from services.prep.result import DriftSides, PrepResult, RowCounts
from streamml.manifest import SPLITS, CategoryTransform, FileEntry, NumericReference, NumericTransform
from streamml.settings import S3Settings
from streamml.specs import KAFKA_TIME, DatasetSpec, FieldSpec

ENGINE = "spark"
SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "category": T.StringType(),
    "int": T.LongType(),
    "float": T.DoubleType(),
    "bool": T.BooleanType(),
    "timestamp": T.TimestampType(),
}
FRACTIONAL = (T.FloatType, T.DoubleType, T.DecimalType)
HASH, SPLIT, DROP, BUCKET = "_hash", "_split", "_drop", "_bucket"
AFTER = "_after_drift"  # a drift build's rows: landed at or after the drift point
WEIGHT = rules.WEIGHT
log = logging.getLogger(__name__)


@contextmanager
def _step(name: str, dataset: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds = round(time.perf_counter() - started, 3)
    log.info("prep step done", extra={"dataset": dataset, "step": name, "seconds": seconds})


def prepare_with_spark(
    spark: SparkSession,
    spec: DatasetSpec,
    raw_paths: list[str],
    out_prefix: str,
    s3: S3Settings | None = None,
    since_ms: int | None = None,
    drift_point_ms: int | None = None,
    half_life_s: float | None = None,
) -> PrepResult:
    """Prepare ``raw_paths`` (local or s3a://) into ``out_prefix``; ``s3`` reads the written files back.

    ``since_ms`` reads only the rows with a Kafka timestamp at or after it (a
    training window). A drift build (``drift_point_ms``) also marks each row's
    side of the drift by its Kafka timestamp and leaves pre-drift rows out of
    the test split, so the version is judged on the new world; with
    ``half_life_s`` each row gets a training weight by its recency
    (``rules.recency_weight_sql``).
    """
    spec = rules.engine_spec(spec, raw_paths)
    raw = spark.read.option("mergeSchema", "true").parquet(*raw_paths)
    carried: list[str] = []
    # Whole microseconds compare exactly with the millisecond bounds (a double would not). A row
    # without a Kafka time counts as landed at time 0 (as ``builder.kafka_times`` counts it).
    kafka_us = F.coalesce(F.unix_micros(F.col(KAFKA_TIME)), F.lit(0)) if KAFKA_TIME in raw.columns else F.lit(0)
    if since_ms is not None:
        raw = raw.where(kafka_us >= F.lit(since_ms * 1000))
    if drift_point_ms is not None:
        raw = raw.withColumn(AFTER, kafka_us >= F.lit(drift_point_ms * 1000))
        carried = [AFTER]
        if half_life_s is not None:
            weight = F.expr(rules.recency_weight_sql("_kafka_us", drift_point_ms, half_life_s))
            raw = raw.withColumn("_kafka_us", kafka_us).withColumn(WEIGHT, weight).drop("_kafka_us")
            carried.append(WEIGHT)
    typed = typed_rows(raw, spec, carried)
    broken = {name: F.col(f"`{name}`") for name in typed.columns if name.startswith("_v:")}
    with _step("validate", spec.name):
        checked = typed.agg(
            F.count(F.lit(1)).alias("input"),
            F.count(F.when(_any(broken.values()), 1)).alias("rejected"),
            *[F.count(F.when(column, 1)).alias(name) for name, column in broken.items()],
        ).first()
    valid = typed.where(~_any(broken.values())).select(*[f.name for f in spec.fields], *carried)
    deduped = latest_per_key(valid, spec, carried).persist()
    try:
        keep = ~F.col(DROP)
        sides: list[Column] = []
        if drift_point_ms is not None:
            old_test = (F.col(SPLIT) == "test") & ~F.col(AFTER)
            sides = [F.count(F.when(keep & ~old_test & ~F.col(AFTER), 1)).alias("before"),
                     F.count(F.when(keep & F.col(AFTER), 1)).alias("after"),
                     F.count(F.when(keep & old_test, 1)).alias("test_left_out")]
            keep = keep & ~old_test
        with _step("dedupe", spec.name):
            tally = deduped.agg(
                F.count(F.lit(1)).alias("deduped"),
                F.count(F.when(F.col(DROP), 1)).alias("dropped"),
                *[F.count(F.when(keep & (F.col(SPLIT) == s), 1)).alias(s) for s in SPLITS],
                *sides,
            ).first()
        rows = {split: tally[split] for split in SPLITS}
        if rows["train"] == 0:
            raise rules.PrepError(f"dataset {spec.name!r}: the train split is empty after validation")
        kept = deduped.where(keep)
        with _step("fit", spec.name):
            train = kept.where(F.col(SPLIT) == "train")
            numeric_transform, numeric_reference = fit_numeric(train, spec, fit.numeric_plans(spec))
            counts = value_counts(train, fit.counted_fields(spec))
            fitted = fit.fitted(spec, numeric_transform, numeric_reference, counts)
        schema = rules.prepared_schema(spec, WEIGHT in carried)
        prepared = transformed(spark, kept, spec, fitted.transform)
        files, hashes = write_splits(prepared, spec, schema, out_prefix, s3)
    finally:
        deduped.unpersist()
    return PrepResult(
        engine=ENGINE,
        schema=schema,
        counts=RowCounts(
            input=checked["input"],
            rejected=checked["rejected"],
            violations={name.removeprefix("_v:"): checked[name] for name in broken},
            duplicates=(checked["input"] - checked["rejected"]) - tally["deduped"],
            null_dropped=tally["dropped"],
        ),
        rows=rows,
        files=files,
        content_sha256=hashes,
        transform=fitted.transform,
        reference=fitted.reference,
        label_reference=fitted.label_reference,
        drift_sides=None if drift_point_ms is None else DriftSides(tally["before"], tally["after"], tally["test_left_out"]),
    )


def write_splits(
    prepared: DataFrame, spec: DatasetSpec, schema: pa.Schema, out_prefix: str, s3: S3Settings | None
) -> tuple[dict[str, list[FileEntry]], dict[str, str]]:
    """Write each split under ``<out_prefix>/<split>/`` and describe what landed there."""
    files, hashes = {}, {}
    for split in SPLITS:
        uri = f"{out_prefix.rstrip('/')}/{split}"
        # The split filter is pushed below the transform: each write transforms only its rows.
        with _step(f"write {split}", spec.name):
            prepared.where(F.col(SPLIT) == split).drop(SPLIT).write.mode("overwrite").parquet(uri)
        with _step(f"hash {split}", spec.name):
            files[split], hashes[split] = split_files(uri, schema, spec.key, s3)
    return files, hashes


def _any(columns) -> Column:
    return reduce(lambda left, right: left | right, columns, F.lit(False))


def typed_rows(raw: DataFrame, spec: DatasetSpec, carried: list[str] = ()) -> DataFrame:
    """Every field cast to its declared type, plus a boolean column ``_v:<field>.<rule>`` per rule
    (and the ``carried`` columns unchanged)."""
    present = {field.name: field.dataType for field in raw.schema.fields}
    columns: list[Column] = []
    for field in spec.fields:
        value, bad_type = _cast(field, present.get(field.name))
        columns.append(value.alias(field.name))
        for rule in rules.rules_of(field):
            broken = F.coalesce(_violation(field, rule, value, bad_type), F.lit(False))
            columns.append(broken.alias("_v:" + rules.violation_name(field, rule)))
    return raw.select(*columns, *carried)


def _violation(field: FieldSpec, rule: rules.Rule, value: Column, bad_type: Column) -> Column:
    if rule == "type":
        return bad_type
    if rule == "null":
        return value.isNull() & ~bad_type
    if rule == "min":
        return value < F.lit(field.min)
    if rule == "max":
        return value > F.lit(field.max)
    return ~value.isin(field.categories or [])


def _cast(field: FieldSpec, raw_type: T.DataType | None) -> tuple[Column, Column]:
    """(value of the declared type, whether a present value failed to convert)."""
    target = SPARK_TYPES[field.type]
    if raw_type is None:
        return F.lit(None).cast(target), F.lit(False)
    source = F.col(field.name)
    value = source.cast(target)
    bad_type = source.isNotNull() & value.isNull()
    if field.type == "int" and isinstance(raw_type, FRACTIONAL):
        # A plain cast would truncate 2.5 to 2; only whole numbers are ints.
        number = source.cast("double")
        whole = ~F.isnan(number) & (F.abs(number) < F.lit(2.0**63)) & (number == F.floor(number))
        bad_type = source.isNotNull() & ~F.coalesce(whole, F.lit(False))
        value = F.when(~bad_type, value)
    if field.type == "float":
        # NaN and infinities are no measurement: they count as null. -0.0 becomes 0.0 so
        # equal values sort, group and hash alike.
        finite = ~F.isnan(value) & (F.abs(value) != F.lit(math.inf))
        value = F.when(value == 0, F.lit(0.0)).when(finite, value)
    return value, bad_type


def latest_per_key(valid: DataFrame, spec: DatasetSpec, carried: list[str] = ()) -> DataFrame:
    """One row per key, the greatest (event time, other fields...) with nulls lowest, and its split.

    A ``carried`` column comes with the winning row; it is last in the order,
    so it only tells apart rows equal in every field.

    Rows come out partitioned by sum bucket and sorted by (key hash, key)
    within each partition: the order ``bucket_sums`` relies on. The bucket is
    a function of the key, so one shuffle serves both dedupe and the sums.
    """
    order = rules.dedupe_order(spec)
    digest = F.sha2(F.col(spec.key).cast("string"), 256)
    key_hash = F.conv(F.substring(digest, 1, rules.KEY_HASH_HEX_DIGITS), 16, 10).cast("long")
    by_bucket = valid.withColumn(HASH, key_hash).withColumn(BUCKET, F.col(HASH) % fit.SUM_BUCKETS)
    # Spark orders nulls first inside a struct, so max() is "descending, nulls last".
    # Grouping by the hash first makes the sort compare 64-bit hashes, not keys
    # that often share a long common prefix.
    latest = (
        by_bucket.repartition(BUCKET)
        .groupBy(HASH, BUCKET, spec.key)
        .agg(F.max(F.struct(*order, *carried)).alias("_latest"))
        .select(BUCKET, HASH, spec.key, *[F.col(f"_latest.{name}").alias(name) for name in [*order, *carried]])
        .sortWithinPartitions(HASH, BUCKET, spec.key)  # as the aggregate left them: no extra sort
    )
    train_end, validation_end = rules.split_bounds(spec.prep.splits)
    split_bucket = F.col(HASH) % rules.SPLIT_BUCKETS
    split = F.when(split_bucket < train_end, "train").when(split_bucket < validation_end, "validation")
    drop = _any(F.col(name).isNull() for name in rules.null_dropping_fields(spec))
    return latest.withColumn(SPLIT, split.otherwise("test")).withColumn(DROP, drop)


def value_counts(train: DataFrame, names: list[str]) -> dict[str, dict[str, int]]:
    """Non-null value counts of several columns in one pass, values as text (see ``fit.label_text``)."""
    if not names:
        return {}
    # Casting to string writes booleans as true/false and integers in decimal, as label_text does.
    pairs = F.array(
        *[F.struct(F.lit(name).alias("field"), F.col(name).cast("string").alias("value")) for name in names]
    )
    stacked = train.select(F.explode(pairs).alias("pair")).select("pair.field", "pair.value")
    counts: dict[str, dict[str, int]] = {name: {} for name in names}
    for row in stacked.where(F.col("value").isNotNull()).groupBy("field", "value").count().collect():
        counts[row["field"]][row["value"]] = row["count"]
    return counts


def fit_numeric(
    train: DataFrame, spec: DatasetSpec, plans: list[fit.NumericPlan]
) -> tuple[dict[str, NumericTransform], dict[str, NumericReference]]:
    """Numeric transforms and references; ``train`` must be in bucket order (see ``latest_per_key``)."""
    if not plans:
        return {}, {}
    values = train.select(BUCKET, *[F.col(plan.name).cast("double").alias(plan.name) for plan in plans])
    cuts, samples = numeric_cuts(train, spec, plans)
    sums = bucket_sums(values, plans, cuts)
    transforms, references = {}, {}
    for plan in plans:
        references[plan.name] = fit.numeric_reference(cuts[plan.name], sums[plan.name], samples[plan.name])
        if plan.transformed:
            transforms[plan.name] = fit.numeric_transform(plan, cuts[plan.name], sums[plan.name])
    return transforms, references


def numeric_cuts(
    train: DataFrame, spec: DatasetSpec, plans: list[fit.NumericPlan]
) -> tuple[dict[str, fit.NumericCuts], dict[str, list[float]]]:
    """Cuts from each column's quantile sample, and its reference sample (see ``fit``).

    Both come from top-n queries in (key hash, key) order, which keep at most
    n rows per partition: the driver and the executors hold at most
    ``QUANTILE_SAMPLE`` values per column, whatever the size of the dataset.
    """
    size = fit.QUANTILE_SAMPLE
    as_double = [F.col(plan.name).cast("double").alias(plan.name) for plan in plans]
    rows = train.orderBy(HASH, spec.key).limit(max(size, fit.SAMPLE_SIZE)).select(*as_double).collect()
    head = rows[:size]
    cuts, references = {}, {}
    for position, plan in enumerate(plans):
        values = [row[position] for row in head if row[position] is not None]
        # The reference sample: the column's values in the train rows with the smallest key hashes.
        references[plan.name] = [row[position] for row in rows[: fit.SAMPLE_SIZE] if row[position] is not None]
        if len(values) < len(head) == size:
            # Nulls among these rows: the column's own first `size` non-null rows.
            column = F.col(plan.name)
            own = train.where(column.isNotNull()).orderBy(HASH, spec.key).limit(size).select(column.cast("double"))
            values = [row[0] for row in own.collect()]
        cuts[plan.name] = fit.cuts_from_sample(plan, values)
    return cuts, references


def bucket_sums(
    in_bucket_order: DataFrame, plans: list[fit.NumericPlan], cuts: dict[str, fit.NumericCuts]
) -> dict[str, fit.NumericSums]:
    """Counts, sums and bin counts, then sums of squared deviations from the means, per column.

    Each bucket's rows sit in one partition in (key hash, key) order and the
    partial aggregate reads a partition in order, so a bucket's sum is a
    left-to-right sum in that order, whatever the partitioning.
    """
    raw = {plan.name: F.col(plan.name) for plan in plans}
    processed = {plan.name: _processed(raw[plan.name], cuts[plan.name]) for plan in plans}
    first = _per_bucket(
        in_bucket_order,
        [
            aggregate
            for plan in plans
            for aggregate in (
                F.count(raw[plan.name]).alias(f"{plan.name}#raw_count"),
                F.sum(raw[plan.name]).alias(f"{plan.name}#raw_sum"),
                F.count(processed[plan.name]).alias(f"{plan.name}#count"),
                F.sum(processed[plan.name]).alias(f"{plan.name}#sum"),
                *_bin_counts(raw[plan.name], cuts[plan.name].edges, plan.name),
            )
        ],
    )

    def total(name: str) -> int:
        return sum(counts[name] for counts in first)

    def ordered_sum(rows: list[Row], name: str) -> float:
        return fit.ordered_sum({row[BUCKET]: row[name] for row in rows})

    def mean(plan: fit.NumericPlan, kind: str) -> float:
        count = total(f"{plan.name}#{kind}count")
        return fit.mean_of(ordered_sum(first, f"{plan.name}#{kind}sum"), count) if count else 0.0

    second = _per_bucket(
        in_bucket_order,
        [
            aggregate
            for plan in plans
            for aggregate in (
                F.sum(_squared(raw[plan.name] - F.lit(mean(plan, "raw_")))).alias(f"{plan.name}#raw_ssd"),
                F.sum(_squared(processed[plan.name] - F.lit(mean(plan, "")))).alias(f"{plan.name}#ssd"),
            )
        ],
    )
    return {
        plan.name: fit.NumericSums(
            raw_count=total(f"{plan.name}#raw_count"),
            raw_sum=ordered_sum(first, f"{plan.name}#raw_sum"),
            raw_sum_sq_dev=ordered_sum(second, f"{plan.name}#raw_ssd"),
            processed_count=total(f"{plan.name}#count"),
            processed_sum=ordered_sum(first, f"{plan.name}#sum"),
            processed_sum_sq_dev=ordered_sum(second, f"{plan.name}#ssd"),
            bin_counts=[total(f"{plan.name}#bin{i}") for i in range(len(cuts[plan.name].edges) + 1)],
        )
        for plan in plans
    }


def _per_bucket(in_bucket_order: DataFrame, aggregates: list[Column]) -> list[Row]:
    return in_bucket_order.groupBy(BUCKET).agg(*aggregates).collect()


def _squared(column: Column) -> Column:
    # x * x, not pow(x, 2): the product is exactly rounded in every engine.
    return column * column


def _processed(raw: Column, cuts: fit.NumericCuts) -> Column:
    """The value a feature contributes to its mean and std: imputed, then clipped; null stays null."""
    value = F.coalesce(raw, F.lit(cuts.impute)) if cuts.impute is not None else raw
    if cuts.clip is not None:
        low, high = F.lit(cuts.clip[0]), F.lit(cuts.clip[1])
        # greatest/least skip nulls, so a null must be kept null explicitly.
        value = F.when(value.isNotNull(), F.least(F.greatest(value, low), high))
    return value


def _bin_counts(raw: Column, edges: list[float], name: str) -> list[Column]:
    bounds = [-math.inf, *edges, math.inf]
    return [
        F.count(F.when((raw >= F.lit(bounds[i])) & (raw < F.lit(bounds[i + 1])), 1)).alias(f"{name}#bin{i}")
        for i in range(len(edges) + 1)
    ]


def transformed(
    spark: SparkSession,
    kept: DataFrame,
    spec: DatasetSpec,
    transform: dict[str, NumericTransform | CategoryTransform],
) -> DataFrame:
    """The prepared columns of every row and its split, exactly as ``transform[name].apply`` computes them."""
    columns = [F.col(spec.key), F.col(spec.event_time)]
    for field in spec.features:
        fitted = transform[field.name]
        if isinstance(fitted, CategoryTransform):
            kept = _with_category_index(spark, kept, field.name, fitted)
            columns.append(F.col(f"_index_{field.name}").alias(field.name))
            continue
        fallback = fitted.impute if fitted.impute is not None else fitted.mean
        value = F.coalesce(F.col(field.name).cast("double"), F.lit(fallback))
        if fitted.clip is not None:
            value = F.least(F.greatest(value, F.lit(fitted.clip[0])), F.lit(fitted.clip[1]))
        columns.append(((value - F.lit(fitted.mean)) / F.lit(fitted.std)).alias(field.name))
    if spec.label is not None:
        columns.append(F.col(spec.label))
    if WEIGHT in kept.columns:
        columns.append(F.col(WEIGHT))
    return kept.select(*columns, F.col(SPLIT))


def _with_category_index(
    spark: SparkSession, rows: DataFrame, name: str, fitted: CategoryTransform
) -> DataFrame:
    """Add ``_index_<name>``: 1-based vocabulary position, 0 for out-of-vocabulary and null."""
    vocabulary = spark.createDataFrame(
        [(value, index) for index, value in enumerate(fitted.vocabulary, start=1)],
        schema=f"`_value_{name}` string, `_found_{name}` long",
    )
    value = F.coalesce(F.col(name), F.lit(fitted.impute)) if fitted.impute is not None else F.col(name)
    joined = rows.join(F.broadcast(vocabulary), value == F.col(f"_value_{name}"), "left")
    return joined.withColumn(f"_index_{name}", F.coalesce(F.col(f"_found_{name}"), F.lit(0)).cast("long"))
