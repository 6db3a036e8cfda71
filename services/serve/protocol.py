"""Open Inference Protocol (V2) requests to records, and predictions to responses.

Two request forms are accepted (see README.md):

- one tensor per feature: ``{"name": "amount", "datatype": "FP64", "shape": [N], "data": [...]}``
  (shape ``[N]`` or ``[N, 1]``; BYTES for category features); a feature that
  is not sent is missing in every record, and imputed like a missing value;
- one BYTES tensor of records: ``{"name": "records", "datatype": "BYTES", "shape": [N],
  "data": ["{\\"amount\\": 12.5, ...}", ...]}`` whose elements are JSON objects
  (or JSON-encoded objects).

Either form may add ``{"name": "request_id", "datatype": "BYTES", "shape": [N], "data": [...]}``
to choose the request ids the predictions are logged (and later given feedback) under.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamml.portable import FLAVOURS

RECORDS_INPUT = "records"
REQUEST_ID = "request_id"
OUTPUT = "output"
DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES"}


class BadRequest(ValueError):
    """A request that does not follow the protocol; the text says what to change."""


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    records: list[dict[str, Any]]
    request_ids: list[str] | None


def parse_infer(body: Any, features: Sequence[str], max_rows: int) -> InferRequest:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise BadRequest('the body must be a JSON object with a non-empty "inputs" list of tensors')
    tensors = {}
    for position, tensor in enumerate(body["inputs"]):
        name, values = _tensor(tensor, position)
        if name in tensors:
            raise BadRequest(f"input {name!r} is given twice")
        tensors[name] = values
    request_ids = tensors.pop(REQUEST_ID, None)
    if RECORDS_INPUT in tensors and RECORDS_INPUT not in features:
        if tensors.keys() != {RECORDS_INPUT}:
            raise BadRequest(f'send either a "{RECORDS_INPUT}" input or one input per feature, not both')
        records = [_record(value, row) for row, value in enumerate(tensors[RECORDS_INPUT])]
    else:
        unknown = sorted(set(tensors) - set(features))
        if unknown:
            raise BadRequest(f"inputs {unknown} are not features of the model; its features are {list(features)}")
        rows = _common_length(tensors)
        records = [{} for _ in range(rows)]
        for name, values in tensors.items():
            for record, value in zip(records, values, strict=True):
                record[name] = value
    if len(records) > max_rows:
        raise BadRequest(f"{len(records)} rows in one request; the limit is {max_rows}, split the request")
    if request_ids is not None:
        if len(request_ids) != len(records):
            raise BadRequest(f"{len(request_ids)} request ids for {len(records)} rows; give one per row")
        request_ids = [str(value) for value in request_ids]
    request_id = body.get("id")
    return InferRequest(str(request_id) if request_id is not None else None, records, request_ids)


def _tensor(tensor: Any, position: int) -> tuple[str, list[Any]]:
    if not isinstance(tensor, dict):
        raise BadRequest(f"inputs[{position}] must be an object with name, datatype, shape and data")
    name, datatype, shape, data = (tensor.get(key) for key in ("name", "datatype", "shape", "data"))
    where = f"input {name!r}" if isinstance(name, str) else f"inputs[{position}]"
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where} has no name")
    if datatype not in DATATYPES:
        raise BadRequest(f"{where} has datatype {datatype!r}; use one of {sorted(DATATYPES)}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise BadRequest(f"{where} needs a shape: a list of sizes, e.g. [N]")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise BadRequest(f"{where} has shape {shape}; one value per row is shape [N] or [N, 1]")
    if not isinstance(data, list):
        raise BadRequest(f"{where} needs data: a list of {shape[0]} values")
    # Row-major nesting ([[v], [v]]) is allowed by the protocol; flatten it.
    values = [row[0] if isinstance(row, list) and len(row) == 1 else row for row in data]
    if len(values) != shape[0]:
        raise BadRequest(f"{where} has {len(values)} values for shape {shape}")
    return name, values


def _record(value: Any, row: int) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise BadRequest(f"records[{row}] is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"records[{row}] is a {type(value).__name__}; each record is a JSON object")
    return value


def _common_length(tensors: Mapping[str, list[Any]]) -> int:
    lengths = {name: len(values) for name, values in tensors.items()}
    if len(set(lengths.values())) > 1:
        raise BadRequest(f"inputs have different row counts {lengths}; every input needs one value per row")
    return next(iter(lengths.values()))


def infer_response(
    model: str, version: str, outputs: np.ndarray, request_ids: Sequence[str], request_id: str | None
) -> dict[str, Any]:
    outputs = np.asarray(outputs, dtype=np.float32)
    response: dict[str, Any] = {
        "model_name": model,
        "model_version": version,
        "outputs": [
            {"name": OUTPUT, "datatype": "FP32", "shape": list(outputs.shape), "data": outputs.reshape(-1).tolist()},
            {"name": REQUEST_ID, "datatype": "BYTES", "shape": [len(request_ids)], "data": list(request_ids)},
        ],
    }
    if request_id is not None:
        response["id"] = request_id
    return response


def platform(format: str) -> str:
    """What runs the model, in the protocol's words: ``lightgbm``, or ``pytorch_<format>``."""
    return "lightgbm" if FLAVOURS.get(format) == "lightgbm" else f"pytorch_{format}"


def model_metadata(model: str, version: str, card: Mapping[str, Any]) -> dict[str, Any]:
    inputs = card.get("inputs") or {}
    numeric = list(inputs.get("numeric") or [])
    categorical = [item["name"] for item in inputs.get("categorical") or []]
    classes = (card.get("outputs") or {}).get("classes")
    return {
        "name": model,
        "versions": [version],
        "platform": platform((card.get("artifacts") or {}).get("format", "unknown")),
        "inputs": [{"name": name, "datatype": "FP64", "shape": [-1]} for name in numeric]
        + [{"name": name, "datatype": "BYTES", "shape": [-1]} for name in categorical],
        "outputs": [
            {"name": OUTPUT, "datatype": "FP32", "shape": [-1, len(classes)] if classes else [-1]},
            {"name": REQUEST_ID, "datatype": "BYTES", "shape": [-1]},
        ],
    }
