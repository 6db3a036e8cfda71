"""Calls to an inference server's Open Inference Protocol endpoints, for the tests that start one."""

from __future__ import annotations

import http.client
import json

import numpy as np


def call(port: int, method: str, path: str, body: object = None) -> tuple[int, dict | str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read().decode()
    finally:
        connection.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data


def tensors(records: list[dict]) -> list[dict]:
    inputs = []
    for name in records[0]:
        numeric = name.startswith("num_")
        inputs.append({"name": name, "datatype": "FP64" if numeric else "BYTES", "shape": [len(records)],
                       "data": [record[name] for record in records]})
    return inputs


def output(body: dict) -> np.ndarray:
    tensor = next(t for t in body["outputs"] if t["name"] == "output")
    return np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
