/*
** knit_sync.h: the sync client, for applications that run a libuv loop.
**
** knit_sync_start() attaches a replica (a knit_t the application opened) to
** a relay and keeps them in sync on the application's own uv_loop_t:
**
**   - connects, authenticates (anonymous or JWT) and subscribes, resuming
**     from the cursors saved in the replica;
**   - pushes every local change the relay has not acknowledged, and marks
**     changes acknowledged in the replica only when the relay's ACK says
**     they are durable;
**   - applies the relay's DELTAS, each together with its new cursor in one
**     transaction, so a crash never loses or repeats a change;
**   - notices writes other connections and processes make to the replica
**     within milliseconds (a file watch on the replica's directory, checked
**     with PRAGMA data_version) and pushes them;
**   - answers and sends PINGs, and reconnects after any failure with
**     exponential backoff and full jitter, capped;
**   - with options.tls, speaks TLS 1.2 (BearSSL) and checks the relay's
**     certificate: a certificate that is untrusted, expired or for another
**     name is a fatal KNIT_ETLS error whose message says which, and no
**     byte of the session is sent;
**   - with options.websocket, carries the session in a WebSocket (RFC 6455,
**     over TCP, or over TLS with options.tls), one binary message per
**     protocol message: an upgrade the relay refuses (a 404, an answer that
**     is not HTTP, a wrong Sec-WebSocket-Accept) is a KNIT_EPROTO error
**     whose message says what came back;
**   - with options.longpoll, carries the session in HTTP long-polling
**     requests (docs/PROTOCOL.md 1.3, libcurl) at options.longpoll_url;
**   - falls back to long-polling when the stream cannot be set up or is cut
**     again and again, keeps syncing, and tries the stream again later:
**     options.fallback_after stream attempts in a row (3) that end before
**     their session reported SYNCED, or at once a stream that cannot be set
**     up at all (a WebSocket upgrade refused, when longpoll_url is given;
**     with the derived URL that stays a fatal error), switch to
**     options.longpoll_url (for ws:// and wss:// by default the same host
**     and port at /v1/lp; knit:// and knits:// need one given); after
**     options.stream_retry_ms (5 minutes) the stream is tried once more,
**     and if that attempt fails the client goes straight back.  A refused
**     certificate or a credential refused is never a reason to fall back,
**     and a TLS stream only falls back to https://.  Every event and
**     knit_sync_status() name the transport in use; KNIT_SYNC_EV_TRANSPORT
**     reports each switch.
**   - with options.relays, fails over between several relays of one
**     deployment (they share one store, e.g. sync-relay --store
**     postgresql://...): host:port is the first address, relays[] the
**     next ones, all with the same transport.  A stream attempt that ends
**     without a fatal verdict (refused, cut, timed out, a handshake
**     failure) moves the next attempt to the next address, round-robin,
**     after the usual backoff; a fatal error (credential or account
**     refused, protocol version) and a refused certificate (KNIT_ETLS)
**     stay where they are, since every relay would say the same.  Cursors
**     and the acknowledged version live in the replica, so the next relay
**     resumes from them, and unacknowledged pushes are pushed again.
**     Every event and knit_sync_status() name the relay in use
**     (`relay`); each failover is logged (WARN) with its reason.
**
** One device, many processes.  Every client on one replica competes for
** leadership: the leader holds an exclusive flock(2) on the sidecar file
** REPLICA.knit-lock (never a lock on the database's own files) and is the
** only one that connects to the relay; it pushes every process's writes.
** The others are followers: they connect to nothing, notice every commit
** (their knit_on_change callbacks fire for writes by any process and for
** the remote changes the leader applies), read the leader's state from
** the replica (knit_sync_status, knit_sync_report), and try the lock every
** 20 ms, so one of them leads within about that long after the leader
** stops or dies (SIGKILL included: the kernel releases the lock).
** KNIT_SYNC_EV_ROLE says which role a client has; options.exclusive makes
** knit_sync_start fail with KNIT_EBUSY instead of following.
** The lock file is opened close-on-exec, but a child made by fork()
** without exec shares it (and would keep leadership while it lives):
** start the client after forking, in the process that will sync.
**
** The first session decides the replica's home namespace: rows written
** before the replica ever synced belong to the credential's namespace
** ("anon:<id>" or "user:<sub>"), so nothing written offline is lost and no
** extra step is needed.  A replica file serves one account: a session as
** another account ("user:<other>") than the one the file already belongs to
** fails with a fatal KNIT_EACCOUNT error whose message names that account
** (use one replica file per account).
**
** Signing in keeps what was written anonymously.  A JWT session of a
** replica that holds an anonymous credential (it ran with
** KNIT_SYNC_ANONYMOUS) claims it: HELLO asks the relay to merge "anon:<id>"
** into "user:<sub>" (one atomic, idempotent CRDT union), and after WELCOME,
** before any local change is read, the replica's rows of "anon:<id>" move
** to "user:<sub>" (knit_move_namespace), so changes never pushed
** anonymously, offline ones included, are pushed to the account.  The
** replica records the claim (setting "sync.claimed" = the id) and does not
** claim again unless rows of "anon:<id>" appear again (another anonymous
** run).  A crash anywhere in between is safe: the next session claims
** again, which changes nothing twice.  A claim the relay refuses is a
** fatal KNIT_EAUTH error naming the claim (event field `claim`), and
** nothing moves.  options.no_claim turns claiming off.
**
** Threads and ownership
**   - Everything runs on the loop's thread.  While sync runs, the knit_t is
**     used by the loop; the application may use it only from callbacks of
**     the same loop (knit_t is single-threaded).  Other connections, in any
**     process, may write the replica file at any time.
**   - knit_sync_stop() ends it: pending pushes get a few seconds to be
**     acknowledged, then every handle is closed and the close callback
**     runs; the knit_sync_t is freed when that callback returns.  The
**     knit_t stays the application's, and must outlive the knit_sync_t.
**   - Strings in the options are copied.  Pointers in events are valid only
**     during the callback.
**   - Writes through any connection, knit_db() included, are noticed by
**     themselves; knit_sync_notify() only makes the check happen at once.
*/
#ifndef KNIT_SYNC_H
#define KNIT_SYNC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "knit.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_sync_s knit_sync_t;

/* Where the client is. */
typedef enum knit_sync_state_e {
    KNIT_SYNC_OFFLINE = 1,    /* no session; the next attempt is scheduled */
    KNIT_SYNC_CONNECTING = 2, /* connecting and authenticating */
    KNIT_SYNC_ONLINE = 3,     /* session established: changes flow both ways */
    KNIT_SYNC_STOPPED = 4     /* knit_sync_stop() finished with the relay */
} knit_sync_state_t;

typedef enum knit_sync_event_type_e {
    KNIT_SYNC_EV_STATE = 1,     /* the state changed */
    KNIT_SYNC_EV_ERROR = 2,     /* something failed; see code, message, fatal, push */
    KNIT_SYNC_EV_SYNCED = 3,    /* every local change is acknowledged by the relay and
                                   every remote change the relay had is applied */
    KNIT_SYNC_EV_TRANSPORT = 4, /* the next connection uses another transport
                                  (transport, fallback; message says why) */
    KNIT_SYNC_EV_ROLE = 5       /* leader or follower (leader, leader_pid): once at
                                   start, and again when a follower takes over */
} knit_sync_event_type_t;

typedef struct knit_sync_event_s {
    knit_sync_event_type_t type; /* see above */
    knit_sync_state_t state;     /* the state now */
    int code;                    /* ERROR: a negative KNIT_E* code */
    const char *message;         /* ERROR: what failed, for humans */
    int fatal;                   /* ERROR: retrying will not help (credential refused,
                                    protocol version, changes refused for good); the
                                    client keeps retrying at its longest delay */
    int push;                    /* ERROR: the relay refused local changes; they stay
                                    pending and are offered again next session */
    uint64_t retry_ms;           /* STATE OFFLINE: the next attempt is this far off */
    const char *principal;       /* STATE ONLINE: "anon:<id>" or "user:<sub>" */
    const char *claim;           /* STATE ONLINE: the anonymous namespace this session
                                    claimed; ERROR: the one the refused HELLO claimed
                                    (the relay's message says whether the claim or the
                                    token was refused); else NULL */
    int moved;                   /* STATE ONLINE with claim: rows moved into the account */
    const char *transport;       /* every event: the transport of the connection, or of
                                    the next attempt when there is none: "tcp", "tls",
                                    "ws", "wss", "longpoll" (http://) or "longpoll-tls"
                                    (https://); static, never NULL */
    int fallback;                /* every event: 1 when that is long-polling because the
                                    stream failed (not options.longpoll) */
    int leader;                  /* ROLE: 1 = this client leads, 0 = it follows */
    long leader_pid;             /* ROLE: the leading process (0: unknown) */
    const char *relay;           /* every event: "HOST:PORT" of the relay the connection
                                    (or the next attempt) uses ("[v6]:PORT"); valid
                                    during the callback; NULL for a follower */
} knit_sync_event_t;

/* Log levels. */
#define KNIT_SYNC_LOG_ERROR 0
#define KNIT_SYNC_LOG_WARN 1
#define KNIT_SYNC_LOG_INFO 2
#define KNIT_SYNC_LOG_DEBUG 3

typedef void (*knit_sync_event_fn)(knit_sync_t *s, const knit_sync_event_t *ev);
typedef void (*knit_sync_log_fn)(knit_sync_t *s, int level, const char *line);
typedef void (*knit_sync_close_fn)(knit_sync_t *s);
/* Returns a fresh JWT in *token (allocated with malloc; knit frees it with
** free), or a negative KNIT_E* code. */
typedef int (*knit_sync_token_fn)(knit_sync_t *s, char **token /* OUT */);

/* Credential kinds. */
#define KNIT_SYNC_ANONYMOUS                                                                        \
    1                   /* anon_id/anon_secret, or (both NULL) the replica's own                   \
                           anonymous credential, made on first use and kept in it */
#define KNIT_SYNC_JWT 2 /* token, or get_token before every connection */

/* Options.  Zero fields take the defaults in brackets. */
typedef struct knit_sync_options_s {
    const char *host;             /* relay host name or IP literal (required, except
                                     with longpoll) */
    int port;                     /* relay TCP port (required, except with longpoll) */
    int tls;                      /* 1: TLS 1.2 over TCP (a knits:// relay): the relay's
                                     certificate chain must lead to a trusted CA, be
                                     valid now and name server_name [0: plain TCP, for
                                     loopback and private links only] */
    const char *ca_file;          /* TLS: PEM file of the CAs trusted
                                     [/etc/ssl/certs/ca-certificates.crt] */
    const char *server_name;      /* TLS: the name the certificate must carry, also sent
                                     as SNI [host]; give one when host is an IP literal
                                     (BearSSL matches DNS names only) */
    int websocket;                /* 1: the session inside a WebSocket (ws://; wss:// with
                                     tls): an HTTP/1.1 upgrade at ws_path on the relay's
                                     --http-listen port, for networks that let only
                                     HTTP(S) through [0: frames right on TCP or TLS] */
    const char *ws_path;          /* WebSocket: the request path, '/' and visible ASCII
                                     ["/v1/ws"] */
    int cred_kind;                /* KNIT_SYNC_ANONYMOUS or KNIT_SYNC_JWT (required) */
    const char *anon_id;          /* ANONYMOUS: 1..64 of [A-Za-z0-9_-], or NULL (the
                                     replica's own); JWT: the anonymous credential to
                                     claim, or NULL (the replica's own, if it has one) */
    const char *anon_secret;      /* 16..256 bytes with anon_id, else NULL */
    const char *token;            /* JWT: the token (unless get_token is set) */
    knit_sync_token_fn get_token; /* JWT: called before every connection attempt */
    int no_claim;                 /* JWT: 1 = do not claim the anonymous namespace [0: claim
                                     it when the replica holds an anonymous credential
                                     ("sync.anon") not claimed yet, or rows of it] */
    const char *replica_path;     /* file to watch [knit_filename(k)] */
    int no_watch;                 /* 1: no file watch; notice writes by polling only */
    unsigned poll_ms;             /* safety poll interval, ms [250] */
    size_t max_inflight;          /* pushes awaiting ACK at once [4] */
    size_t max_push;              /* changes per push, at most the relay's limit [65536] */
    uint64_t backoff_base_ms;     /* first reconnect delay bound [200] */
    uint64_t backoff_max_ms;      /* reconnect delay cap [15000] */
    uint64_t stop_grace_ms;       /* knit_sync_stop waits this long for ACKs [3000] */
    const char *agent;            /* software name the relay logs ["knit/" version] */
    int log_level;                /* KNIT_SYNC_LOG_*: this and more severe go to on_log */
    knit_sync_event_fn on_event;  /* state changes, errors, SYNCED (may be NULL) */
    knit_sync_log_fn on_log;      /* log lines without newline (may be NULL) */
    void *data;                   /* the application's, see knit_sync_data() */
    int longpoll;                 /* 1: HTTP long-polling only, at longpoll_url (host,
                                     port, tls and websocket are then taken from it or
                                     ignored) [0: the stream of host:port] */
    const char *longpoll_url;     /* http://HOST:PORT[/PATH] or https://... (PATH
                                     ["/v1/lp"]): with longpoll the transport, else the
                                     fallback; a tls stream accepts only https://
                                     (KNIT_EINVAL) [ws/wss: the same scheme's http(s),
                                     host and port, /v1/lp; tcp/tls: no fallback] */
    int no_fallback;              /* 1: never fall back to long-polling */
    unsigned fallback_after;      /* stream attempts in a row ending before their
                                     session was SYNCED that switch to long-polling [3] */
    uint64_t stream_retry_ms;     /* on fallback, try the stream again after [300000] */
    uint64_t handshake_ms;        /* connect + HELLO -> WELCOME must finish within, and a
                                     long-poll request must connect within [10000] */
    int exclusive;                /* 1: fail with KNIT_EBUSY when another process leads
                                     this replica [0: follow it and take over] */
    const char *const *relays;    /* more relays to fail over to, after host:port: each
                                     "HOST:PORT" ("[v6]:PORT"), same tls, websocket and
                                     ws_path; copied (not with longpoll) [none] */
    size_t nrelays;               /* entries in relays (at most 64) [0] */
    uint64_t check_interval_ms;   /* consistency check: every this long, while synced, one
                                     granted namespace's digest is compared with the
                                     relay's, and rows that differ are repaired from the
                                     relay's state (docs/ARCHITECTURE.md, "Consistency
                                     checker") [300000] */
    int no_check;                 /* 1: never check [0: check, when the relay can] */
} knit_sync_options_t;

/* Counters and state, for status displays and tests. */
typedef struct knit_sync_status_s {
    knit_sync_state_t state;  /* where the client is */
    int synced;               /* SYNCED holds now */
    uint64_t acked;           /* local versions up to this are acknowledged */
    uint64_t sessions;        /* sessions established */
    uint64_t claims;          /* anonymous namespaces claimed by this client */
    uint64_t pushes;          /* PUSH messages sent */
    uint64_t pushed_changes;  /* changes in them */
    uint64_t acks;            /* ACKs received */
    uint64_t rejects;         /* REJECTs received */
    uint64_t deltas;          /* DELTAS applied */
    uint64_t delta_changes;   /* changes in them ("received"; echoes of our own pushes
                                 are recognised and not counted) */
    uint64_t acked_changes;   /* changes in pushes the relay acknowledged */
    uint64_t echoes;          /* changes of our own pushes the relay echoed back, not
                                 applied again */
    uint64_t applied;         /* changes from elsewhere that won and were written here
                                 (knit_apply_stats_t.applied) */
    uint64_t aside;           /* changes this replica could not apply and set aside
                                 (_knit_aside, knit_aside_count) during this run */
    uint64_t recovered;       /* set-aside changes that applied later in this run */
    const char *transport;    /* as in events: "tcp", "tls", "ws", "wss", "longpoll",
                                 "longpoll-tls" (static) */
    int fallback;             /* 1: long-polling because the stream failed */
    uint64_t fallbacks;       /* switches to long-polling in this run */
    uint64_t stream_retry_ms; /* on fallback: the stream is tried again in this long */
    int leader;               /* 1: this client leads; 0: a follower, whose state, synced,
                                 transport, fallback and pending are the leader's as
                                 published in the replica (OFFLINE, not synced, when
                                 no live leader reported within 5 s) */
    long leader_pid;          /* the leading process (0: unknown) */
    uint64_t pending;         /* local rows not acknowledged yet (knit_pending), as of
                                 the last heartbeat (1 s) */
    /* Health, over this leader's run (a follower: zero; the leader's figures
    ** are in its published report).  Latency runs from a change's HLC time
    ** (its commit's wall time) to its ACK, quantiles within 25% above. */
    uint64_t ack_samples;    /* acknowledged changes measured */
    uint64_t ack_p50_ms;     /* write-to-ACK latency, median */
    uint64_t ack_p99_ms;     /* and 99th percentile */
    uint64_t ack_mean_ms;    /* and mean */
    uint64_t errors;         /* error events (by kind: the report's "errors" line) */
    uint64_t attempts;       /* connection attempts */
    uint64_t reconnects;     /* attempts after the first */
    uint64_t last_synced_ms; /* wall ms SYNCED last held (0: never) */
    const char *relay;       /* "HOST:PORT" in use (see the event field); valid until
                                the next call on the loop; NULL for a follower */
    uint64_t failovers;      /* moves to the next relay address in this run */
    uint64_t checks;         /* consistency checks compared with the relay */
    uint64_t check_found;    /* inconsistencies found: checks whose digests differed */
    uint64_t check_repaired; /* inconsistencies repaired: every differing row restored */
    uint64_t check_rows;     /* rows the repairs restored */
} knit_sync_status_t;

/* The sync state the leader of a replica published in it (setting
** "sync.status", rewritten on every change and every second), as any
** process reads it: sync-agent status and followers show the same. */
typedef struct knit_sync_report_s {
    int found;               /* some leader has published (else all zero) */
    long pid;                /* the leader that published */
    int alive;               /* that process runs and did not report STOPPED */
    int fresh;               /* the report is at most 5 s old */
    uint64_t updated_ms;     /* when it was written, ms since the epoch */
    knit_sync_state_t state; /* its state then */
    int synced;              /* 1 only when alive, fresh and synced: everything pushed,
                                acknowledged and pulled */
    uint64_t pending;        /* local rows not acknowledged */
    char transport[32];      /* "tcp" ... "longpoll-tls", "-" before the first attempt */
    int fallback;            /* long-polling because the stream failed */
    char principal[256];     /* the session's principal, "-" when none */
    char last_error[256];    /* the last error, "-" when none */
    char text[4096];         /* the whole report, "key: value" lines */
} knit_sync_report_t;
KNIT_EXTERN int knit_sync_report(knit_t *k, knit_sync_report_t *out /* OUT */);

/* Starts syncing k with the relay on loop.  Returns 0 and *out, or
** KNIT_EINVAL (bad options), KNIT_ENOMEM, KNIT_EIO (the lock file cannot
** be opened), KNIT_EBUSY (options.exclusive and another process leads),
** or the replica's error while reading its state (e.g. the stored
** anonymous credential).  The first
** connection attempt happens on the loop's next iteration. */
KNIT_EXTERN int knit_sync_start(uv_loop_t *loop, knit_t *k, const knit_sync_options_t *opt,
                                knit_sync_t **out /* OUT */);

/* Stops: pushes what is pending and waits for its ACKs (stop_grace_ms at
** most), closes the connection and every handle, then calls cb (may be
** NULL) and frees s.  Safe from any callback; calling it again is a no-op. */
KNIT_EXTERN void knit_sync_stop(knit_sync_t *s, knit_sync_close_fn cb);

/* The application wrote to the replica: look for local changes now rather
** than when the file watch or the safety poll notices. */
KNIT_EXTERN void knit_sync_notify(knit_sync_t *s);

/* The JWT used from the next connection on (copied). */
KNIT_EXTERN int knit_sync_set_token(knit_sync_t *s, const char *token);

KNIT_EXTERN void knit_sync_status(knit_sync_t *s, knit_sync_status_t *st /* OUT */);
/* options.data. */
KNIT_EXTERN void *knit_sync_data(const knit_sync_t *s);
/* "OFFLINE", "CONNECTING", "ONLINE", "STOPPED". */
KNIT_EXTERN const char *knit_sync_state_name(int state);

/* ---------------------------------------------------------------------- */
/* Watching a replica without syncing it                                   */

/* Runs, on loop, what the sync client does to notice commits: a file watch
** on the replica's directory confirmed by knit_poll (PRAGMA data_version),
** retried at 1..16 ms, and a safety poll every poll_ms [250].  knit_poll
** stamps what plain SQL writers wrote and fires k's change callback
** (knit_on_change, knit_on_change_keys), so an application is told of
** every commit to the replica by any process, local writes and remote
** changes a sync client applied, within milliseconds.  k is used from the
** loop's thread only and must outlive the watch. */
typedef struct knit_watch_s knit_watch_t;
typedef void (*knit_watch_close_fn)(knit_watch_t *w);
KNIT_EXTERN int knit_watch_start(uv_loop_t *loop, knit_t *k, unsigned poll_ms,
                                 knit_watch_t **out /* OUT */);
/* Looks now (the application knows it wrote). */
KNIT_EXTERN void knit_watch_check(knit_watch_t *w);
/* Closes its handles; cb (may be NULL) runs when they are closed, then w is
** freed.  NULL and a second call are no-ops. */
KNIT_EXTERN void knit_watch_stop(knit_watch_t *w, knit_watch_close_fn cb);

/* The replica's own anonymous credential, made on first use (a random
** 22-character id and a 256-bit secret, both base64url) and kept in the
** replica (knit_setting "sync.anon"), so the replica keeps its anonymous
** namespace across runs.  *id and *secret are new strings (knit_free). */
KNIT_EXTERN int knit_sync_anon_credential(knit_t *k, char **id /* OUT */, char **secret /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
