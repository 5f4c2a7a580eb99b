/*
** proto_server.h: the relay's protocol engine, without sockets or clocks.
**
** The engine speaks docs/PROTOCOL.md to any number of connections.  It is
** fed the bytes each connection received and the current time, and answers
** through callbacks: bytes to send, a connection to close, reading to pause
** or resume.  Its only I/O is the store, through the store interface
** (store.h; the SQLite store of relay_store.h is its first backend), whose
** commits may complete later.  Credentials are checked by an
** authentication hook that may also answer later (the built-in one checks
** HS256 tokens and anonymous credentials at once).  relay.c runs the
** engine over libuv; tests drive it directly.
**
** Group commit: pushes are decoded and checked as they arrive and wait in
** one queue; knit_relay_engine_flush() applies every waiting push in one
** store transaction, commits once, and only when the commit completed
** answers them (ACK or REJECT, in each connection's order) and fans the
** committed units out to subscribers.  One group is in flight at a time.  The glue calls flush once
*per event-loop iteration, after
** all input of that iteration was read, so pushes that arrive together, on
** any connections, share one fsync.
**
** Ownership: the engine copies what it keeps.  Buffers handed to send()
** become the glue's, freed with knit__free() once written; the glue then
** reports the byte count with knit_relay_conn_sent().  A connection lives
** from knit_relay_conn_open() until the glue calls knit_relay_conn_free()
** (after the engine asked it to close, or the peer went away); after free
** the engine never calls back for it.  The engine must not be freed while
** knit_relay_engine_busy() says a commit or an authentication is pending.
*/
#ifndef KNIT_PROTO_SERVER_H
#define KNIT_PROTO_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "cred.h"
#include "jwk.h"
#include "metrics.h"
#include "relay_store.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_relay_engine_s knit_relay_engine_t;
typedef struct knit_relay_conn_s knit_relay_conn_t;

/* Limits; a zero field takes the default in brackets. */
typedef struct knit_relay_limits_s {
    size_t max_frame;      /* payload bytes of a frame after WELCOME [16 MiB] */
    size_t max_changes;    /* changes per PUSH [65536]; also per catch-up DELTAS */
    uint64_t max_drift_ms; /* stamps further ahead of the wall clock are refused [300000] */
    uint64_t idle_ms;      /* close a connection silent this long [60000] */
    uint64_t handshake_ms; /* close one that has not finished HELLO [10000] */
    size_t max_queue;      /* outbound bytes queued per connection before it
                              drops to catch-up mode [8 MiB] */
    size_t max_pending;    /* pushes of one connection awaiting commit before
                              its reading pauses [32] */
    uint64_t jwt_skew_ms;  /* allowance on exp/nbf/iat [60000] */
    size_t max_anon;       /* anonymous sessions at once; more get ERROR
                              KNIT_EBUSY [512] */
    size_t anon_per_min;   /* new anonymous ids registered per minute, in a
                              bucket of as many; more get ERROR KNIT_EBUSY [600] */
    size_t max_per_addr;   /* connections from one IP address, enforced by
                              the glue (relay.c) [256] */
} knit_relay_limits_t;

/* Log levels, most severe first. */
enum { KNIT_LOG_ERROR = 0, KNIT_LOG_WARN = 1, KNIT_LOG_INFO = 2, KNIT_LOG_DEBUG = 3 };

/* What the engine asks of the glue.  `user` is the pointer the glue gave
** knit_relay_conn_open(). */
typedef struct knit_relay_io_s {
    /* Queue p[0..n) for writing (the glue owns p from now on, and frees it
    ** with knit__free).  A non-zero return means the bytes could not be
    ** queued; the engine then closes the connection. */
    int (*send)(void *data, void *user, uint8_t *p, size_t n);
    /* Close the connection once the queued bytes are written (or soon,
    ** if the peer does not read them).  Called at most once per connection;
    ** the glue must not free the connection from inside this call. */
    void (*close)(void *data, void *user);
    /* Stop (paused = 1) or resume (0) reading from the connection. */
    void (*pause)(void *data, void *user, int paused);
    /* Fill buf with n random bytes (salts); non-zero on failure. */
    int (*random)(void *data, void *buf, size_t n);
    /* One log line, without a newline. */
    void (*log)(void *data, int level, const char *line);
    void *data; /* passed to every callback */
} knit_relay_io_t;

/* An authentication the engine asks of the hook (config.authenticate): a
** HELLO's credential, or its claim.  Valid until knit_relay_auth_done()
** is called for it; strings are valid as long. */
typedef struct knit_auth_request_s {
    int kind;           /* KNIT_CRED_ANON or KNIT_CRED_JWT (codec.h); others are possible */
    const char *id;     /* ANON: the anonymous id (unchecked) */
    const char *secret; /* ANON: its secret */
    const char *token;  /* JWT: the compact serialization */
    int claim;          /* 1: this is the HELLO's claim, whose principal must be
                           "anon:<id>" (its namespace is merged into the account's) */
    uint64_t wall_ms;   /* when the HELLO arrived (ms since the epoch) */
    const char *peer;   /* the connection's name, for logs */
    void *data;         /* config.auth_data */
    void *internal_;    /* the engine's; do not touch */
} knit_auth_request_t;

/* A hook's answer. */
typedef struct knit_auth_result_s {
    int code;              /* 0 accepted; KNIT_EAUTH refused; another code: a failure */
    const char *principal; /* accepted: "anon:<id>" or "user:<sub>" (copied) */
    uint64_t exp_ms;       /* accepted: when the credential expires, 0 = never */
    const char *why;       /* refused: a reason for the ERROR (copied), or NULL */
} knit_auth_result_t;

/* The authentication hook: starts checking req and returns 0; the answer
** is knit_relay_auth_done(req, ...), from inside this call or later (from a
** timer, after an HTTP fetch), exactly once.  A non-zero return refuses at
** once (and knit_relay_auth_done must not be called). */
typedef int (*knit_relay_auth_fn)(void *data, const knit_auth_request_t *req);

/* Configuration of an engine. */
typedef struct knit_relay_config_s {
    knit_relay_store_t *store;           /* opened SQLite store (used when backend is
                                            NULL); the engine does not close it */
    const knit_relay_backend_t *backend; /* another store (copied), or NULL */
    knit_relay_auth_fn authenticate;     /* the hook, or NULL: the built-in check */
    void *auth_data;                     /* passed to the hook */
    knit_relay_limits_t limits;          /* see above */
    const uint8_t *jwt_key;              /* HS256 key, or NULL: HS256 tokens refused */
    size_t jwt_key_len;                  /* its length (>= KNIT_JWT_MIN_KEY) */
    /* The identity provider's keys (RS256, ES256; jwk.h), or NULL.  Asked
    ** at each JWT; refresh = 1 when a token named a kid the set lacks (the
    ** provider may have rotated): the glue may reload, at most every 30 s.
    ** The set returned stays valid until the next call. */
    const knit_jwks_t *(*jwks)(void *data, int refresh);
    void *jwks_data;               /* passed to jwks */
    const char *issuer;            /* required "iss" of provider tokens (copied), or NULL */
    const char *const *parties;    /* "azp"/"aud" must name one of them (copied) */
    size_t nparties;               /* 0: not checked */
    int log_level;                 /* KNIT_LOG_* and above are logged */
    knit_relay_metrics_t *metrics; /* counted into (metrics.h; the caller's,
                                      must outlive the engine), or NULL */
} knit_relay_config_t;

/* Fills unset (zero) limits with their defaults. */
KNIT_EXTERN void knit_relay_limits_resolve(knit_relay_limits_t *l);

/* Makes an engine.  The key is copied. */
KNIT_EXTERN int knit_relay_engine_new(const knit_relay_config_t *cfg, const knit_relay_io_t *io,
                                      knit_relay_engine_t **out /* OUT */);
/* Frees the engine; every connection must have been freed.  NULL: no-op. */
KNIT_EXTERN void knit_relay_engine_free(knit_relay_engine_t *e);

/* A new connection.  wall_ms is milliseconds since the epoch, mono_ms a
** monotonic clock (timeouts use it, so wall-clock steps cannot fire them). */
KNIT_EXTERN int knit_relay_conn_open(knit_relay_engine_t *e, void *user, uint64_t wall_ms,
                                     uint64_t mono_ms, knit_relay_conn_t **out /* OUT */);
/* Bytes received.  Returns 0, or KNIT_ECLOSED once the connection is
** closing (the glue may stop reading; it must still wait for close()). */
KNIT_EXTERN int knit_relay_conn_input(knit_relay_conn_t *c, const uint8_t *p, size_t n,
                                      uint64_t wall_ms, uint64_t mono_ms);
/* n bytes handed to send() were written. */
KNIT_EXTERN void knit_relay_conn_sent(knit_relay_conn_t *c, size_t n);
/* The peer closed or the socket failed: no more input, no more output. */
KNIT_EXTERN void knit_relay_conn_lost(knit_relay_conn_t *c);
/* The glue is done with the connection; the engine forgets it.  Pushes it
** sent that wait for commit are still committed (but not answered). */
KNIT_EXTERN void knit_relay_conn_free(knit_relay_conn_t *c);
/* Peer address for logs (copied; may be called once after open). */
KNIT_EXTERN void knit_relay_conn_set_name(knit_relay_conn_t *c, const char *name);

/* 1 if pushes are waiting for knit_relay_engine_flush(). */
KNIT_EXTERN int knit_relay_engine_pending(const knit_relay_engine_t *e);
/* Commits the waiting pushes as one group, then answers and fans out. */
KNIT_EXTERN int knit_relay_engine_flush(knit_relay_engine_t *e, uint64_t wall_ms, uint64_t mono_ms);
/* Periodic: handshake and idle timeouts, expired tokens, and (every 2 s)
** sessions of accounts erased by another process (design note 14). */
KNIT_EXTERN void knit_relay_engine_tick(knit_relay_engine_t *e, uint64_t wall_ms, uint64_t mono_ms);
/* Graceful stop: commits and answers the waiting pushes, then sends every
** connection ERROR KNIT_ECLOSED and closes it.  Input that arrives later is
** ignored. */
KNIT_EXTERN void knit_relay_engine_shutdown(knit_relay_engine_t *e, uint64_t wall_ms,
                                            uint64_t mono_ms);
/* Open connections. */
KNIT_EXTERN size_t knit_relay_engine_conns(const knit_relay_engine_t *e);

/* The answer to req (see knit_relay_auth_fn).  res is read during the call. */
KNIT_EXTERN void knit_relay_auth_done(const knit_auth_request_t *req,
                                      const knit_auth_result_t *res);
/* The built-in check of req, without answering it: *res is filled (its
** principal points into principal[], its why at a static string), and
** *unknown_kid is set when a JWT was refused because its kid is not among
** the provider's keys the jwks callback gave (a fresh set may have it).
** A hook that fetches keys (relay.c, --jwks-url) runs it, and again once
** the fetch is done, and then answers with knit_relay_auth_done. */
KNIT_EXTERN void knit_relay_auth_check(const knit_auth_request_t *req, knit_auth_result_t *res,
                                       char principal[KNIT_PRINCIPAL_MAX],
                                       int *unknown_kid /* OUT */);
/* Runs the built-in check on req (HS256 with the configured key, anonymous
** credentials against the store) and answers it at once: what the engine
** does without a hook, and what a hook calls to fall back on it. */
KNIT_EXTERN void knit_relay_auth_default(const knit_auth_request_t *req);

/* Namespace ns advanced to sequence seq by a commit this engine did not
** make (another relay on the same database, the claim's merge): its live
** subscribers read the new units from the store. */
KNIT_EXTERN void knit_relay_engine_advanced(knit_relay_engine_t *e, const char *ns, uint64_t seq);

/* Ends every session of principal ("user:<sub>", "anon:<id>") with ERROR
** code and msg (an account erased, an anonymous id sealed by a claim); its
** pushes that wait for a group commit are dropped, not committed.  A group
** already in flight is not recalled.  Returns the sessions ended. */
KNIT_EXTERN size_t knit_relay_engine_end_principal(knit_relay_engine_t *e, const char *principal,
                                                   int code, const char *msg);

/* A stamp of the relay's HLC (the one its WELCOMEs and its own rows
** carry), for cells the relay writes outside the engine (webhooks). */
KNIT_EXTERN int knit_relay_engine_stamp(knit_relay_engine_t *e, uint64_t wall_ms,
                                        uint64_t *stamp /* OUT */);

/* 1 while a group commit or an authentication is pending (the engine may
** not be freed then). */
KNIT_EXTERN int knit_relay_engine_busy(const knit_relay_engine_t *e);

/* Encodes a one-off ERROR frame (for refusing a connection before an
** engine connection exists, e.g. over the connection limit). */
KNIT_EXTERN int knit_relay_error_frame(int code, const char *message, uint8_t **out /* OUT */,
                                       size_t *n /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
