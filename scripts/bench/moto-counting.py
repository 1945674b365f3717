"""scripts/moto-server.py (moto, one request at a time), logging every request.

The crowd benchmark counts requests at the server, where every client's
traffic arrives, rather than in each client's -v output. This launcher
loads scripts/moto-server.py (which serialises moto's requests) and wraps
the serialised handler, so the log is written under the same lock as the
request is applied and sizes read before and after a write are exact.

Usage: moto-counting.py LOG -H 127.0.0.1 -p PORT   (then moto_server's options)

Each request appends one JSON line to LOG:

    t       wall-clock seconds when the answer was built
    store   "dynamodb" or "s3" ("other" for anything else, such as a probe)
    op      GetItem, UpdateItem, PutItem, TransactWriteItems, ... (the
            X-Amz-Target operation) or, for S3, GetObject, PutObject,
            HeadObject, DeleteObject, ListObjectsV2, ... (method and path)
    status  the HTTP status
    cond    true for a refused conditional write (DynamoDB
            ConditionalCheckFailedException or a transaction cancelled on a
            condition; S3 412 Precondition Failed or 409 conflict)
    items   DynamoDB: [[old, new], ...] item sizes in bytes (DynamoDB's rule:
            attribute names plus values, as moto's Item.size() counts it),
            one pair per item the request names, read from moto's backend
            before and after the request; 0 for an absent item
    size    S3: bytes of the object written (PUT) or read (GET)
"""

import importlib.util
import io
import json
import os
import sys
import time

LOG_PATH = sys.argv.pop(1)
_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "moto_server_serialised", os.path.join(_here, "..", "moto-server.py")
)
serialised = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serialised)  # patches moto's dispatcher: one request at a time

from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.dynamodb.models import dynamodb_backends  # noqa: E402

_log = open(LOG_PATH, "a", buffering=1)
DYNAMO_KINDS = ("Put", "Update", "Delete", "ConditionCheck")


def _dynamo_backend():
    return dynamodb_backends[DEFAULT_ACCOUNT_ID][os.environ.get("AWS_REGION", "us-east-1")]


def _dynamo_keys(op, req):
    """(table, key) for every item a DynamoDB request names."""
    if op in ("GetItem", "UpdateItem", "DeleteItem"):
        return [(req.get("TableName"), req.get("Key"))]
    if op == "PutItem":
        return [(req.get("TableName"), _key_of(req.get("TableName"), req.get("Item")))]
    if op == "TransactWriteItems":
        out = []
        for ti in req.get("TransactItems", []):
            for kind in DYNAMO_KINDS:
                if kind in ti:
                    part = ti[kind]
                    key = part.get("Key") or _key_of(part.get("TableName"), part.get("Item"))
                    out.append((part.get("TableName"), key))
        return out
    return []


def _key_of(table, item):
    try:
        t = _dynamo_backend().get_table(table)
        names = [n for n in (t.hash_key_attr, t.range_key_attr) if n]
        return {n: item[n] for n in names}
    except Exception:
        return None


def _item_size(table, key):
    if not table or not key:
        return None
    try:
        item = _dynamo_backend().get_item(table, key)
    except Exception:
        return None
    return item.size() if item is not None else 0


def _s3_op(method, path, query, headers):
    parts = path.lstrip("/").split("/", 1)
    on_object = len(parts) == 2 and parts[1] != ""
    if on_object:
        if method == "PUT":
            return "CopyObject" if "HTTP_X_AMZ_COPY_SOURCE" in headers else "PutObject"
        return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
            method, method + "Object"
        )
    if method == "GET":
        return "ListObjectsV2" if "list-type=2" in query else "ListObjects"
    return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(
        method, method + "Bucket"
    )


def _read_body(environ):
    length = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    if length:
        body = stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _counting(handle):
    def counted(self, environ, start_response):
        body = _read_body(environ)
        seen = {}

        def capture(status, headers, exc_info=None):
            seen["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        target = environ.get("HTTP_X_AMZ_TARGET", "")
        rec = {}
        keys = []
        if target.startswith("DynamoDB_"):
            rec = {"store": "dynamodb", "op": target.rsplit(".", 1)[-1]}
            try:
                keys = _dynamo_keys(rec["op"], json.loads(body or b"{}"))
            except ValueError:
                keys = []
            old = [_item_size(t, k) for t, k in keys]
        elif environ.get("PATH_INFO", "/") not in ("", "/"):
            method = environ.get("REQUEST_METHOD", "GET")
            rec = {
                "store": "s3",
                "op": _s3_op(method, environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""), environ),
            }
        else:
            rec = {"store": "other", "op": environ.get("REQUEST_METHOD", "?")}
        out = list(handle(self, environ, capture))
        status = seen.get("status", 0)
        rec["status"] = status
        resp = b"".join(out)
        if rec["store"] == "dynamodb":
            rec["cond"] = status == 400 and (
                b"ConditionalCheckFailed" in resp or b"TransactionCanceled" in resp
            )
            rec["items"] = [[o, _item_size(t, k)] for o, (t, k) in zip(old, keys)]
        elif rec["store"] == "s3":
            rec["cond"] = status in (409, 412)
            if rec["op"] == "PutObject":
                decoded = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH")
                rec["size"] = int(decoded) if decoded else len(body)
            elif rec["op"] == "GetObject" and status == 200:
                rec["size"] = len(resp)
        rec["t"] = time.time()
        _log.write(json.dumps(rec, separators=(",", ":")) + "\n")
        return out

    return counted


# moto-server.py's serialising wrapper calls its module's _handle under its
# lock: counting there keeps the log in the order requests were applied.
serialised._handle = _counting(serialised._handle)

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    main()
