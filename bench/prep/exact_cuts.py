"""How prep cut the reference before its statistics were sampled: the baseline of ``run.py --memory``.

Each numeric column was gathered into one Spark row (``collect_list``, then
``sort_array``) to pick exact order statistics, so memory grew with the
dataset and Spark's 2 GB row limit broke large ones. Kept here, unchanged,
only to measure against.
"""

from __future__ import annotations

import pyspark.sql.functions as F
from pyspark.sql import DataFrame

from services.prep import fit
from services.prep.job import HASH
from streamml.specs import DatasetSpec


def exact_numeric_cuts(
    train: DataFrame, spec: DatasetSpec, plans: list[fit.NumericPlan]
) -> tuple[dict[str, fit.NumericCuts], dict[str, list[float]]]:
    as_double = [F.col(plan.name).cast("double").alias(plan.name) for plan in plans]
    values = train.select(*as_double)
    counts = values.agg(*[F.count(plan.name).alias(plan.name) for plan in plans]).first()
    ranks = {
        plan.name: fit.quantile_ranks(counts[plan.name], plan.probabilities) if counts[plan.name] else []
        for plan in plans
    }
    sorted_values = values.agg(*[F.sort_array(F.collect_list(plan.name)).alias(plan.name) for plan in plans])
    picked = sorted_values.select(
        *[F.element_at(plan.name, rank + 1).alias(f"{plan.name}#{rank}") for plan in plans for rank in ranks[plan.name]]
    ).first()
    sample_rows = train.orderBy(HASH, spec.key).limit(fit.SAMPLE_SIZE).select(*as_double).collect()
    cuts = {
        plan.name: fit.numeric_cuts(
            plan, counts[plan.name], {rank: picked[f"{plan.name}#{rank}"] for rank in ranks[plan.name]}
        )
        for plan in plans
    }
    samples = {
        plan.name: [row[position] for row in sample_rows if row[position] is not None]
        for position, plan in enumerate(plans)
    }
    return cuts, samples
