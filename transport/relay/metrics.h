/*
** metrics.h: the relay's counters, gauges and histograms, and their
** rendering in the Prometheus text exposition format (GET /metrics,
** docs/sync-relay.md lists every metric).
**
** The relay glue (relay.c) owns one knit_relay_metrics_t and hands it to
** the protocol engine in its configuration; the engine, the glue and the
** HTTP and WebSocket layers call the small knit__metrics_* hooks below at
** the places where things happen.  Every hook accepts NULL and then does
** nothing, so an engine driven by a test without metrics behaves exactly as
** before.  Nothing here does I/O: the only outside input is the clock the
** glue passes to knit__metrics_init(), read for latencies.
**
** Label sets are closed: each is one X-macro table below, so the text
** format, the hooks and the documentation name the same values, and a
** client cannot make the relay grow a new series.
**
** Ownership: the struct is the caller's (usually embedded in the relay);
** knit__metrics_render() returns text the caller frees with knit__free().
*/
#ifndef KNIT_RELAY_METRICS_H
#define KNIT_RELAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "knit_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Transports a connection can arrive on: X(ENUM, label). */
#define KNIT_METRIC_TRANSPORTS(X)                                                                  \
    X(TCP, "tcp")                                                                                  \
    X(TLS, "tls")                                                                                  \
    X(WS, "websocket")                                                                             \
    X(LP, "longpoll")

/* Why an authentication failed: X(ENUM, label). */
#define KNIT_METRIC_AUTH_FAILURES(X)                                                               \
    X(REFUSED, "refused")         /* the credential was refused */                                 \
    X(CLAIM, "claim_refused")     /* the HELLO's claim was refused */                              \
    X(HOOK, "hook_error")         /* the hook or the store failed while checking */                \
    X(DENIED, "namespace_denied") /* a subscription named a namespace not granted */               \
    X(EXPIRED, "token_expired")   /* a session's token expired */

/* Which limit was hit: X(ENUM, label). */
#define KNIT_METRIC_LIMITS(X)                                                                      \
    X(CONNS, "connections")                 /* --max-conns; connection refused */                  \
    X(PER_ADDR, "connections_per_address")  /* --max-conns-per-addr; refused */                    \
    X(ANON, "anonymous_sessions")           /* --max-anon-sessions; session refused */             \
    X(ANON_RATE, "anonymous_registrations") /* --anon-registrations-per-min */                     \
    X(FRAME, "frame_size")                  /* a frame above max_frame */                          \
    X(CHANGES, "changes_per_push")          /* a PUSH above max_changes */                         \
    X(STASH, "pre_welcome_bytes")           /* too much sent before WELCOME */                     \
    X(QUEUE, "outbound_queue")              /* answers piled up: peer not reading */               \
    X(SLOW, "slow_consumer")                /* a live subscription dropped to catch-up */          \
    X(HANDSHAKE, "handshake_timeout")       /* no HELLO in time */                                 \
    X(IDLE, "idle_timeout")                 /* a session silent too long */                        \
    X(HTTP_CONNS, "http_connections")       /* HTTP connection refused */                          \
    X(HTTP_HEADER, "http_header_size")      /* request line and headers too long */                \
    X(HTTP_BODY, "http_body_size")          /* request body too long */                            \
    X(HTTP_TIMEOUT, "http_request_timeout") /* request not complete in time */                     \
    X(WS_MESSAGE, "websocket_message_size") /* WebSocket message above max_frame */

#define KNIT_METRIC_ENUM(name, label) KNIT_METRIC_##name,
enum { KNIT_METRIC_TRANSPORTS(KNIT_METRIC_ENUM) KNIT_METRIC_NTRANSPORTS };
enum { KNIT_METRIC_AUTH_FAILURES(KNIT_METRIC_ENUM) KNIT_METRIC_NAUTH };
enum { KNIT_METRIC_LIMITS(KNIT_METRIC_ENUM) KNIT_METRIC_NLIMITS };
#undef KNIT_METRIC_ENUM

#define KNIT_METRIC_NCODES 64      /* error codes counted by name (-1 .. -63) */
#define KNIT_METRIC_MAX_BUCKETS 20 /* upper bounds of one histogram */

/* A cumulative histogram with fixed upper bounds (+Inf is implicit). */
typedef struct knit_metric_hist_s {
    const double *le;                             /* upper bounds, ascending */
    size_t nle;                                   /* their count (<= MAX_BUCKETS) */
    uint64_t counts[KNIT_METRIC_MAX_BUCKETS + 1]; /* per bucket, not cumulative; last: +Inf */
    double sum;                                   /* sum of the observations */
    uint64_t count;                               /* number of observations */
} knit_metric_hist_t;

/* HTTP answers counted by status. */
#define KNIT_METRIC_HTTP_CODES(X)                                                                  \
    X(101)                                                                                         \
    X(200)                                                                                         \
    X(201) X(204) X(400) X(401) X(404) X(405) X(408) X(410) X(413) X(426) X(431) X(500) X(503)

/* Consistency checks answered (CHECK, docs/PROTOCOL.md): the client's
** digest equal to the relay's, different (bucket digests sent), a fetch of
** differing buckets' cells, or a storage error. */
enum {
    KNIT_METRIC_CHECK_EQUAL,
    KNIT_METRIC_CHECK_DIFFER,
    KNIT_METRIC_CHECK_FETCH,
    KNIT_METRIC_CHECK_ERROR,
    KNIT_METRIC_NCHECKS
};

typedef struct knit_relay_metrics_s {
    uint64_t (*now_us)(void *data);                /* the glue's monotonic clock, microseconds */
    void *clock_data;                              /* passed to now_us */
    int64_t conns[KNIT_METRIC_NTRANSPORTS];        /* open connections */
    uint64_t conns_total[KNIT_METRIC_NTRANSPORTS]; /* accepted since start */
    int64_t http_conns;                            /* open HTTP connections (not upgraded) */
    int64_t sessions;                              /* WELCOMEd connections open */
    uint64_t sessions_total;                       /* WELCOMEs sent */
    uint64_t pushes;                               /* PUSH messages received */
    uint64_t acks;                                 /* ACKs sent */
    uint64_t rejects[KNIT_METRIC_NCODES];          /* REJECTs sent, by -code */
    uint64_t changes_ingested;                     /* changes of committed pushes */
    uint64_t changes_applied;                      /* of them, stored (won) */
    uint64_t catchup_bytes;                        /* bytes of catch-up DELTAS sent */
    uint64_t fanout_deltas;                        /* live DELTAS sent */
    uint64_t echoes_skipped;                       /* units not sent back to their pusher */
    uint64_t auth_failures[KNIT_METRIC_NAUTH];     /* by reason */
    uint64_t limits[KNIT_METRIC_NLIMITS];          /* by limit */
    uint64_t group_failed;                         /* group commits that failed */
    uint64_t checks[KNIT_METRIC_NCHECKS];          /* CHECKs answered, by KNIT_METRIC_CHECK_* */
    uint64_t http[16];                             /* HTTP answers, by KNIT_METRIC_HTTP_CODES */
    knit_metric_hist_t ack_latency;                /* seconds, PUSH arrival to ACK */
    knit_metric_hist_t fanout_latency;             /* seconds, PUSH arrival to its DELTAS */
    knit_metric_hist_t group_pushes;               /* pushes per group commit */
    knit_metric_hist_t group_changes;              /* changes per group commit */
} knit_relay_metrics_t;

/* Values read at scrape time, which the glue fills in. */
typedef struct knit_relay_metrics_snapshot_s {
    int store_ok;        /* 1 if a read of the store succeeded */
    int64_t store_bytes; /* size of the store file, -1 when unknown */
    uint64_t damaged;    /* cells catch-up skipped */
    uint64_t uptime_s;   /* seconds since the relay started */
} knit_relay_metrics_snapshot_t;

/* Zeroes m and sets its clock (now_us may be NULL: latencies read 0). */
void knit__metrics_init(knit_relay_metrics_t *m, uint64_t (*now_us)(void *data), void *data);
/* The clock, in microseconds (0 when m is NULL). */
uint64_t knit__metrics_now(const knit_relay_metrics_t *m);

void knit__metrics_conn(knit_relay_metrics_t *m, int transport, int delta);
void knit__metrics_http_conn(knit_relay_metrics_t *m, int delta);
void knit__metrics_session(knit_relay_metrics_t *m, int delta);
void knit__metrics_push(knit_relay_metrics_t *m);
/* A PUSH answered: ACK (code 0) or REJECT with code; arrived_us is when it
** arrived (knit__metrics_now), for the ACK latency. */
void knit__metrics_answer(knit_relay_metrics_t *m, int code, uint64_t arrived_us);
/* A group commit: pushes and changes it held, whether it committed. */
void knit__metrics_group(knit_relay_metrics_t *m, size_t pushes, size_t changes, int ok);
/* A committed push: changes it carried, changes stored. */
void knit__metrics_ingest(knit_relay_metrics_t *m, size_t changes, size_t applied);
/* A push's units reached n live subscribers; arrived_us as above. */
void knit__metrics_fanout(knit_relay_metrics_t *m, size_t n, uint64_t arrived_us);
/* n units of a push were not sent back to the connection that pushed them
** (it announced KNIT_HELLO_NO_ECHO). */
void knit__metrics_echoes_skipped(knit_relay_metrics_t *m, size_t n);
void knit__metrics_catchup(knit_relay_metrics_t *m, size_t bytes);
/* One CHECK answered (kind: KNIT_METRIC_CHECK_*). */
void knit__metrics_check(knit_relay_metrics_t *m, int kind);
void knit__metrics_auth_fail(knit_relay_metrics_t *m, int reason);
void knit__metrics_limit(knit_relay_metrics_t *m, int limit);
void knit__metrics_http(knit_relay_metrics_t *m, int status);

/* Renders every metric as Prometheus text (version 0.0.4) into a new
** NUL-terminated buffer (*out, knit__free; *n its length).  KNIT_ENOMEM. */
int knit__metrics_render(const knit_relay_metrics_t *m, const knit_relay_metrics_snapshot_t *s,
                         char **out /* OUT */, size_t *n /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
