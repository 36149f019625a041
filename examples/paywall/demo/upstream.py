#!/usr/bin/env python3
"""A small API written in Python (standard library only), to sell through `paywall`.

    python3 examples/paywall/demo/upstream.py [PORT]        (default 8000)

Routes (the demo routes file, routes.toml beside this one, sells some of them):
    GET  /weather/<city>   today's weather, and who paid for it
    POST /upload           the body's length and SHA-256
    GET  /fail             always 500 (an after-success route is not charged for it)
    GET  /slow?s=N         answers after N seconds
    GET  /                 free

With PAYWALL_UPSTREAM_SECRET set (the gateway's --upstream-secret), the payer headers are
checked: a request whose Paywall-Signature does not verify is refused (401), and the payer
named in the answer is one the gateway verified.
"""

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SECRET = os.environ.get("PAYWALL_UPSTREAM_SECRET", "").encode()
MAX_AGE = 300
SIGNED = ["paywall-payer", "paywall-amount", "paywall-asset", "paywall-intent",
          "paywall-payment", "paywall-reference", "content-length"]


def verified_payer(method, path, headers):
    """The payer the gateway signed for, None when the request is not a paid one, or raises
    ValueError when the signature does not verify."""
    payer = headers.get("paywall-payer")
    if not SECRET:
        return payer
    signature = headers.get("paywall-signature")
    if payer is None and signature is None:
        return None
    try:
        t, mac = signature.removeprefix("t=").split(",v1=")
        timestamp = int(t)
    except (AttributeError, ValueError):
        raise ValueError("no readable Paywall-Signature")
    if abs(time.time() - timestamp) > MAX_AGE:
        raise ValueError("the signature is too old")
    lines = ["paywall-v1", str(timestamp), method, path]
    lines += [headers.get(name, "") for name in SIGNED]
    expected = hmac.new(SECRET, "\n".join(lines).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac):
        raise ValueError("the signature does not match")
    return payer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def handle_any(self):
        url = urlsplit(self.path)
        body = self.read_body()
        try:
            payer = verified_payer(self.command, self.path, self.headers)
        except ValueError as error:
            return self.answer(401, {"error": str(error)})
        seen = {
            "payer": payer,
            "amount": self.headers.get("paywall-amount"),
            "intent": self.headers.get("paywall-intent"),
            "payment": self.headers.get("paywall-payment"),
            "reference": self.headers.get("paywall-reference"),
        }
        parts = url.path.strip("/").split("/")
        if parts[0] == "weather" and len(parts) == 2:
            return self.answer(200, {"city": parts[1], "forecast": "sunny, 21°C", **seen})
        if url.path == "/upload":
            return self.answer(200, {"bytes": len(body),
                                     "sha256": hashlib.sha256(body).hexdigest(), **seen})
        if url.path == "/fail":
            return self.answer(500, {"error": "the upstream failed", **seen})
        if url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("s", ["5"])[0]))
            return self.answer(200, {"slow": True, **seen})
        return self.answer(200, {"hello": "free", "path": url.path, **seen})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    def log_message(self, format, *args):
        sys.stderr.write("upstream: " + (format % args) + "\n")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"upstream (Python) on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()
