/*
** http.h: the relay's HTTP/1.1 surface over byte streams (stream.h):
** GET /healthz, GET /metrics and the WebSocket upgrade at GET /v1/ws
** (docs/PROTOCOL.md, "HTTP"; docs/sync-relay.md).  Requests are parsed by
** libhttp-parser; this file only routes them and writes the answers.
**
** The server runs over streams, not sockets: the relay glue (relay.c)
** hands it each stream its HTTP listeners accept, so a TLS stream can carry
** it just as well as TCP.  What it needs of the relay comes through hooks:
** the store's health, the metrics text, and where an upgraded WebSocket
** stream (ws.h) goes: the relay then serves it like a TCP connection.
**
** Limits: a request line and headers of at most KNIT_HTTP_MAX_HEADER
** bytes (else 431), a body of at most KNIT_HTTP_MAX_BODY bytes (else
** 413), a whole request within KNIT_HTTP_REQUEST_MS of its first byte and
** a next request within KNIT_HTTP_IDLE_MS of the last answer (else 408 or
** a silent close), and at most max_conns HTTP connections (else 503).
**
** Ownership: the server owns each stream it was handed until the stream
** is closed or, upgraded, handed to the upgrade hook.  The server is freed
** by knit__http_server_free() once knit__http_conns() is 0.
*/
#ifndef KNIT_RELAY_HTTP_H
#define KNIT_RELAY_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_HTTP_MAX_HEADER 8192  /* request line and headers, bytes */
#define KNIT_HTTP_MAX_BODY 4096    /* request body, bytes (no endpoint takes one yet) */
#define KNIT_HTTP_REQUEST_MS 10000 /* a request, from its first byte to its end */
#define KNIT_HTTP_IDLE_MS 30000    /* between requests of a kept-alive connection */
#define KNIT_HTTP_LINGER_MS 2000   /* draining input after the last answer */

typedef struct knit_http_server_s knit_http_server_t;

typedef struct knit_http_hooks_s {
    /* 1 if the store answers (msg gets a reason otherwise). */
    int (*health)(void *data, char *msg, size_t n);
    /* The Prometheus text (*text freed with knit__free), or an error. */
    int (*metrics)(void *data, char **text /* OUT */, size_t *n /* OUT */);
    /* An upgraded WebSocket stream, now the hook's: it sets the callbacks
    ** and starts reading. */
    void (*upgrade)(void *data, knit_stream_t *ws);
    /* An HTTP connection was closed (the relay may be waiting for it). */
    void (*closed)(void *data);
    /* One log line. */
    void (*log)(void *data, int level, const char *line);
    void *data;              /* passed to every hook */
    knit_relay_metrics_t *m; /* metrics, or NULL */
    size_t max_msg;          /* largest WebSocket message: the relay's max frame */
    size_t max_conns;        /* HTTP connections at once [1024] */
    int log_level;           /* KNIT_LOG_* and above are logged */
} knit_http_hooks_t;

/* A server (no connections yet).  The hooks are copied. */
int knit__http_server_new(const knit_http_hooks_t *h, knit_http_server_t **out /* OUT */);
/* Frees it; every connection must be gone (knit__http_conns() == 0).  NULL: no-op. */
void knit__http_server_free(knit_http_server_t *s);
/* Serves st (just accepted, not reading yet); the server sets its callbacks. */
void knit__http_accept(knit_http_server_t *s, knit_stream_t *st);
/* Periodic (a few times a second): timeouts.  mono_ms is a monotonic clock. */
void knit__http_tick(knit_http_server_t *s, uint64_t mono_ms);
/* Stops: every HTTP connection lingers (its answers drain, then FIN) and
** closes within KNIT_HTTP_LINGER_MS; later streams are closed the same way. */
void knit__http_shutdown(knit_http_server_t *s);
/* HTTP connections open. */
size_t knit__http_conns(const knit_http_server_t *s);

#ifdef __cplusplus
}
#endif
#endif
