/*
** relay.h: the relay server: the protocol engine (proto_server.h) on a
** libuv event loop, serving byte streams (transport/stream/) accepted on
** any number of TCP listeners.
**
** A knit_relay_t lives on the caller's loop: knit_relay_new() makes it,
** knit_relay_listen() adds listeners (as many as wanted, while it runs),
** knit_relay_close() stops it: it stops accepting, commits and acknowledges
** the pushes already received, tells every client ERROR KNIT_ECLOSED, waits
** (at most a few seconds) for those frames to be written, and calls back.
**
** knit_relay_serve() is the convenience sync-relay uses: its own loop, one
** listener (TLS when a certificate is given; SIGHUP then reloads it), and
** SIGINT/SIGTERM to stop.  Further SIGINT/SIGTERM during and
** after that stop are ignored (the process's disposition for them is left
** at SIG_IGN).
**
** Ownership: the store (cfg.store or cfg.backend, and the webhooks' store)
** is the caller's and must stay open until the close callback; strings in
** the options are copied or only read during the call.  A relay is freed after its close callback
** returns.
*/
#ifndef KNIT_RELAY_H
#define KNIT_RELAY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "proto_server.h"
#include "webhook.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_relay_s knit_relay_t;

typedef struct knit_relay_opts_s {
    size_t max_conns;        /* connections served at once, all listeners [1024] */
    knit_relay_config_t cfg; /* store, limits, JWT key, authentication hook, log level */
    /* Log lines (without newline); NULL: knit_relay_log_stderr. */
    void (*log)(void *data, int level, const char *line);
    void *data; /* the caller's: passed to log, returned by knit_relay_data() */
    /* The identity provider's JWKS URL (http or https), or NULL.  The relay
    ** fetches it on its loop (jwks_fetch.h), at start and when a token names
    ** an unknown kid, and checks RS256/ES256 tokens against it with its own
    ** authentication hook: cfg.authenticate and cfg.jwks must then be NULL. */
    const char *jwks_url;
    uint64_t jwks_cooldown_ms; /* least time between two fetches (0: none) */
    uint64_t jwks_timeout_ms;  /* a fetch that takes longer fails [5000] */
    /* Where webhook deliveries go (webhook.h; copied), or NULL: the SQLite
    ** store cfg.store (knit_relay_store_webhooks).  With cfg.backend, the
    ** backend's own (store_pg.h knit_pg_store_webhooks); without one,
    ** webhooks are answered 503. */
    const knit_webhook_store_t *webhooks;
} knit_relay_opts_t;

/* A listener's bound address. */
typedef struct knit_relay_addr_s {
    char host[48]; /* IP literal, without brackets */
    int port;      /* port (the one picked, when 0 was asked for) */
} knit_relay_addr_t;

/* Makes a relay on loop (not yet listening). */
KNIT_EXTERN int knit_relay_new(uv_loop_t *loop, const knit_relay_opts_t *o,
                               knit_relay_t **out /* OUT */);
/* Listens on host (an IPv4 or IPv6 literal) and port (0: an ephemeral
** one); may be called any number of times.  KNIT_EINVAL for a host that is
** not an IP literal, KNIT_EIO when it cannot be bound (a message is
** logged).  out (may be NULL) gets the bound address. */
KNIT_EXTERN int knit_relay_listen(knit_relay_t *r, const char *host, int port,
                                  knit_relay_addr_t *out /* OUT */);
/* Loads (or reloads) the TLS credentials of the relay's TLS listeners: a
** PEM certificate chain (the relay's own certificate first) and its
** private key (RSA or EC; transport/stream/tls.h).  New connections get
** them; connections already open keep the ones they started with.  On
** failure the previous credentials stay.  msg[0..n) says what was loaded,
** or why not. */
KNIT_EXTERN int knit_relay_set_tls(knit_relay_t *r, const char *cert_file, const char *key_file,
                                   char *msg, size_t n);
/* Like knit_relay_listen, but the streams accepted speak TLS 1.2 with the
** credentials of knit_relay_set_tls (KNIT_EINVAL when none are loaded).
** knit_relay_listen logs a warning when it listens in cleartext on an
** address that is not a loopback one. */
KNIT_EXTERN int knit_relay_listen_tls(knit_relay_t *r, const char *host, int port,
                                      knit_relay_addr_t *out /* OUT */);
/* Listens for HTTP/1.1 on host and port, like knit_relay_listen: GET
** /healthz, GET /metrics (Prometheus text) and the WebSocket endpoint
** GET /v1/ws, whose sessions are protocol sessions like TCP ones
** (docs/PROTOCOL.md, "HTTP and WebSocket"; transport/relay/http.h).  May
** be called any number of times; all HTTP listeners share one server.
** A listener opened after knit_relay_set_tls speaks HTTPS (and wss:). */
KNIT_EXTERN int knit_relay_listen_http(knit_relay_t *r, const char *host, int port,
                                       knit_relay_addr_t *out /* OUT */);
/* Accepts signed webhooks at POST /v1/webhooks/clerk of the HTTP listeners
** opened after this call (transport/relay/webhook.h), with a "whsec_..."
** secret.  KNIT_EINVAL for a secret that is not one. */
KNIT_EXTERN int knit_relay_set_webhook_secret(knit_relay_t *r, const char *secret);
/* Stops gracefully (see above); cb (may be NULL) runs once everything is
** closed, then the relay is freed.  NULL, or a second call: no-op. */
KNIT_EXTERN void knit_relay_close(knit_relay_t *r, void (*cb)(knit_relay_t *r));
/* The data pointer given in the options. */
KNIT_EXTERN void *knit_relay_data(const knit_relay_t *r);
/* Open connections. */
KNIT_EXTERN size_t knit_relay_conns(const knit_relay_t *r);

typedef struct knit_relay_serve_opts_s {
    const char *host;        /* IPv4 or IPv6 literal to listen on */
    int port;                /* 0 = an ephemeral port */
    size_t max_conns;        /* connections served at once (more are refused) */
    knit_relay_config_t cfg; /* store, limits, JWT key, log level */
    /* Called once listening, with the bound address; may be NULL. */
    void (*on_listen)(void *data, const char *host, int port);
    void *data;                    /* passed to on_listen and on_http_listen */
    const knit_relay_addr_t *http; /* HTTP listeners to open (knit_relay_listen_http), or NULL */
    size_t nhttp;                  /* their count */
    /* Called once per HTTP listener, with its bound address; may be NULL. */
    void (*on_http_listen)(void *data, const char *host, int port);
    const char *tls_cert;       /* PEM chain: the protocol listener speaks TLS, and SIGHUP
                                   reloads it and tls_key for new connections [NULL: TCP] */
    const char *tls_key;        /* PEM private key of tls_cert (required with it) */
    const char *webhook_secret; /* "whsec_..." for POST /v1/webhooks/clerk, or NULL */
    const char *jwks_url;       /* see knit_relay_opts_t */
    uint64_t jwks_cooldown_ms;  /* see knit_relay_opts_t */
    uint64_t jwks_timeout_ms;   /* see knit_relay_opts_t */
    /* Where webhook deliveries go: see knit_relay_opts_t. */
    const knit_webhook_store_t *webhooks;
} knit_relay_serve_opts_t;

/* Serves on a loop of its own until SIGINT/SIGTERM; 0 on a clean stop,
** else a KNIT_E* code (e.g. KNIT_EIO when the address cannot be bound; a
** message is logged). */
KNIT_EXTERN int knit_relay_serve(const knit_relay_serve_opts_t *o);

/* Writes a log line to stderr ("<time> sync-relay <level>: <line>"). */
KNIT_EXTERN void knit_relay_log_stderr(void *data, int level, const char *line);

#ifdef __cplusplus
}
#endif
#endif
