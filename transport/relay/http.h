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
** Long-polling (lp.h; PROTOCOL.md section 1.3): POST /v1/lp opens a
** session whose stream goes to the longpoll hook, served by the relay like
** any other; POST, GET and DELETE /v1/lp/<sid> move its bytes.  A GET that
** waits for news parks its connection (no further request is read on it)
** until the session answers it.
**
** Limits: a request line and headers of at most KNIT_HTTP_MAX_HEADER
** bytes (else 431), a body of at most KNIT_HTTP_MAX_BODY bytes (else
** 413; max_msg + 4 for POST /v1/lp/<sid>), a whole request within
** KNIT_HTTP_REQUEST_MS of its first byte and a next request within
** KNIT_HTTP_IDLE_MS of the last answer (else 408 or a silent close), and
** at most max_conns HTTP connections (else 503).
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

#define KNIT_HTTP_MAX_HEADER 8192    /* request line and headers, bytes */
#define KNIT_HTTP_MAX_BODY 4096      /* request body, bytes (but long-poll frames) */
#define KNIT_HTTP_MAX_WEBHOOK 262144 /* a webhook delivery's body, bytes */
#define KNIT_HTTP_REQUEST_MS 10000   /* a request, from its first byte to its end */
#define KNIT_HTTP_IDLE_MS 30000      /* between requests of a kept-alive connection */
#define KNIT_HTTP_LINGER_MS 2000     /* draining input after the last answer */

typedef struct knit_http_server_s knit_http_server_t;

typedef struct knit_http_hooks_s {
    /* 1 if the store answers (msg gets a reason otherwise). */
    int (*health)(void *data, char *msg, size_t n);
    /* The Prometheus text (*text freed with knit__free), or an error. */
    int (*metrics)(void *data, char **text /* OUT */, size_t *n /* OUT */);
    /* The JSON of GET /v1/status (status.h; *text freed with knit__free). */
    int (*status)(void *data, char **text /* OUT */, size_t *n /* OUT */);
    /* POST /v1/webhooks/clerk (webhook.h): the svix-* (or webhook-*)
    ** headers, "" when absent, and the body; returns the HTTP status with a
    ** reason in msg.  NULL: the route answers 404. */
    int (*webhook)(void *data, const char *id, const char *ts, const char *sig, const uint8_t *body,
                   size_t n, char *msg, size_t msgn);
    /* An upgraded WebSocket stream, now the hook's: it sets the callbacks
    ** and starts reading. */
    void (*upgrade)(void *data, knit_stream_t *ws);
    /* A new long-poll session's stream (lp.h), now the hook's, as upgrade.
    ** NULL: /v1/lp is not served. */
    void (*longpoll)(void *data, knit_stream_t *st);
    /* Random bytes for session ids: 0 or an error. */
    int (*random)(void *data, void *buf, size_t n);
    /* An HTTP connection was closed (the relay may be waiting for it). */
    void (*closed)(void *data);
    /* One log line. */
    void (*log)(void *data, int level, const char *line);
    void *data;              /* passed to every hook */
    knit_relay_metrics_t *m; /* metrics, or NULL */
    size_t max_msg;          /* largest WebSocket message: the relay's max frame */
    size_t max_queue;        /* the relay's max_queue: long-poll output kept is about twice it */
    uint64_t lp_wait_ms;     /* a long-poll GET's wait [KNIT_LP_WAIT_MS, or $KNIT_LP_WAIT_MS] */
    uint64_t lp_idle_ms; /* a long-poll session's idle end [KNIT_LP_IDLE_MS, $KNIT_LP_IDLE_MS] */
    size_t max_conns;    /* HTTP connections at once [1024] */
    int log_level;       /* KNIT_LOG_* and above are logged */
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
/* HTTP connections open (long-poll sessions are the relay's connections). */
size_t knit__http_conns(const knit_http_server_t *s);

#ifdef __cplusplus
}
#endif
#endif
