#!/usr/bin/env python3
"""ws_client.py: a WebSocket client for test_http_it.c, built on Debian's
python3-websockets, so the relay's WebSocket endpoint is checked against a
library no one here wrote.

Usage: ws_client.py URL < commands

Each command line is one of
    send HEX        send one binary message (the bytes in hex)
    text STRING     send one text message
    big N           send one binary message of N zero bytes
    recv            wait (10 s at most) for one message and print
                    "bin HEX" or "text STRING", or "closed CODE" if the
                    relay closed the connection
    ping            send a WebSocket ping and print "pong" once answered
    close           close normally and print "closed CODE"
Every wait is bounded; the exit code is 0 unless the connection could not
be opened (2).  The protocol bytes themselves are made and checked by the C
test with knit's codec.
"""
import asyncio
import sys

import websockets


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(url):
    try:
        ws = await asyncio.wait_for(
            websockets.connect(url, compression=None, ping_interval=None, max_size=None), 10
        )
    except Exception as e:  # the test prints what failed
        out("connect-failed %s" % type(e).__name__)
        return 2
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "send":
                await ws.send(bytes.fromhex(arg))
            elif cmd == "text":
                await ws.send(arg)
            elif cmd == "big":
                await ws.send(bytes(int(arg)))
            elif cmd == "recv":
                m = await asyncio.wait_for(ws.recv(), 10)
                out("bin " + m.hex() if isinstance(m, bytes) else "text " + m)
            elif cmd == "ping":
                waiter = await ws.ping()
                await asyncio.wait_for(waiter, 10)
                out("pong")
            elif cmd == "close":
                await asyncio.wait_for(ws.close(), 10)
                out("closed %s" % ws.close_code)
        except websockets.ConnectionClosed:
            await asyncio.wait_for(ws.wait_closed(), 10)
            out("closed %s" % ws.close_code)
            return 0
        except asyncio.TimeoutError:
            out("timeout")
            return 0
    await asyncio.wait_for(ws.close(), 10)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(run(sys.argv[1])))
