#!/usr/bin/env python3
"""The XML API of Google Cloud Storage in front of fake-gcs-server.

sluice reaches GCS through the `object_store` crate, which speaks GCS's
XML API: PUT Object (with `x-goog-if-generation-match: 0` for a create
only if absent, which the checkpoint log rests on), XML multipart uploads,
ListObjectsV2 and DELETE. fake-gcs-server answers downloads on that API but
implements neither a plain XML upload (only signed-URL uploads, which ignore
preconditions) nor XML multipart uploads nor XML listings; its JSON API has
all three, preconditions included. This front listens where a client expects
GCS and turns each XML call into the JSON API call that does the same, with
the same precondition, so that the tests exercise sluice and object_store's
GCS client against fake-gcs-server's storage and its generation checks.

A bucket whose name ends in `-ignores-preconditions` is served as a store
that ignores them (every create succeeds), to show that sluice refuses such
a store for its log.

It holds no objects itself, except the parts of a multipart upload until
it is completed (then uploaded as one object, as GCS does). Anything it
does not translate is passed through unchanged.

Usage: gcs-xml-front.py LISTEN_PORT BACKEND_PORT   (both on 127.0.0.1)
"""

import http.client
import http.server
import json
import os
import hashlib
import sys
import threading
import uuid
from urllib.parse import quote, unquote, urlsplit, parse_qs
from xml.sax.saxutils import escape

BACKEND = ("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 4444)
# Uploads to a bucket whose name ends so have their precondition dropped,
# as fake-gcs-server's own XML (signed-URL) upload does: a store that
# accepts a second create, for the tests that show sluice refusing one.
IGNORES_PRECONDITIONS = "-ignores-preconditions"
UPLOADS = {}  # upload id -> {"bucket", "name", "parts": {number: bytes}}
LOCK = threading.Lock()


def backend(method, path, body=None, headers=None):
    """One request to fake-gcs-server: (status, headers, body)."""
    connection = http.client.HTTPConnection(*BACKEND, timeout=120)
    try:
        headers = dict(headers or {})
        headers["Host"] = "%s:%d" % BACKEND
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def enc(name):
    return quote(name, safe="")


def upload(bucket, name, data, content_type, generation_match):
    """A JSON API multipart upload (metadata and media in one request)."""
    query = "uploadType=multipart"
    if bucket.endswith(IGNORES_PRECONDITIONS):
        generation_match = None
    if generation_match is not None:
        query += "&ifGenerationMatch=" + generation_match
    boundary = "sluice-front-" + uuid.uuid4().hex
    metadata = json.dumps({"name": name, "contentType": content_type or "application/octet-stream"})
    body = (
        ("--%s\r\nContent-Type: application/json\r\n\r\n%s\r\n--%s\r\nContent-Type: %s\r\n\r\n"
         % (boundary, metadata, boundary, content_type or "application/octet-stream")).encode()
        + data
        + ("\r\n--%s--\r\n" % boundary).encode()
    )
    return backend("POST", "/upload/storage/v1/b/%s/o?%s" % (enc(bucket), query), body,
                   {"Content-Type": "multipart/related; boundary=" + boundary})


def object_headers(status, body):
    """The XML API's answer headers to a write, from the JSON API's."""
    if status != 200:
        return {}
    resource = json.loads(body)
    return {"ETag": '"%s"' % resource["etag"], "x-goog-generation": resource["generation"]}


class Front(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        # Every request, with GCS_FRONT_LOG=1 (in the front's log file).
        if os.environ.get("GCS_FRONT_LOG") == "1":
            super().log_message(format, *args)

    def reply(self, status, headers=None, body=b"", length=None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def target(self):
        """(bucket, object name or None, query) of an XML API path."""
        split = urlsplit(self.path)
        parts = split.path.lstrip("/").split("/", 1)
        bucket = unquote(parts[0])
        name = unquote(parts[1]) if len(parts) > 1 and parts[1] else None
        return bucket, name, parse_qs(split.query, keep_blank_values=True)

    def is_json_api(self):
        return self.path.startswith(("/storage/", "/upload/", "/download/", "/batch/", "/_internal/"))

    def passthrough(self, data=None):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        status, answer, body = backend(self.command, self.path, data, headers)
        kept = {k: v for k, v in answer if k.lower() not in ("content-length", "transfer-encoding", "connection")}
        # A HEAD's answer has no body but the object's length.
        length = dict((k.lower(), v) for k, v in answer).get("content-length") if self.command == "HEAD" else None
        self.reply(status, kept, body, length)

    def do_GET(self):
        bucket, name, query = self.target()
        if self.is_json_api() or name is not None:
            return self.passthrough()
        if query.get("list-type") == ["2"]:
            return self.list_objects(bucket, query)
        if "uploads" in query:
            return self.reply(200, {"Content-Type": "application/xml"},
                              b"<ListMultipartUploadsResult></ListMultipartUploadsResult>")
        return self.passthrough()

    do_HEAD = do_GET

    def list_objects(self, bucket, query):
        params = {"maxResults": "1000"}
        for xml_key, json_key in (("prefix", "prefix"), ("delimiter", "delimiter"),
                                  ("continuation-token", "pageToken"), ("start-after", "startOffset")):
            if query.get(xml_key, [""])[0]:
                params[json_key] = query[xml_key][0]
        path = "/storage/v1/b/%s/o?%s" % (enc(bucket), "&".join("%s=%s" % (k, enc(v)) for k, v in params.items()))
        status, _, body = backend("GET", path)
        if status != 200:
            return self.reply(status, {"Content-Type": "application/json"}, body)
        listed = json.loads(body)
        after = query.get("start-after", [""])[0]
        out = ["<?xml version='1.0' encoding='UTF-8'?><ListBucketResult><Name>%s</Name>" % escape(bucket)]
        for item in listed.get("items", []):
            if after and item["name"] == after:
                continue
            out.append("<Contents><Key>%s</Key><LastModified>%s</LastModified><ETag>\"%s\"</ETag>"
                       "<Size>%s</Size></Contents>"
                       % (escape(item["name"]), item["updated"], escape(item["etag"]), item["size"]))
        for prefix in listed.get("prefixes", []):
            out.append("<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % escape(prefix))
        if listed.get("nextPageToken"):
            out.append("<IsTruncated>true</IsTruncated><NextContinuationToken>%s</NextContinuationToken>"
                       % escape(listed["nextPageToken"]))
        else:
            out.append("<IsTruncated>false</IsTruncated>")
        out.append("</ListBucketResult>")
        self.reply(200, {"Content-Type": "application/xml"}, "".join(out).encode())

    def do_PUT(self):
        if self.is_json_api():
            return self.passthrough(self.body())
        bucket, name, query = self.target()
        data = self.body()
        match = self.headers.get("x-goog-if-generation-match")
        if "uploadId" in query:
            with LOCK:
                pending = UPLOADS.get(query["uploadId"][0])
                if pending is None:
                    return self.reply(404, {}, b"NoSuchUpload")
                pending["parts"][int(query["partNumber"][0])] = data
            return self.reply(200, {"ETag": '"%s"' % hashlib.md5(data).hexdigest()})
        source = self.headers.get("x-goog-copy-source")
        if source:
            source_bucket, source_name = unquote(source).lstrip("/").split("/", 1)
            path = "/storage/v1/b/%s/o/%s/copyTo/b/%s/o/%s" % (
                enc(source_bucket), enc(source_name), enc(bucket), enc(name))
            if match is not None:
                path += "?ifGenerationMatch=" + match
            status, _, body = backend("POST", path, b"", {"Content-Type": "application/json"})
            return self.reply(status, object_headers(status, body), b"" if status == 200 else body)
        status, _, body = upload(bucket, name, data, self.headers.get("Content-Type"), match)
        self.reply(status, object_headers(status, body), b"" if status == 200 else body)

    def do_POST(self):
        if self.is_json_api():
            return self.passthrough(self.body())
        bucket, name, query = self.target()
        data = self.body()
        if "uploads" in query:
            upload_id = uuid.uuid4().hex
            with LOCK:
                UPLOADS[upload_id] = {"bucket": bucket, "name": name, "parts": {},
                                      "type": self.headers.get("Content-Type")}
            xml = ("<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult><Bucket>%s</Bucket>"
                   "<Key>%s</Key><UploadId>%s</UploadId></InitiateMultipartUploadResult>"
                   % (escape(bucket), escape(name), upload_id))
            return self.reply(200, {"Content-Type": "application/xml"}, xml.encode())
        if "uploadId" in query:
            with LOCK:
                pending = UPLOADS.pop(query["uploadId"][0], None)
            if pending is None:
                return self.reply(404, {}, b"NoSuchUpload")
            numbers = [int(n.split("</PartNumber>")[0]) for n in data.decode().split("<PartNumber>")[1:]]
            joined = b"".join(pending["parts"][n] for n in numbers)
            status, _, body = upload(bucket, name, joined, pending["type"], None)
            if status != 200:
                return self.reply(status, {}, body)
            headers = object_headers(status, body)
            xml = ("<?xml version='1.0' encoding='UTF-8'?><CompleteMultipartUploadResult><Bucket>%s</Bucket>"
                   "<Key>%s</Key><ETag>%s</ETag></CompleteMultipartUploadResult>"
                   % (escape(bucket), escape(name), escape(headers["ETag"])))
            return self.reply(200, {"Content-Type": "application/xml",
                                    "x-goog-generation": headers["x-goog-generation"]}, xml.encode())
        self.passthrough(data)

    def do_DELETE(self):
        if self.is_json_api():
            return self.passthrough()
        bucket, name, query = self.target()
        if "uploadId" in query:
            with LOCK:
                UPLOADS.pop(query["uploadId"][0], None)
            return self.reply(204)
        status, _, body = backend("DELETE", "/storage/v1/b/%s/o/%s" % (enc(bucket), enc(name)))
        self.reply(204 if status in (200, 204) else status, {}, b"" if status in (200, 204) else body)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4443
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Front)
    server.daemon_threads = True
    server.serve_forever()
