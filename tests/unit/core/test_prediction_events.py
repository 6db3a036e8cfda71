"""predictions.<model> carries single prediction events and batches; one decoder splits both."""

from datetime import UTC, datetime

import pytest

from streamml.events import EventError, PredictionBatch, PredictionRecord, encode
from streamml.prediction_events import prediction_bodies, prediction_records

pytestmark = pytest.mark.unit
WHEN = datetime(2024, 6, 1, 12, 30, 5, 123456, tzinfo=UTC)


def test_single_prediction_events_still_read_and_other_events_are_refused_with_the_reason():
    record = PredictionRecord(request_id="r1", model="fraud", model_version="v1", features={"amount": 1.0},
                              output=0.5, time=WHEN)
    message = encode(record, "/old-sdk")
    headers = list(message.headers.items())
    assert prediction_records(headers, message.key, message.value) == [record]
    assert prediction_bodies(record.ce_type(), message.value) == [message.value]
    with pytest.raises(EventError, match="found ce_type 'streamml.feedback.v1'"):
        prediction_bodies("streamml.feedback.v1", b"{}")
    with pytest.raises(EventError, match="not a batch of predictions"):
        prediction_bodies(PredictionBatch.ce_type(), b'{"predictions": 3}')
    with pytest.raises(EventError, match="carries no predictions"):
        prediction_bodies(PredictionBatch.ce_type(), b'{"model": "fraud", "predictions": []}')


def test_a_batch_encoded_from_its_model_splits_into_the_bodies_of_its_predictions():
    records = [PredictionRecord(request_id=f"r{i}", model="fraud", model_version="v1", features={"amount": i},
                                output=0.5, time=WHEN) for i in range(3)]
    message = encode(PredictionBatch(model="fraud", predictions=records), "/app")
    bodies = prediction_bodies(PredictionBatch.ce_type(), message.value)
    assert [PredictionRecord.model_validate_json(body) for body in bodies] == records
    assert prediction_records(list(message.headers.items()), message.key, message.value) == records
