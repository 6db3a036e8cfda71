"""The ceiling for ``bench/serve/ceiling.py``: the least an HTTP route serving the model must do.

    STREAMML_S3_*=... python bench/serve/route.py MODEL VERSION PORT

A bare ASGI app on uvicorn (uvloop, httptools): the version is loaded through
the SDK's ``load_version``, and each POST runs the same ``parse_infer`` →
``ModelSnapshot.predict`` → ``infer_response`` as the inference server, on
the event loop, with msgspec for JSON as the server. No metrics, limits,
input checks, hot swap or prediction log: what the server adds to this is
what the benchmark's ratios price. Any GET answers 200 (the readiness probe).
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import torch
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.serve.protocol import infer_response, parse_infer  # noqa: E402
from streamml.sdk.loader import load_version  # noqa: E402
from streamml.settings import ServiceSettings  # noqa: E402
from streamml.store import ObjectStore  # noqa: E402

MAX_ROWS = 10_000


def route_app(model: str, version: str):
    snapshot = load_version(ObjectStore.connect(ServiceSettings().s3), model, version).snapshot
    features = snapshot.transform.features

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "POST":
            parsed = parse_infer(msgspec.json.decode(body), features, MAX_ROWS)
            prediction = snapshot.predict(parsed.records)
            ids = parsed.request_ids or [f"{index}" for index in range(len(parsed.records))]
            answer = infer_response(model, prediction.version, prediction.output, ids, parsed.id)
        else:
            answer = {"ready": True}
        encoded = msgspec.json.encode(answer)
        # With its length given the response is not chunked: one write, no trailing empty chunk.
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(encoded)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": encoded})

    return app


if __name__ == "__main__":
    # Predicting on the event loop with torch's default two intra-op threads, the idle one spinning
    # took the cores from the clients: 3,900 instead of 35,000 predictions/s at 64 records per request.
    torch.set_num_threads(1)
    model, version, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    uvicorn.run(route_app(model, version), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
