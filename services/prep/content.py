"""Content hashes of prepared splits, and the file list a manifest records.

The content hash identifies what a split holds, independent of how it was
written: the engine, the number of files, their names and Parquet encoding
do not change it; any changed row, value, column or type does.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streamml.manifest import FileEntry
from streamml.settings import S3Settings


def content_sha256(table: pa.Table, schema: pa.Schema, key: str) -> str:
    """sha256 over the rows sorted by key, in a canonical column-wise serialisation.

    The serialisation is: a JSON header of [column, type] pairs and the row
    count, then per column (in schema order) one validity byte per row and the
    values as little-endian fixed-width numbers (int64 for integers and
    timestamps in microseconds, float64 with -0.0 written as 0.0, one byte for
    booleans; nulls as zero), or for text the uint64 byte lengths followed by
    the UTF-8 bytes.
    """
    table = table.select(schema.names).cast(schema).sort_by(key).combine_chunks()
    digest = hashlib.sha256()
    header = {"columns": [[f.name, str(f.type)] for f in schema], "rows": table.num_rows}
    digest.update(json.dumps(header, separators=(",", ":")).encode() + b"\n")
    for field, column in zip(schema, table.columns, strict=True):
        array = column.chunk(0) if column.num_chunks else pa.array([], field.type)
        for part in _column_bytes(field.type, array):
            digest.update(part)
    return digest.hexdigest()


def _column_bytes(kind: pa.DataType, column: pa.Array) -> list[bytes]:
    valid = column.is_valid().to_numpy(zero_copy_only=False).astype(np.uint8)
    if pa.types.is_string(kind):
        return [valid.tobytes(), *_text_bytes(pc.fill_null(column, ""))]
    if pa.types.is_boolean(kind):
        values = pc.fill_null(column, False).to_numpy(zero_copy_only=False).astype(np.uint8)
    elif pa.types.is_timestamp(kind):
        values = pc.fill_null(column.cast(pa.int64()), 0).to_numpy().astype("<i8")
    elif pa.types.is_floating(kind):
        # Adding 0.0 turns -0.0 into 0.0: equal numbers must serialise equally.
        values = pc.fill_null(column, 0.0).to_numpy().astype("<f8") + 0.0
    elif pa.types.is_integer(kind):
        values = pc.fill_null(column, 0).to_numpy().astype("<i8")
    else:
        raise TypeError(f"no canonical serialisation for column type {kind}")
    return [valid.tobytes(), values.tobytes()]


def _text_bytes(texts: pa.StringArray) -> list[bytes]:
    """Byte lengths and concatenated UTF-8 of a null-free string array, read from its buffers."""
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset : texts.offset + len(texts) + 1]
    data = texts.buffers()[2]
    joined = data.to_pybytes()[offsets[0] : offsets[-1]] if len(texts) and data is not None else b""
    return [np.diff(offsets).astype("<u8").tobytes(), joined]


def arrow_filesystem(uri: str, s3: S3Settings | None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a local path or an ``s3a://``/``s3://`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3a", "s3"):
        if s3 is None:
            raise ValueError(f"{uri} is on S3 but no S3 settings were given")
        options: dict[str, object] = {
            "region": s3.region,
            "connect_timeout": s3.connect_timeout_s,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=s3.max_attempts),
        }
        if s3.endpoint is not None:
            endpoint = urlparse(s3.endpoint)
            options.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme)
        if s3.access_key_id is not None and s3.secret_access_key is not None:
            options.update(
                access_key=s3.access_key_id.get_secret_value(),
                secret_key=s3.secret_access_key.get_secret_value(),
            )
        return pafs.S3FileSystem(**options), f"{parsed.netloc}{parsed.path}"
    if parsed.scheme in ("", "file"):
        return pafs.LocalFileSystem(), parsed.path
    raise ValueError(f"unsupported location {uri!r}: use a local path or s3a://bucket/key")


def object_key(uri: str) -> str:
    """Key of an object within its bucket (``s3a://b/k`` -> ``k``); a local path as is."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3a", "s3"):
        return parsed.path.lstrip("/")
    return parsed.path


def split_files(
    split_uri: str, schema: pa.Schema, key: str, s3: S3Settings | None
) -> tuple[list[FileEntry], str]:
    """Entries (key, rows, sha256 of the bytes) of the Parquet files of one split, and its content hash."""
    fs, folder = arrow_filesystem(split_uri, s3)
    infos = fs.get_file_info(pafs.FileSelector(folder))
    paths = sorted(info.path for info in infos if info.is_file and info.base_name.endswith(".parquet"))
    entries: list[FileEntry] = []
    tables: list[pa.Table] = []
    prefix = split_uri.rstrip("/")
    for path in paths:
        with fs.open_input_file(path) as handle:
            data = handle.readall()
        table = pq.read_table(pa.BufferReader(data))
        tables.append(table.select(schema.names).cast(schema))
        name = path.rsplit("/", 1)[-1]
        entries.append(
            FileEntry(
                key=object_key(f"{prefix}/{name}"),
                rows=table.num_rows,
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    split_table = pa.concat_tables(tables) if tables else schema.empty_table()
    return entries, content_sha256(split_table, schema, key)
