import math

import numpy as np
import pytest

from streamml.manifest import CategoryTransform, DatasetManifest, NumericTransform
from streamml.sdk.preprocess import FeatureTransform, PreprocessError

pytestmark = pytest.mark.unit

TRANSFORMS = {
    "amount": NumericTransform(mean=50.0, std=20.0, impute=40.0, clip=(0.0, 200.0)),
    "channel": CategoryTransform(vocabulary=["web", "pos", "atm"], impute="web"),
    "hour": NumericTransform(mean=12.0, std=6.5),
    "country": CategoryTransform(vocabulary=["de", "fr"]),
}
ORDER = ["amount", "channel", "hour", "country"]


def manifest(transforms=TRANSFORMS, order=ORDER) -> DatasetManifest:
    return DatasetManifest.model_validate({
        "dataset": "transactions", "version": 3, "created": "2024-06-01T00:00:00Z", "spec_fingerprint": "f",
        "schema": {}, "key": "tx_id", "event_time": "ts", "label": "is_fraud", "features": order,
        "files": {}, "rows": {}, "content_sha256": {},
        "transform": {name: t.model_dump() for name, t in transforms.items()},
        "reference": {}, "lineage": [], "trigger": "rows", "code_version": "test",
    })


def card(transform: FeatureTransform) -> dict:
    """The ``inputs`` part of a model card, as the trainer writes it."""
    return {"inputs": {
        "numeric": list(transform.numeric),
        "categorical": [{"name": n, "codes": len(transform.transforms[n].vocabulary) + 1}
                        for n in transform.categorical],
        "transform": {n: t.model_dump(mode="json") for n, t in transform.transforms.items()},
    }}


def random_records(rng, count):
    records = []
    for _ in range(count):
        record = {
            "amount": rng.choice([None, float("nan"), -5.0, 250.0, float(rng.normal(50, 30)),
                                  int(rng.integers(0, 100))]),
            "channel": rng.choice([None, "web", "pos", "atm", "phone"]),
            "hour": int(rng.integers(0, 24)),
            "country": rng.choice([None, "de", "fr", "xx"]),
            "ignored": "extra keys are fine",
        }
        for name in ORDER:
            if rng.random() < 0.05:
                del record[name]
        records.append(record)
    return records


def test_columns_follow_manifest_order_numeric_then_categorical():
    transform = FeatureTransform.from_manifest(manifest())
    assert transform.numeric == ("amount", "hour")
    assert transform.categorical == ("channel", "country")
    assert transform.features == ("amount", "hour", "channel", "country")


def test_batch_equals_the_manifest_transform_applied_value_by_value():
    transform = FeatureTransform.from_manifest(manifest())
    records = random_records(np.random.default_rng(1), 500)
    features = transform.apply(records)
    assert features.numeric.dtype == np.float32 and features.numeric.shape == (500, 2)
    assert features.categorical.dtype == np.int64 and features.categorical.shape == (500, 2)
    for row, record in enumerate(records):
        for column, name in enumerate(transform.numeric):
            expected = np.float32(TRANSFORMS[name].apply(record.get(name)))
            assert features.numeric[row, column] == expected, (row, name, record.get(name))
        for column, name in enumerate(transform.categorical):
            assert features.categorical[row, column] == TRANSFORMS[name].apply(record.get(name)), (row, name)


def test_specific_values():
    transform = FeatureTransform.from_manifest(manifest())
    features = transform.apply([
        {"amount": None, "hour": 12, "channel": None, "country": None},
        {"amount": 1000, "hour": 18.5, "channel": "atm", "country": "fr"},
        {"amount": float("nan"), "hour": None, "channel": float("nan"), "country": "es"},
    ])
    np.testing.assert_array_equal(features.numeric, np.array(
        [[(40 - 50) / 20, 0.0], [(200 - 50) / 20, 6.5 / 6.5], [(40 - 50) / 20, 0.0]], dtype=np.float32))
    # channel: null and NaN impute "web" (code 1); country has no impute, so null is 0.
    np.testing.assert_array_equal(features.categorical, [[1, 0], [3, 2], [1, 0]])


def test_from_card_equals_from_manifest():
    from_manifest = FeatureTransform.from_manifest(manifest())
    from_card = FeatureTransform.from_card(card(from_manifest))
    records = random_records(np.random.default_rng(2), 50)
    a, b = from_manifest.apply(records), from_card.apply(records)
    assert from_card.features == from_manifest.features
    np.testing.assert_array_equal(a.numeric, b.numeric)
    np.testing.assert_array_equal(a.categorical, b.categorical)


def test_inconsistent_cards_are_explained():
    good = card(FeatureTransform.from_manifest(manifest()))
    with pytest.raises(PreprocessError, match="model card lacks inputs"):
        FeatureTransform.from_card({"metrics": {}})
    wrong_codes = {"inputs": {**good["inputs"], "categorical": [{"name": "channel", "codes": 3},
                                                                {"name": "country", "codes": 3}]}}
    with pytest.raises(PreprocessError, match="'channel' has 3 codes but its vocabulary makes 4"):
        FeatureTransform.from_card(wrong_codes)
    swapped = {"inputs": {**good["inputs"], "numeric": ["amount", "hour", "channel"]}}
    with pytest.raises(PreprocessError, match="its transforms make"):
        FeatureTransform.from_card(swapped)
    missing = {"inputs": {**good["inputs"], "transform": {"amount": good["inputs"]["transform"]["amount"]}}}
    with pytest.raises(PreprocessError, match=r"features \['hour', 'channel', 'country'\] have no transform"):
        FeatureTransform.from_card(missing)


def test_bad_values_name_the_feature_and_record():
    transform = FeatureTransform.from_manifest(manifest())
    good = {"amount": 1.0, "hour": 2, "channel": "web", "country": "de"}
    with pytest.raises(PreprocessError, match=r"feature 'amount' of record 1 is 'lots' \(str\); numeric"):
        transform.apply([good, {**good, "amount": "lots"}])
    with pytest.raises(PreprocessError, match=r"feature 'hour' of record 0 is \[1\] \(list\)"):
        transform.apply([{**good, "hour": [1]}])
    with pytest.raises(PreprocessError, match=r"'country' of record 2 is 7 \(int\); category features take strings"):
        transform.apply([good, good, {**good, "country": 7}])
    with pytest.raises(PreprocessError, match=r"feature 'channel' of record 0 is \['web'\] \(list\)"):
        transform.apply([{**good, "channel": ["web"]}])
    with pytest.raises(PreprocessError, match="record 1 is a tuple"):
        transform.apply([good, ("web",)])


def test_empty_batch_and_tensors_share_memory():
    transform = FeatureTransform.from_manifest(manifest())
    empty = transform.apply([])
    assert empty.numeric.shape == (0, 2) and empty.categorical.shape == (0, 2)
    features = transform.apply([{"amount": 1.0, "hour": 2, "channel": "pos", "country": "de"}])
    numeric, categorical = features.tensors()
    numeric[0, 0] = 99.0
    assert features.numeric[0, 0] == 99.0
    assert str(categorical.dtype) == "torch.int64" and str(numeric.dtype) == "torch.float32"


def test_only_categorical_or_only_numeric_features():
    numeric_only = FeatureTransform({"hour": TRANSFORMS["hour"]}, ["hour"])
    assert numeric_only.apply([{"hour": 18.5}]).categorical.shape == (1, 0)
    category_only = FeatureTransform({"country": TRANSFORMS["country"]}, ["country"])
    assert category_only.apply([{"country": "fr"}]).numeric.shape == (1, 0)


def test_recode_moves_a_split_between_dataset_versions():
    old = FeatureTransform.from_manifest(manifest())
    new_transforms = {
        "amount": NumericTransform(mean=70.0, std=25.0, impute=60.0, clip=(0.0, 150.0)),
        "channel": CategoryTransform(vocabulary=["pos", "phone", "web", "atm"], impute="pos"),
        "hour": NumericTransform(mean=11.0, std=7.0),
        "country": CategoryTransform(vocabulary=["fr", "de", "es"]),
    }
    new = FeatureTransform.from_manifest(manifest(new_transforms))
    # Values both versions know, inside both clip ranges: recoding is exact up to float32 rounding.
    rng = np.random.default_rng(4)
    records = [{"amount": float(rng.uniform(0, 150)), "hour": int(rng.integers(0, 24)),
                "channel": str(rng.choice(["web", "pos", "atm"])), "country": str(rng.choice(["de", "fr"]))}
               for _ in range(200)]
    recoded = new.recode(old.apply(records), source=old)
    direct = new.apply(records)
    np.testing.assert_allclose(recoded.numeric, direct.numeric, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(recoded.categorical, direct.categorical)
    # What the old version did not know stays out-of-vocabulary; new clipping applies.
    unknown = new.recode(old.apply([{"amount": 190.0, "hour": 1, "channel": "phone", "country": "es"}]), source=old)
    assert unknown.categorical.tolist() == [[0, 0]]
    assert math.isclose(unknown.numeric[0, 0], (150 - 70) / 25, rel_tol=1e-6)


def test_recode_needs_every_feature_in_the_source():
    old = FeatureTransform({"hour": TRANSFORMS["hour"]}, ["hour"])
    new = FeatureTransform.from_manifest(manifest())
    with pytest.raises(PreprocessError, match=r"features \['amount', 'channel', 'country'\] are not in the source"):
        new.recode(old.apply([{"hour": 1}]), source=old)
