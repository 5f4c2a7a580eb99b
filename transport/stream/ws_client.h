/*
** ws_client.h: a WebSocket client stream (stream.h) over another byte
** stream (TCP, or TLS for wss://), so a sync client behind a proxy or a
** firewall that lets only HTTP(S) out can still reach a relay: the relay
** serves the protocol at GET /v1/ws of its --http-listen port
** (docs/PROTOCOL.md, "WebSocket").
**
** What the glue feeds and gets: the stream is used like a TCP stream.  It
** sends the HTTP/1.1 upgrade request once the inner stream is open, checks
** the 101 answer (Upgrade, Connection, Sec-WebSocket-Accept; no extension
** or subprotocol) and only then reports on_open(0).  A refused upgrade is
** reported through on_open as KNIT_EPROTO with a message that says what
** came back ("relay answered 404 Not Found at /v1/ws: ...", "no HTTP
** answer ...", "Sec-WebSocket-Accept does not match ...").
**
** The mapping is the relay's (ws_stream.h, shared): each frame the user
** writes (4-byte length, payload) becomes one binary message, masked as a
** client must; each binary message received becomes a frame again (its
** length, then its bytes) for on_read.  Writes must hold whole frames, one
** or more, as the protocol engine always writes; a write that ends inside
** a frame is refused (KNIT_EINVAL).  A text message or a WebSocket
** protocol error ends input (KNIT_EPROTO, after a close frame); the peer's
** close frame ends it with KNIT_ECLOSED.  knit_stream_shutdown() sends a
** close frame (1000), then half-closes the inner stream; knit_stream_close()
** sends one too before closing the inner stream, when the connection is not
** congested (ws_stream.c, note 5).  Messages longer
** than KNIT_WS_CLIENT_MAX_MSG close the WebSocket (1009).
**
** Randomness: the Sec-WebSocket-Key and the masking keys come from an
** HMAC-DRBG (SHA-256, BearSSL) seeded with the caller's 32 bytes, so the
** stream reads no random device itself; the caller draws the seed from a
** CSPRNG for every connection.
**
** Ownership: from a successful knit_ws_client() on, the WebSocket stream
** owns the inner stream (it sets the inner stream's callbacks and data and
** closes it with itself).  On failure the inner stream is untouched: the
** caller still owns and closes it.  Strings are copied.  WebSocket framing
** is libwslay's (event API) and the 101 answer is parsed by http-parser;
** wslay allocates with the C library's malloc, not knit's wrapper.
*/
#ifndef KNIT_WS_CLIENT_H
#define KNIT_WS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The path the relay serves its WebSocket at. */
#define KNIT_WS_DEFAULT_PATH "/v1/ws"
/* Largest message accepted from the relay (the protocol's default maximum
** frame, docs/PROTOCOL.md section 1). */
#define KNIT_WS_CLIENT_MAX_MSG (16u * 1024 * 1024)

/* 1 if path can go into a request line: it starts with '/', holds 1..1024
** visible ASCII characters and no '#'; else 0. */
KNIT_EXTERN int knit_ws_path_ok(const char *path);

/* Wraps inner, a client stream just made by knit_tcp_connect() or
** knit_tls_connect() and not open yet, in a WebSocket client stream that
** upgrades at path (NULL: KNIT_WS_DEFAULT_PATH) with the Host header host
** ("name:port", "[v6]:port").  cb and data are the new stream's, as for
** knit_tcp_connect().  KNIT_EINVAL for a bad path or host, KNIT_ENOMEM. */
KNIT_EXTERN int knit_ws_client(knit_stream_t *inner, const char *host, const char *path,
                               const uint8_t seed[32], const knit_stream_cbs_t *cb, void *data,
                               knit_stream_t **out /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
