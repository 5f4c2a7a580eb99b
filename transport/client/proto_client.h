/*
** proto_client.h: the sync client's protocol engine, without sockets, files
** or clocks.
**
** The engine speaks docs/PROTOCOL.md for one replica to one relay across
** any number of successive connections.  The glue (transport/client.c runs
** it over libuv; tests drive it directly) feeds it what happened, always
** with the current monotonic time in milliseconds:
**
**   knit_client_connected()    the TCP connection is up: HELLO is queued
**   knit_client_input()        bytes arrived
**   knit_client_lost()         the connection is gone, or never came up
**   knit_client_tick()         time passed
**   knit_client_local_changed() the replica has new local writes
**
** and asks it what to do:
**
**   knit_client_want_connect() 1: open a connection now (backoff elapsed)
**   knit_client_want_close()   1: close the connection (after writing output)
**   knit_client_take_output()  bytes to write, in order
**   knit_client_push_room()    1: read local changes after version V, at
**                              most N of them, and hand them over with
**                              knit_client_push() (or knit_client_push_none())
**
** The engine never touches the replica.  What must happen there is asked of
** the glue through the callbacks in knit_client_io_t: read a cursor, adopt
** the session's namespace, move the rows of a claimed anonymous namespace,
** apply a DELTAS together with its cursor, record the acknowledged
** watermark.  Callbacks run inside the engine call that triggered them and
** must not call back into the engine.
**
** Signing in keeps what was written anonymously: with a JWT credential and
** a `claim` (an ANON credential) in the configuration, HELLO asks the relay
** to merge `anon:<id>` into the account's namespace before WELCOME, and
** after WELCOME the engine has the glue move the replica's rows of
** `anon:<id>` there (io.claimed) before anything local is read.  A session
** that completes the claim clears it; until one does, every HELLO carries
** it (the relay's merge is idempotent).
**
** Ownership: the engine copies the configuration's strings.  A batch handed
** to knit_client_push() becomes the engine's.  Batches handed to io.apply
** stay the engine's (valid during the call).  Output taken with
** knit_client_take_output() becomes the caller's (knit_buf_free).
*/
#ifndef KNIT_PROTO_CLIENT_H
#define KNIT_PROTO_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "knit.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_client_s knit_client_t;

/* Engine states (see the diagram in proto_client.c). */
typedef enum knit_client_state_e {
    KNIT_CLIENT_IDLE = 0,       /* made, not started */
    KNIT_CLIENT_WAITING = 1,    /* no connection; the next attempt is due at a set time */
    KNIT_CLIENT_CONNECTING = 2, /* the glue is opening a connection */
    KNIT_CLIENT_HELLO_SENT = 3, /* connected, waiting for WELCOME */
    KNIT_CLIENT_READY = 4,      /* session established: pulling and pushing */
    KNIT_CLIENT_CLOSING = 5,    /* the engine asked the glue to close the connection */
    KNIT_CLIENT_STOPPED = 6     /* stopped for good */
} knit_client_state_t;

/* What io.event reports. */
typedef enum knit_client_event_type_e {
    KNIT_CLIENT_EV_STATE = 1, /* the state changed (state; delay_ms when WAITING) */
    KNIT_CLIENT_EV_ERROR = 2, /* something failed (code, message, fatal, push) */
    KNIT_CLIENT_EV_SYNCED = 3 /* every local change is acknowledged and every
                                 subscription caught up */
} knit_client_event_type_t;

typedef struct knit_client_event_s {
    knit_client_event_type_t type; /* see above */
    knit_client_state_t state;     /* the state now */
    int code;                      /* EV_ERROR: a negative KNIT_E* code */
    const char *message;           /* EV_ERROR: what failed, for humans; valid during the call */
    int fatal;                     /* EV_ERROR: retrying will not help (credential refused,
                                      no common protocol version, changes refused for good) */
    int push;                      /* EV_ERROR: the relay refused pushed changes; they stay
                                      pending and pushing stops until the next session */
    const char *claim;             /* EV_ERROR: the namespace ("anon:<id>") that the HELLO
                                      the relay refused was claiming, else NULL; valid
                                      during the call */
    uint64_t delay_ms;             /* EV_STATE to WAITING: the next attempt is this far off */
} knit_client_event_t;

/* The engine's requests to the glue.  Each returns 0 or a negative KNIT_E*
** code; a failure closes the connection (it is retried later), except
** where said otherwise. */
typedef struct knit_client_io_s {
    /* The last relay sequence of ns applied to the replica (0: none). */
    int (*cursor)(void *data, const char *ns, uint64_t *seq /* OUT */);
    /* The session is established as principal (e.g. "user:alice").  The
    ** glue makes it the replica's write namespace, which also names the
    ** replica's home namespace the first time (knit_set_namespace).  Called
    ** before any cursor is read or any change is asked for. */
    int (*ready)(void *data, const knit_welcome_t *w);
    /* The relay merged the claimed namespace `from` ("anon:<id>") into the
    ** session's principal `to` before WELCOME.  The glue moves the
    ** replica's rows of `from` into `to` (knit_move_namespace), so their
    ** unpushed changes are pushed to the account, and records that the
    ** claim is done.  Called after io.ready and before any cursor or local
    ** change is read (may be NULL: nothing to move).  A failure closes the
    ** connection and the next session claims again, which is harmless. */
    int (*claimed)(void *data, const char *from, const char *to);
    /* Apply b (a DELTAS of ns from `from` to `to`) and set ns's cursor to
    ** `to`, in one transaction (knit_apply_at). */
    int (*apply)(void *data, const char *ns, uint64_t from, uint64_t to, const knit_batch_t *b);
    /* Every local change with version <= version is acknowledged by the
    ** relay: record it durably (knit_ack).  A failure is retried later and
    ** does not close the connection; KNIT_EBUSY (the replica is in another
    ** writer's transaction: the glue should not wait for it) is retried
    ** within milliseconds, quietly. */
    int (*acked)(void *data, uint64_t version);
    /* Set ns's cursor from `from` to `to` (a move past own pushes, design
    ** note 12) without applying anything and without waiting for another
    ** writer: KNIT_EBUSY when the replica is busy, tried again within
    ** milliseconds.  May be NULL: io.apply with an empty batch is used. */
    int (*save_cursor)(void *data, const char *ns, uint64_t from, uint64_t to);
    /* The detailed message of the request that just failed (e.g. SQLite's
    ** "NOT NULL constraint failed: kv.v" from knit_errmsg), or NULL / ""
    ** when there is none; valid until the next callback (may be NULL).  The
    ** engine copies it into the error event it raises. */
    const char *(*errmsg)(void *data);
    /* The replica's tracked schema, sent in each HELLO so that the relay
    ** can tell its operator which schema versions its devices run
    ** (PROTOCOL.md, HELLO key 8).  *out is the glue's, valid until the next
    ** call or until the engine is freed; NULL sends none.  Called once per
    ** connection, so a migration shows from the next session on (may be
    ** NULL: no schema is sent).  A failure, or a schema too large for a
    ** HELLO, is logged and the HELLO goes without it: it is a report, never
    ** a reason not to sync. */
    int (*schema)(void *data, const knit_schema_t **out /* OUT */);
    /* Something the application may want to know (may be NULL). */
    void (*event)(void *data, const knit_client_event_t *ev);
    /* One log line without a newline (may be NULL).  Levels are those of
    ** the relay's logs (proto_server.h): 0 error, 1 warn, 2 info, 3 debug. */
    void (*log)(void *data, int level, const char *line);
    /* The relay refused changes of the push of ns whose batch is b for good
    ** (REJECT reasons naming changes, with codes that are not "retry",
    ** PROTOCOL.md 6.3.4): roll them back to the relay's state (may be NULL:
    ** the relay holds none of their cells) and record them, in one
    ** transaction (knit_reject).  On 0 the engine drops them from the push
    ** and pushes the rest at once; on failure they stay pending and pushing
    ** stops until the next session, as for any permanent refusal.  May be
    ** NULL (refusals are not rolled back: pushing stops). */
    int (*rejected)(void *data, const char *ns, const knit_batch_t *b, const knit_reason_t *r,
                    size_t n, const knit_batch_t *state);
    /* The relay acknowledged the push of ns whose batch is b (before the
    ** watermark moves: io.acked follows once every earlier push is
    ** acknowledged too).  For measurements only (may be NULL). */
    void (*ack_seen)(void *data, const char *ns, const knit_batch_t *b);
    /* The consistency check (proto_client.c design note 10); both may be
    ** NULL (no check).  check_digest: the replica's state digest of ns
    ** (knit_digest) and its nbuckets bucket digests (transport/wire/
    ** buckets.h).  check_repair: restore the rows of buckets fetch[0..n)
    ** of ns that differ from state, the relay's cells of them
    ** (transport/client/checker.h); *rows counts the rows restored, *cells
    ** the replica's cells to push again.  KNIT_EBUSY: the replica changed
    ** meanwhile, check again.  A failure of either is logged and never
    ** closes the connection. */
    int (*check_digest)(void *data, const char *ns, uint32_t nbuckets,
                        knit_digest_t *total /* OUT */, knit_digest_t *buckets /* OUT */);
    int (*check_repair)(void *data, const char *ns, uint32_t nbuckets, const uint32_t *fetch,
                        size_t n, const knit_batch_t *state, size_t *rows /* OUT */,
                        size_t *cells /* OUT */);
    void *data; /* passed to every callback */
} knit_client_io_t;

/* Configuration.  Zero fields take the defaults in brackets. */
typedef struct knit_client_config_s {
    knit_site_t site;         /* the replica's site id */
    knit_cred_t cred;         /* credential sent in HELLO (copied) */
    knit_cred_t claim;        /* an ANON credential whose namespace HELLO claims when
                                 cred is a JWT, until a session completes the claim
                                 (kind 0: none) (copied) */
    const char *agent;        /* software name for the relay's logs, or NULL (copied) */
    uint64_t acked;           /* the replica's acknowledged watermark at start (knit_acked) */
    size_t max_inflight;      /* pushes awaiting ACK at once [4] */
    size_t max_push;          /* changes per push, at most the relay's limit [65536] */
    size_t max_frame;         /* largest frame accepted from the relay [16 MiB] */
    uint64_t backoff_base_ms; /* first reconnect delay bound [200] */
    uint64_t backoff_max_ms;  /* reconnect delay cap [15000] */
    uint64_t handshake_ms;    /* connect + HELLO must finish within [10000] */
    uint64_t retry_ms;        /* first delay before re-pushing a refused push [500] */
    uint64_t ack_flush_ms;    /* how often watermark moves without an ACK are saved [1000] */
    uint64_t seed;            /* seeds the jitter of reconnect delays */
    int log_level;            /* this level and more severe are logged (0 error .. 3 debug);
                                 0 means error only */
    uint64_t check_ms;        /* consistency check: one granted namespace is compared
                                 with the relay this often, when the session is synced
                                 [300000]; UINT64_MAX: never */
} knit_client_config_t;

/* Counters, for logs, tests and benchmarks. */
typedef struct knit_client_stats_s {
    uint64_t sessions;       /* WELCOMEs received */
    uint64_t claims;         /* claims completed (io.claimed succeeded) */
    uint64_t pushes;         /* PUSH messages sent (re-sends included) */
    uint64_t pushed_changes; /* changes in them */
    uint64_t acks;           /* ACKs received */
    uint64_t rejects;        /* REJECTs received */
    uint64_t rolled_back;    /* refused changes rolled back (io.rejected) */
    uint64_t deltas;         /* DELTAS applied */
    uint64_t delta_changes;  /* changes in them */
    uint64_t gaps;           /* DELTAS refused for a gap (re-subscribed) */
    uint64_t acked_changes;  /* changes in pushes the relay acknowledged */
    uint64_t echoes;         /* changes in DELTAS recognised as our own pushes' echo
                                and not applied (not in delta_changes) */
    uint64_t acked;          /* the acknowledged watermark now */
    int synced;              /* SYNCED holds now */
    uint64_t checks;         /* consistency checks compared (design note 10) */
    uint64_t check_found;    /* of them, digests that differed from the relay's */
    uint64_t check_repaired; /* differences repaired (every differing bucket restored) */
    uint64_t check_rows;     /* rows restored by repairs */
    uint64_t check_cells;    /* this replica's cells they pushed again */
} knit_client_stats_t;

/* Makes an engine in state IDLE. */
KNIT_EXTERN int knit_client_new(const knit_client_config_t *cfg, const knit_client_io_t *io,
                                knit_client_t **out /* OUT */);
/* Frees it; NULL is a no-op. */
KNIT_EXTERN void knit_client_free(knit_client_t *c);

/* IDLE -> WAITING with the first attempt due now. */
KNIT_EXTERN int knit_client_start(knit_client_t *c, uint64_t now);
/* Replaces the credential used from the next HELLO on (copied). */
KNIT_EXTERN int knit_client_set_cred(knit_client_t *c, const knit_cred_t *cred);
/* Replaces the claim sent from the next HELLO on (copied); NULL or kind 0
** claims nothing.  Only an ANON credential can be claimed (else
** KNIT_EINVAL). */
KNIT_EXTERN int knit_client_set_claim(knit_client_t *c, const knit_cred_t *claim);
/* The namespace ("anon:<id>") the next HELLO claims, or "" when none. */
KNIT_EXTERN const char *knit_client_claim(const knit_client_t *c);
/* Asks the engine to finish: push what is pending and wait for its ACKs (at
** most grace_ms), then close and stop for good (STOPPED after the glue
** reports the connection lost, or at once when there is none). */
KNIT_EXTERN void knit_client_stop(knit_client_t *c, uint64_t now, uint64_t grace_ms);

KNIT_EXTERN knit_client_state_t knit_client_state(const knit_client_t *c);
KNIT_EXTERN void knit_client_stats(const knit_client_t *c, knit_client_stats_t *st /* OUT */);
/* The principal of the current session ("" when not READY). */
KNIT_EXTERN const char *knit_client_principal(const knit_client_t *c);

/* WAITING and the attempt is due: returns 1 and moves to CONNECTING (the
** glue now opens a connection).  Else 0. */
KNIT_EXTERN int knit_client_want_connect(knit_client_t *c, uint64_t now);
/* CONNECTING -> HELLO_SENT: the connection is up, HELLO is queued. */
KNIT_EXTERN int knit_client_connected(knit_client_t *c, uint64_t now);
/* Bytes from the relay.  Returns 0, or KNIT_ECLOSED when the engine now
** wants the connection closed (the glue may stop reading). */
KNIT_EXTERN int knit_client_input(knit_client_t *c, const uint8_t *p, size_t n, uint64_t now);
/* The connection is gone (or the attempt failed): code is the reason as a
** KNIT_E* code (0 when the engine asked for the close), message a detail
** or NULL.  Moves to WAITING with a backoff delay, or to STOPPED. */
KNIT_EXTERN void knit_client_lost(knit_client_t *c, uint64_t now, int code, const char *message);
/* 1 when the engine wants the connection closed (state CLOSING). */
KNIT_EXTERN int knit_client_want_close(const knit_client_t *c);
/* Moves the queued output into *out (empty when there is none); the caller
** owns it.  *out must be empty on entry. */
KNIT_EXTERN void knit_client_take_output(knit_client_t *c, knit_buf_t *out /* OUT */);
/* Timeouts, pings, push retries, periodic watermark saves.  Returns the
** monotonic time at which it wants to be called again (UINT64_MAX: never). */
KNIT_EXTERN uint64_t knit_client_tick(knit_client_t *c, uint64_t now);

/* The replica may have local changes that are not yet pushed. */
KNIT_EXTERN void knit_client_local_changed(knit_client_t *c);
/* 1 when the engine wants local changes now: the glue reads the replica's
** local changes with version > *after, at most *max of them (enough for
** the free part of the push window; knit_changes_since with local_only),
** and hands them to
** knit_client_push(), or calls knit_client_push_none() when there are
** none.  0 when not (not READY, the push window is full, nothing changed). */
KNIT_EXTERN int knit_client_push_room(const knit_client_t *c, uint64_t *after /* OUT */,
                                      size_t *max /* OUT */);
/* Local changes read after knit_client_push_room(): b holds every local
** change with version in (after, covers] (so covers is at least b's last
** unit version; it may be higher when the read also saw that no other
** local change exists up to a later version).  The engine takes b, splits
** it into pushes by namespace and size, and sends them as the window
** allows.  Changes of namespaces the session was not granted are not
** pushed; the watermark then stops before them. */
KNIT_EXTERN int knit_client_push(knit_client_t *c, knit_batch_t *b, uint64_t covers, uint64_t now);
/* The read found nothing: no local change with version in (after,
** version].  Clears the wish to push. */
KNIT_EXTERN void knit_client_push_none(knit_client_t *c, uint64_t version, uint64_t now);

#ifdef __cplusplus
}
#endif
#endif
