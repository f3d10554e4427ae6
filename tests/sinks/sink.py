#!/usr/bin/env python3
"""Notification receivers for the end-to-end tests: a real SMTP server
(aiosmtpd) and a real HTTP server (the standard library's), each on
loopback, writing every message it accepts to OUTDIR as one JSON file.

    sink.py smtp PORT OUTDIR     # PORT 0 picks one; the port is written to OUTDIR/port
    sink.py http PORT OUTDIR
"""
import asyncio
import email
import email.policy
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counter = 0
lock = threading.Lock()


def save(outdir, record):
    global counter
    with lock:
        counter += 1
        name = os.path.join(outdir, "msg-%06d.json" % counter)
    tmp = name + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.rename(tmp, name)


def announce(outdir, port):
    tmp = os.path.join(outdir, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, os.path.join(outdir, "port"))


def smtp(port, outdir):
    from aiosmtpd.smtp import SMTP

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            save(outdir, {
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "subject": str(msg["subject"]),
                "body": msg.get_body(preferencelist=("plain",)).get_content(),
            })
            return "250 Message accepted for delivery"

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: SMTP(Handler()), "127.0.0.1", port)
        announce(outdir, srv.sockets[0].getsockname()[1])
        await srv.serve_forever()

    asyncio.run(main())


def http(port, outdir):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            save(outdir, {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
            })
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    announce(outdir, srv.server_address[1])
    srv.serve_forever()


if __name__ == "__main__":
    kind, port, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(outdir, exist_ok=True)
    {"smtp": smtp, "http": http}[kind](port, outdir)
