"""Names and versions become object keys and topic names: they are matched whole, a trailing newline included."""

import pytest
from pydantic import ValidationError

from services.serve.service import ServeOptions
from streamml.registry.keys import RegistryError, check_name, check_version
from streamml.specs import DatasetSpec

pytestmark = pytest.mark.unit
SPEC = {"name": "tx", "key": "id", "event_time": "ts",
        "fields": [{"name": "id", "type": "string"}, {"name": "ts", "type": "timestamp"}]}


@pytest.mark.parametrize("name", ["fraud\n", "fraud\r\n", "fraud ", "\nfraud"])
def test_a_model_name_with_anything_around_it_is_refused(name):
    with pytest.raises(RegistryError, match="model name"):
        check_name(name)
    with pytest.raises(ValidationError, match="model"):
        ServeOptions(model=name)
    with pytest.raises(ValidationError) as caught:
        DatasetSpec.model_validate({**SPEC, "name": name})
    assert [error["loc"] for error in caught.value.errors()] == [("name",)]


def test_a_version_with_a_trailing_newline_is_refused():
    assert check_version("d3-1a2b") == "d3-1a2b"
    with pytest.raises(RegistryError, match="model version"):
        check_version("d3-1a2b\n")


def test_good_names_pass():
    assert check_name("fraud_2") == "fraud_2"
    assert DatasetSpec.model_validate(SPEC).name == "tx"
    assert ServeOptions(model="fraud_2").model == "fraud_2"
