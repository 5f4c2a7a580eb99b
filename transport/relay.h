/*
** relay.h: the relay server: the protocol engine (proto_server.h) on a
** libuv event loop, listening on TCP.
**
** knit_relay_serve() runs until SIGINT or SIGTERM.  Then it stops accepting,
** commits and acknowledges the pushes already received, tells every client
** ERROR KNIT_ECLOSED, waits (at most a few seconds) for those frames to be
** written, and returns 0.  Further SIGINT/SIGTERM during and after that
** stop are ignored (the process's disposition for them is left at SIG_IGN).
*/
#ifndef KNIT_RELAY_H
#define KNIT_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "proto_server.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_relay_serve_opts_s {
    const char *host;        /* IPv4 or IPv6 literal to listen on */
    int port;                /* 0 = an ephemeral port */
    size_t max_conns;        /* connections served at once (more are refused) */
    knit_relay_config_t cfg; /* store, limits, JWT key, log level */
    /* Called once listening, with the bound address; may be NULL. */
    void (*on_listen)(void *data, const char *host, int port);
    void *data; /* passed to on_listen */
} knit_relay_serve_opts_t;

/* Serves until SIGINT/SIGTERM; 0 on a clean stop, else a KNIT_E* code
** (e.g. KNIT_EIO when the address cannot be bound; a message is logged). */
KNIT_EXTERN int knit_relay_serve(const knit_relay_serve_opts_t *o);

/* Writes a log line to stderr ("<time> sync-relay <level>: <line>"). */
KNIT_EXTERN void knit_relay_log_stderr(void *data, int level, const char *line);

#ifdef __cplusplus
}
#endif
#endif
