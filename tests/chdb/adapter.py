#!/usr/bin/env python3
"""A test-only stand-in for ClickHouse's HTTP interface over chdb-core, the embedded ClickHouse
engine on PyPI: the only current ClickHouse release these machines can run (Debian ships 18.16).

    python3 tests/chdb/adapter.py --port 18200 --data /tmp/chdb-data

It speaks as much of the HTTP interface as OCTP and its tests use: the statement in the `query`
parameter and/or the body (`database` selects the default database), `INSERT … FORMAT RowBinary`
with the rows in the body (chunked or not), and an output format from a trailing `FORMAT`, else
`default_format`, else TabSeparated. Errors come back as 500 with ClickHouse's message. One embedded engine
answers one statement at a time. Not for production: nothing here is authenticated.
"""

import argparse
import http.server
import re
import sys
import threading
import urllib.parse

from chdb import session as chdb_session

FORMAT_AT_END = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)


class Engine:
    def __init__(self, path):
        self.session = chdb_session.Session(path)
        self.lock = threading.Lock()

    def run(self, database, sql, data, default_format="TabSeparated"):
        with self.lock:
            self.session.query(f"USE {database or 'default'}")
            match = FORMAT_AT_END.search(sql)
            output_format = default_format
            if match:
                output_format = match.group(1)
                sql = sql[: match.start()]
            if data:
                inserter = self.session.send_insert(sql, output_format)
                inserter.append(data)
                inserter.finish()
                return b""
            result = self.session.query(sql, output_format)
            return bytes(result.bytes()) if result is not None else b""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine = None

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def answer(self):
        parsed = urllib.parse.urlparse(self.path)
        params = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        body = self.body() if self.command == "POST" else b""
        query = params.get("query", "")
        # As ClickHouse does: with `query` in the URL the body is the INSERT's data, else the
        # body is the statement.
        if query and body and query.lstrip().upper().startswith("INSERT"):
            sql, data = query, body
        else:
            sql, data = (query + " " + body.decode()).strip() if query else body.decode(), b""
        if not sql:
            return self.reply(200, b"Ok.\n")
        try:
            output = self.engine.run(params.get("database"), sql, data,
                                     params.get("default_format") or "TabSeparated")
        except Exception as error:  # chdb raises RuntimeError with ClickHouse's message
            return self.reply(500, f"Code: 1000. DB::Exception: {error}\n".encode())
        self.reply(200, output)

    def reply(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = answer
    do_POST = answer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=18200)
    parser.add_argument("--data", required=True, help="a directory for the engine's tables")
    args = parser.parse_args()
    Handler.engine = Engine(args.data)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"chdb {Handler.engine.run(None, 'SELECT version()', b'').decode().strip()} on 127.0.0.1:{args.port}",
          file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
