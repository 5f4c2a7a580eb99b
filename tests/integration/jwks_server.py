#!/usr/bin/python3
"""jwks_server.py: a loopback HTTP server for test_jwks_it.c that serves
DIR/jwks.json (made by jwt_mint.py) at /jwks.json, the way an identity
provider serves /.well-known/jwks.json.

Usage: jwks_server.py DIR

It binds 127.0.0.1 on a port the kernel picks and writes that port to
DIR/port once it listens.  Each request appends one line to
DIR/requests.log, before it is answered, so a test can count fetches.
While DIR/stall exists, requests are held (for at most 60 s) without an
answer: a provider that accepts connections and never replies.
"""
import http.server
import os
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        d = self.server.dir
        with open(os.path.join(d, "requests.log"), "a") as f:
            f.write("%.3f %s\n" % (time.time(), self.path))
        deadline = time.time() + 60
        while os.path.exists(os.path.join(d, "stall")) and time.time() < deadline:
            time.sleep(0.05)
        if self.path != "/jwks.json":
            self.send_error(404)
            return
        try:
            with open(os.path.join(d, "jwks.json"), "rb") as f:
                body = f.read()
        except OSError:
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def main(argv):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.dir = argv[1]
    tmp = os.path.join(argv[1], "port.new")
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.replace(tmp, os.path.join(argv[1], "port"))
    srv.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
