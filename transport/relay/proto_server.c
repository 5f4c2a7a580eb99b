/*
** proto_server.c: the relay's protocol engine (API in proto_server.h,
** protocol in docs/PROTOCOL.md).
**
** Design notes
**   1. An ACK is sent only after the group holding its push has committed;
**      a push whose group failed to commit is answered with a retryable
**      REJECT, never an ACK.
**   2. Every PUSH of a connection is answered exactly once, in the order
**      the PUSHes arrived: refusals decided on arrival (namespace not
**      granted, too many changes, stamps in the future) wait in the same
**      queue as the pushes to commit and are answered with them.
**   3. Nothing is sent to a connection before its HELLO authenticated, and
**      every later PUSH and SUBSCRIBE is checked against the grant; a
**      session whose token expires is closed.
**   4. Per subscription, the DELTAS sent form a chain without gaps: each
**      `from` is the previous `to`.  A subscription is either catching up
**      (DELTAS read from the store, a page at a time, only while the
**      connection's outbound queue is short) or live (each committed unit
**      is sent as it commits).  Everything runs on one thread, so a commit
**      is either visible to a catch-up read or fanned out after it.
**   5. Slow consumers: a live subscription whose connection has more than
**      max_queue bytes waiting drops back to catch-up mode instead of
**      queueing more; when the queue drains below half, it catches up from
**      the store (each changed cell once) and becomes live again.  Relay
**      memory per connection is thus bounded by about max_queue plus one
**      page, whatever the consumer does.  A connection that lets even its
**      answers (ACK, PONG) pile up past twice max_queue is disconnected.
**   6. A malformed frame or message, a refused HELLO or any protocol
**      violation sends ERROR and closes that connection only.
**   7. Changes stamped further than max_drift_ms ahead of the wall clock
**      are refused on arrival: one REJECT reason per change, naming it.
**   8. Nothing is stored that a replica could not apply: every pushed
**      change passes knit_change_check() (runtime/validate.h) on arrival,
**      or the push is refused with a REJECT whose reasons name each such
**      change and why (KNIT_EINVAL, KNIT_ECORRUPT; permanent).  The store
**      checks again before it writes, so no other path can store one.
**   9. An ACK names the sequences its push took (first..last, consecutive,
**      since pushes apply one after another), so the pusher can move its
**      cursor past its own units without downloading them again
**      (PROTOCOL.md, ACK).
**  10. A stored cell that cannot be sent (damaged in the file, or stored by
**      an older relay and not applicable) never blocks a catch-up: the
**      store skips it and reports it, and the engine logs it as an error
**      naming namespace, table, key and column.
**  11. The store (store.h) and the authentication hook may both answer
**      later.  A group commit in flight is the only one: pushes that arrive
**      meanwhile wait for the next group, and nothing of a group is
**      answered or fanned out before its completion.  A HELLO waits in
**      AUTH for the hook (for its credential, then for its claim) and for
**      the claim's merge; bytes that arrive meanwhile are kept (bounded)
**      and reading pauses, and they are read, in order, once WELCOME is
**      sent.  A connection freed meanwhile is detached from its HELLO, which
**      is freed when the hook or the store completes it.
**  12. Commits made elsewhere (another relay on the same database) reach
**      live subscribers through knit_relay_engine_advanced(): it puts them
**      back into catch-up, which reads the new units from the store, so the
**      DELTAS chain stays without gaps (note 4).  The claim's merge is
**      announced the same way.
**  13. Each WELCOMEd device (principal, site) is recorded in the store
**      with the schema its HELLO reported (store.h device_seen), so an
**      operator can list which schema versions the devices run
**      (`sync-inspect relay STORE schemas`).  The schema is checked by the
**      codec (bounds, canonical order, fingerprint), a malformed one ends
**      the connection like any malformed HELLO, and an absent one (older
**      clients) is fine.  A failure to record is logged, not refused.
**  14. Two kinds of principal are refused whatever their credential, as
**      the store says (store.h sealed, erased): an account erased by the
**      identity provider (user.deleted) or the operator, until the provider
**      creates the user again; and an anonymous id that a sign-in claimed,
**      which is sealed to that account: its own credential no longer opens
**      a session, and another account's claim of it is refused (the store's
**      merge answers KNIT_EDENIED).  Sessions already open when that
**      happens are ended (knit_relay_engine_end_principal), and their pushes
**      not yet committed are dropped, so nothing of an erased account is
**      written back after its erase.  The glue ends them at once when it
**      erased the account itself (the webhook); an erase made elsewhere
**      (`sync-relay erase`, another relay on the same database) is found by
**      the tick, which looks up the tombstone of each signed-in session
**      every ERASED_CHECK_MS.
**  15. Identity and system rows: a HELLO whose JWT names user:<sub> is
**      resolved through the store's identity index (store.h identify) with
**      the token's email and profile claims, before the tombstone check:
**      the session's principal (WELCOME's, and the only namespace granted)
**      is the account's namespace, which keeps the name of the account's
**      first provider id, so a relinked id signs in to the existing account.
**      After WELCOME the relay writes, from its own site and with a stamp of
**      its HLC, the account's knit_profile row (the fields the index says
**      changed) and a knit_activity row for this sign-in, each only when a
**      device of the account tracks that table; they are queued as a push
**      of no connection, so they are merged, sequenced, committed and fanned
**      out exactly like a replica's push.  A provisional account the id left
**      (made by a sign-in without email) was merged into the email's
**      account by the index (its other sessions read the merged cells, note
**      12), and its own sessions are ended, so they sign in again there.
**  16. A REJECT of single changes carries the relay's state of their cells
**      (PROTOCOL.md REJECT key 3), read from the store (store.h cells) when
**      the REJECT is answered, after every commit before it: the refusal is
**      terminal and the client rolls those cells back to exactly that
**      state.  A store without the operation sends none.
**  17. Organization namespaces ("org:<id>") are granted per session, each
**      with a role, when WELCOME is sent: the token's active organization
**      (Clerk's "o" claim {id, rol}, or "org_id" / "org_role"), then the
**      memberships the store recorded from organizationMembership.*
**      webhooks (store.h memberships), which override the token's claim on
**      the same organization unless the token was issued after the event.
**      WELCOME's granted lists them after the principal.  A viewer's push
**      is refused change by change (KNIT_EDENIED, with the state, note 16),
**      so the replica rolls those writes back; admins and members write.
**      A push to an organization not granted at all is refused the same
**      way, without the state (a non-member may not read its cells).
**      A HELLO subscription to an organization no longer granted is left
**      out, not refused: the replica drops that namespace.  A membership
**      that changes ends the account's sessions (KNIT_ECLOSED, retryable),
**      so they reconnect with the new grants.
**  18. No echo for clients that need none.  A HELLO announcing
**      KNIT_HELLO_NO_ECHO (key 9) says the client moves its cursor over
**      first..last on ACK (PROTOCOL.md ACK).  The units of such a
**      connection's ACKed push are then not sent back to it: fan_out moves
**      its subscription's cursor over them instead, but only when the unit
**      directly follows what it was sent (cursor = seq - 1), so the next
**      DELTAS it gets continues where its ACK left it.  The ACK goes out
**      before the group's fan-out (on_group_done), so the client always
**      knows the range before a later unit arrives.  A push answered by
**      REJECT (single changes refused) names no range: it is echoed as
**      before, as it is to clients that did not announce the bit.
**
** Connection states:
**
**     AWAIT_HELLO --on_hello()--> AUTH --hello_welcome(): WELCOME--> READY
**         |                        |                                   |
**         +--error_close(): ERROR--+----------------------> CLOSING <--+
**                                                              |
**                            knit_relay_conn_free() (glue) --> gone
*/
#include "proto_server.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "check.h"
#include "codec.h"
#include "frame.h"
#include "sysrows.h"
#include "validate.h"

#define HELLO_MAX_FRAME KNIT_HELLO_MAX_FRAME /* frames accepted before WELCOME (PROTOCOL.md §1) */
#define DETAILED_REASONS 64                  /* REJECT reasons that get their own message */
#define REASON_TEXT 240                      /* bytes of each such message */
#define MAX_STASH (256u * 1024)              /* bytes kept while a HELLO authenticates (note 11) */
#define ERASED_CHECK_MS 2000                 /* tombstone checks of sessions (note 14) */

enum { ST_HELLO, ST_AUTH, ST_READY, ST_CLOSING };

typedef struct hello_s hello_t;

/* A namespace a session may use besides its own, and its role there. */
typedef struct grant_s {
    char ns[KNIT_PRINCIPAL_MAX]; /* "org:<id>" */
    int role;                    /* KNIT_ROLE_* (auth.h), at least viewer */
} grant_t;

#define MAX_GRANTS 64 /* organization namespaces per session */

typedef struct sub_s {
    char *ns;        /* namespace, owned */
    uint64_t cursor; /* `to` of the last DELTAS sent for it */
    int live;        /* 1: committed units are sent as they commit */
} sub_t;

struct knit_relay_conn_s {
    knit_relay_engine_t *e;             /* owner */
    void *user;                         /* glue's handle */
    knit_relay_conn_t *prev;            /* engine's list of connections */
    knit_relay_conn_t *next;            /* engine's list of connections */
    uint64_t id;                        /* sequential, for logs */
    char name[64];                      /* peer address, for logs */
    int state;                          /* ST_* */
    int lost;                           /* peer gone: never call back again */
    int paused;                         /* reading paused (too many pending pushes) */
    knit_frame_reader_t rd;             /* frame reassembly */
    uint64_t opened_mono;               /* when it connected (monotonic ms) */
    uint64_t last_rx_mono;              /* when a whole frame last arrived */
    int anon_session;                   /* counted in e->nanon */
    uint64_t auth_exp_ms;               /* token expiry (wall ms), 0 = none */
    char principal[KNIT_PRINCIPAL_MAX]; /* "anon:<id>" / "user:<sub>" once READY */
    knit_site_t site;                   /* the replica's site id */
    sub_t *subs;                        /* subscriptions */
    size_t nsubs;                       /* count */
    size_t queued;                      /* bytes handed to send() not yet written */
    size_t npending;                    /* pushes waiting for the group commit */
    hello_t *hello;                     /* the HELLO being authenticated (AUTH) */
    int auth_paused;                    /* reading paused while in AUTH */
    uint8_t *stash;                     /* bytes received while in AUTH, owned */
    size_t nstash;                      /* their count */
    uint64_t stash_wall;                /* when they arrived (wall ms) */
    uint64_t stash_mono;                /* and monotonic */
    int session;                        /* counted as a session (WELCOMEd) */
    grant_t *grants;                    /* organization namespaces granted (note 17) */
    size_t ngrants;                     /* count */
    int no_echo;                        /* HELLO announced KNIT_HELLO_NO_ECHO (note 18) */
};

/* A HELLO being authenticated and its claim merged (design note 11). */
struct hello_s {
    knit_auth_request_t req;            /* what the hook sees; req.internal_ = this */
    knit_relay_engine_t *e;             /* the engine */
    knit_relay_conn_t *c;               /* the connection; NULL once freed */
    knit_msg_t msg;                     /* the HELLO, owned */
    uint32_t version;                   /* negotiated protocol version */
    int step;                           /* H_CRED, H_CLAIM or H_MERGE */
    char principal[KNIT_PRINCIPAL_MAX]; /* the credential's principal */
    char anon[KNIT_PRINCIPAL_MAX];      /* the claim's principal */
    uint64_t exp_ms;                    /* the credential's expiry, 0 = none */
    knit_relay_merged_t merged;         /* the claim's merge result */
    int identified;                     /* the identity index resolved it (note 15) */
    knit_ident_result_t ident;          /* what it resolved to (owned fields) */
    char user_id[KNIT_PRINCIPAL_MAX];   /* the provider id that signed in */
};

enum { H_CRED, H_CLAIM, H_MERGE };

typedef struct pending_s {
    struct pending_s *next;  /* queue order */
    knit_relay_conn_t *conn; /* who pushed; NULL once that connection is freed */
    uint64_t id;             /* the PUSH's batch id */
    char *ns;                /* namespace, owned */
    knit_batch_t *batch;     /* the changes (NULL when refused on arrival) */
    knit_relay_push_t push;  /* its place in the group commit (res: what the
                                commit changed, fan-out owned) */
    int32_t code;            /* push-level refusal, 0 = none */
    char msg[200];           /* its message */
    knit_reason_t *reasons;  /* per-change refusals (clock skew), owned */
    size_t nreasons;         /* count */
    size_t ninvalid;         /* of them, changes no replica could apply */
    char *reason_text;       /* storage for their messages, owned */
    knit_batch_t *refused;   /* the push's changes when nreasons > 0, for REJECT's
                                state (note 16), owned */
    uint64_t arrived_us;     /* when it arrived (metrics clock), for latencies */
    int system;              /* the relay's own rows (note 15), no connection */
} pending_t;

struct knit_relay_engine_s {
    knit_relay_backend_t st;                                 /* the store (store.h) */
    int (*auth)(void *data, const knit_auth_request_t *req); /* the hook */
    void *auth_data;                                         /* its data */
    knit_relay_limits_t lim;                                 /* resolved limits */
    knit_relay_io_t io;                                      /* glue callbacks */
    uint8_t *key;                                            /* JWT key copy, or NULL */
    size_t keylen;                                           /* its length */
    const knit_jwks_t *(*jwks)(void *data, int refresh);     /* provider keys, or NULL */
    void *jwks_data;                                         /* passed to jwks */
    char *issuer;                                            /* required iss, or NULL */
    char **parties;                                          /* authorized parties */
    size_t nparties;                                         /* their count */
    int log_level;                                           /* highest level logged */
    knit_relay_metrics_t *m;                                 /* metrics, or NULL */
    knit_relay_conn_t *conns;                                /* open connections */
    size_t nconns;                                           /* count */
    size_t nanon;                  /* anonymous sessions open (lim.max_anon) */
    double anon_tokens;            /* registrations allowed now (lim.anon_per_min) */
    uint64_t anon_refill_ms;       /* wall clock of the bucket's last refill */
    pending_t *head;               /* pushes waiting for commit, oldest first */
    pending_t *tail;               /* newest */
    pending_t *group;              /* the group commit in flight (note 11), or NULL */
    int committing;                /* a group commit is in flight */
    size_t nhellos;                /* HELLOs waiting for the hook or the store */
    uint64_t group_wall;           /* when the group in flight was flushed */
    uint64_t clock;                /* the relay's HLC */
    uint64_t next_id;              /* next connection id */
    int shutting_down;             /* shutdown() was called */
    uint64_t erased_checked;       /* mono ms of the last tombstone check (note 14) */
    knit_site_t site;              /* the relay's own site id (note 15), once have_site */
    int have_site;                 /* site was read from the store */
    knit_codec_limits_t dec_hello; /* decoding before WELCOME */
    knit_codec_limits_t dec;       /* decoding after WELCOME */
    knit_codec_limits_t enc;       /* encoding */
};

/* ---------------------------------------------------------------------- */
/* Small helpers                                                            */

static void logf_(knit_relay_engine_t *e, int level, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    if (level > e->log_level || !e->io.log)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* Names and agent strings come from clients: no control characters
    ** reach the log, so a client cannot forge log lines. */
    for (char *q = line; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f)
            *q = '?';
    e->io.log(e->io.data, level, line);
}

#define CLOG(c, level, fmt, ...)                                                                   \
    logf_((c)->e, level, "conn %llu %s%s%s" fmt, (unsigned long long)(c)->id, (c)->name,           \
          (c)->principal[0] ? " " : "", (c)->principal, __VA_ARGS__)

static int default_hook(void *data, const knit_auth_request_t *req);

void knit_relay_limits_resolve(knit_relay_limits_t *l) /* see proto_server.h */
{
    if (!l->max_frame)
        l->max_frame = KNIT_DEFAULT_MAX_FRAME;
    if (!l->max_changes)
        l->max_changes = 65536;
    if (!l->max_drift_ms)
        l->max_drift_ms = 300000;
    if (!l->idle_ms)
        l->idle_ms = 60000;
    if (!l->handshake_ms)
        l->handshake_ms = 10000;
    if (!l->max_queue)
        l->max_queue = 8u * 1024 * 1024;
    if (!l->max_pending)
        l->max_pending = 32;
    if (!l->jwt_skew_ms)
        l->jwt_skew_ms = KNIT_JWT_SKEW_MS;
    if (!l->max_anon)
        l->max_anon = 512;
    if (!l->anon_per_min)
        l->anon_per_min = 600;
    if (!l->max_per_addr)
        l->max_per_addr = 256;
}

static int alive(const knit_relay_conn_t *c)
{
    return c && !c->lost && c->state != ST_CLOSING;
}

/* Hands bytes to the glue.  DELTAS are gated by the caller (note 5);
** answers are not, but a connection whose queue passes twice max_queue is
** not reading at all and is dropped. */
static int send_bytes(knit_relay_conn_t *c, uint8_t *p, size_t n)
{
    knit_relay_engine_t *e = c->e;
    if (c->lost) {
        knit__free(p);
        return KNIT_ECLOSED;
    }
    if (e->io.send(e->io.data, c->user, p, n) != 0) {
        CLOG(c, KNIT_LOG_WARN, ": %s", "send failed, closing");
        c->state = ST_CLOSING;
        c->lost = 1;
        e->io.close(e->io.data, c->user);
        return KNIT_ECLOSED;
    }
    c->queued += n;
    return 0;
}

static int send_msg(knit_relay_conn_t *c, const knit_msg_t *m)
{
    knit_buf_t b = {NULL, 0, 0};
    int rc = knit_msg_encode(m, &c->e->enc, &b);
    if (rc) {
        CLOG(c, KNIT_LOG_ERROR, ": cannot encode %s: %s", knit_msg_type_name(m->type),
             knit_strerror(rc));
        knit_buf_free(&b);
        return rc;
    }
    return send_bytes(c, b.p, b.len);
}

/* Sends ERROR and closes (design note 6). */
static void error_close(knit_relay_conn_t *c, int code, const char *msg)
{
    knit_msg_t m;
    if (c->state == ST_CLOSING || c->lost)
        return;
    CLOG(c, code == KNIT_ECLOSED ? KNIT_LOG_DEBUG : KNIT_LOG_INFO, ": closing with %s: %s",
         knit_err_name(code), msg);
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_ERROR;
    m.u.error.code = code;
    m.u.error.message = msg;
    if (code == KNIT_EVERSION) {
        m.u.error.min_version = KNIT_PROTO_VERSION_MIN;
        m.u.error.max_version = KNIT_PROTO_VERSION_MAX;
    }
    send_msg(c, &m);
    if (c->lost)
        return;
    c->state = ST_CLOSING;
    c->e->io.close(c->e->io.data, c->user);
}

int knit_relay_error_frame(int code, const char *message, uint8_t **out,
                           size_t *n) /* see proto_server.h */
{
    knit_msg_t m;
    knit_buf_t b = {NULL, 0, 0};
    int rc;
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_ERROR;
    m.u.error.code = code;
    m.u.error.message = message;
    rc = knit_msg_encode(&m, NULL, &b);
    *out = b.p;
    *n = b.len;
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Engine and connections                                                   */

/* A stored cell catch-up skipped (design note 10). */
static void on_damage(void *data, const knit_relay_damage_t *d)
{
    knit_relay_engine_t *e = data;
    logf_(e, KNIT_LOG_ERROR,
          "catch-up skipped a stored cell it cannot send: namespace %.100s, table %.64s, key "
          "(%.160s), column %.64s, sequence %llu: %.200s (%llu skipped so far; see "
          "docs/sync-relay.md, damaged stores)",
          d->ns, d->table, d->key, d->column, (unsigned long long)d->seq, d->message,
          (unsigned long long)e->st.damaged(e->st.data));
}

/* Copies the issuer and the authorized parties of cfg. */
static int copy_audience(knit_relay_engine_t *e, const knit_relay_config_t *cfg)
{
    if (cfg->issuer && !(e->issuer = knit__strdup(cfg->issuer)))
        return KNIT_ENOMEM;
    if (cfg->nparties && !(e->parties = knit__calloc(cfg->nparties, sizeof *e->parties)))
        return KNIT_ENOMEM;
    for (; e->nparties < cfg->nparties; e->nparties++)
        if (!(e->parties[e->nparties] = knit__strdup(cfg->parties[e->nparties])))
            return KNIT_ENOMEM;
    return 0;
}

int knit_relay_engine_new(const knit_relay_config_t *cfg, const knit_relay_io_t *io,
                          knit_relay_engine_t **out) /* see proto_server.h */
{
    knit_relay_engine_t *e;
    *out = NULL;
    if (!cfg || (!cfg->store && !cfg->backend) || !io || !io->send || !io->close || !io->pause ||
        !io->random)
        return KNIT_EINVAL;
    if (cfg->jwt_key && cfg->jwt_key_len < KNIT_JWT_MIN_KEY)
        return KNIT_EINVAL;
    e = knit__calloc(1, sizeof *e);
    if (!e)
        return KNIT_ENOMEM;
    if (cfg->backend)
        e->st = *cfg->backend;
    else
        knit_relay_store_backend(cfg->store, &e->st);
    e->auth = cfg->authenticate ? cfg->authenticate : default_hook;
    e->auth_data = cfg->auth_data;
    e->lim = cfg->limits;
    knit_relay_limits_resolve(&e->lim);
    e->io = *io;
    e->log_level = cfg->log_level;
    e->m = cfg->metrics;
    if (cfg->jwt_key) {
        e->key = knit__memdup(cfg->jwt_key, cfg->jwt_key_len);
        if (!e->key) {
            knit__free(e);
            return KNIT_ENOMEM;
        }
        e->keylen = cfg->jwt_key_len;
    }
    e->jwks = cfg->jwks;
    e->jwks_data = cfg->jwks_data;
    if (copy_audience(e, cfg) != 0) {
        knit_relay_engine_free(e);
        return KNIT_ENOMEM;
    }
    e->st.on_damage(e->st.data, on_damage, e);
    knit_codec_limits_default(&e->dec_hello);
    e->dec_hello.max_frame =
        HELLO_MAX_FRAME < e->lim.max_frame ? HELLO_MAX_FRAME : e->lim.max_frame;
    knit_codec_limits_default(&e->dec);
    e->dec.max_frame = e->lim.max_frame;
    /* A push over max_changes is decoded and then refused with a REJECT the
    ** client can act on (split it), so the decoder allows the codec's own
    ** maximum. */
    if (e->dec.max_changes < e->lim.max_changes)
        e->dec.max_changes = e->lim.max_changes;
    knit_codec_limits_default(&e->enc);
    if (e->enc.max_changes < e->lim.max_changes)
        e->enc.max_changes = e->lim.max_changes;
    *out = e;
    return 0;
}

void knit_relay_engine_free(knit_relay_engine_t *e) /* see proto_server.h */
{
    if (!e)
        return;
    while (e->head) {
        pending_t *p = e->head;
        e->head = p->next;
        knit_batch_free(p->batch);
        knit_batch_free(p->push.res.fanout);
        knit__free(p->ns);
        knit__free(p->reasons);
        knit__free(p->reason_text);
        knit_batch_free(p->refused);
        knit__free(p);
    }
    while (e->conns)
        knit_relay_conn_free(e->conns);
    e->st.on_damage(e->st.data, NULL, NULL);
    knit__free(e->key);
    knit__free(e->issuer);
    for (size_t i = 0; i < e->nparties; i++)
        knit__free(e->parties[i]);
    knit__free(e->parties);
    knit__free(e);
}

int knit_relay_conn_open(knit_relay_engine_t *e, void *user, uint64_t wall_ms, uint64_t mono_ms,
                         knit_relay_conn_t **out) /* see proto_server.h */
{
    knit_relay_conn_t *c = knit__calloc(1, sizeof *c);
    *out = NULL;
    if (!c)
        return KNIT_ENOMEM;
    c->e = e;
    c->user = user;
    c->id = ++e->next_id;
    c->state = ST_HELLO;
    c->opened_mono = c->last_rx_mono = mono_ms;
    knit_frame_reader_init(&c->rd, e->dec_hello.max_frame);
    c->next = e->conns;
    if (e->conns)
        e->conns->prev = c;
    e->conns = c;
    e->nconns++;
    (void)wall_ms;
    *out = c;
    return 0;
}

void knit_relay_conn_set_name(knit_relay_conn_t *c, const char *name) /* see proto_server.h */
{
    snprintf(c->name, sizeof c->name, "%s", name ? name : "");
}

void knit_relay_conn_lost(knit_relay_conn_t *c) /* see proto_server.h */
{
    if (!c->lost)
        CLOG(c, KNIT_LOG_DEBUG, ": %s", "peer gone");
    c->lost = 1;
    c->state = ST_CLOSING;
}

void knit_relay_conn_free(knit_relay_conn_t *c) /* see proto_server.h */
{
    knit_relay_engine_t *e;
    if (!c)
        return;
    e = c->e;
    for (pending_t *p = e->head; p; p = p->next)
        if (p->conn == c)
            p->conn = NULL;
    for (pending_t *p = e->group; p; p = p->next)
        if (p->conn == c)
            p->conn = NULL;
    if (c->hello)
        c->hello->c = NULL; /* design note 11: freed when completed */
    knit__free(c->stash);
    if (c->session)
        knit__metrics_session(e->m, -1);
    if (c->anon_session)
        e->nanon--;
    if (c->prev)
        c->prev->next = c->next;
    else
        e->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    e->nconns--;
    for (size_t i = 0; i < c->nsubs; i++)
        knit__free(c->subs[i].ns);
    knit__free(c->subs);
    knit__free(c->grants);
    knit_frame_reader_free(&c->rd);
    knit__free(c);
}

size_t knit_relay_engine_conns(const knit_relay_engine_t *e) /* see proto_server.h */
{
    return e->nconns;
}

int knit_relay_engine_pending(const knit_relay_engine_t *e) /* see proto_server.h */
{
    return e->head != NULL;
}

/* ---------------------------------------------------------------------- */
/* Catch-up and fan-out                                                     */

static sub_t *find_sub(knit_relay_conn_t *c, const char *ns)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (strcmp(c->subs[i].ns, ns) == 0)
            return &c->subs[i];
    return NULL;
}

/* Sends catch-up pages while the outbound queue is short (design note 5). */
static void pump(knit_relay_conn_t *c)
{
    knit_relay_engine_t *e = c->e;
    for (size_t i = 0; i < c->nsubs && alive(c) && c->state == ST_READY; i++) {
        sub_t *s = &c->subs[i];
        size_t page = e->lim.max_changes;
        while (!s->live && alive(c) && c->queued < e->lim.max_queue / 2) {
            knit_batch_t *b = NULL;
            uint64_t reached;
            int more, rc;
            knit_msg_t m;
            knit_buf_t buf = {NULL, 0, 0};

            rc = e->st.catch_up(e->st.data, s->ns, s->cursor, page, &b, &reached, &more);
            if (rc) {
                CLOG(c, KNIT_LOG_ERROR, ": catch-up of %s failed: %s", s->ns,
                     e->st.errmsg(e->st.data));
                error_close(c, rc == KNIT_ENOMEM ? KNIT_ENOMEM : KNIT_EDB,
                            "relay storage failed during catch-up");
                return;
            }
            memset(&m, 0, sizeof m);
            m.type = KNIT_MSG_DELTAS;
            m.u.deltas.ns = s->ns;
            m.u.deltas.from = s->cursor;
            m.u.deltas.to = reached;
            m.u.deltas.caught_up = !more;
            m.u.deltas.batch = b;
            rc = knit_msg_encode(&m, &e->enc, &buf);
            knit_batch_free(b);
            if (rc == KNIT_ETOOBIG && page > 1) {
                page /= 2; /* big values: fewer changes per frame */
                continue;
            }
            if (rc) {
                knit_buf_free(&buf);
                error_close(c, rc,
                            rc == KNIT_ETOOBIG ? "a unit does not fit in one frame"
                                               : "cannot encode catch-up");
                return;
            }
            knit__metrics_catchup(e->m, buf.len);
            if (send_bytes(c, buf.p, buf.len) != 0)
                return;
            s->cursor = reached;
            if (!more) {
                s->live = 1;
                CLOG(c, KNIT_LOG_DEBUG, ": %s caught up at %llu", s->ns,
                     (unsigned long long)reached);
            }
        }
    }
}

/* Starts (or restarts) catch-up of ns from cursor. */
static int add_sub(knit_relay_conn_t *c, const char *ns, uint64_t cursor)
{
    knit_relay_engine_t *e = c->e;
    uint64_t seq;
    sub_t *s;
    int rc = e->st.seq(e->st.data, ns, &seq);
    if (rc)
        return rc;
    /* A cursor beyond our sequence means this store is older than what the
    ** client saw (restored from a backup): send everything (PROTOCOL §6.2). */
    if (cursor > seq) {
        CLOG(c, KNIT_LOG_WARN, ": cursor %llu of %s is beyond the relay's %llu; resending all",
             (unsigned long long)cursor, ns, (unsigned long long)seq);
        cursor = 0;
    }
    s = find_sub(c, ns);
    if (!s) {
        sub_t *n = knit__realloc(c->subs, (c->nsubs + 1) * sizeof *n);
        if (!n)
            return KNIT_ENOMEM;
        c->subs = n;
        s = &c->subs[c->nsubs];
        if (!(s->ns = knit__strdup(ns)))
            return KNIT_ENOMEM;
        c->nsubs++;
    }
    s->cursor = cursor;
    s->live = 0;
    return 0;
}

/* Sends each unit of a committed fan-out batch to every live subscriber of
** ns, one DELTAS per unit (PROTOCOL §6.3.5), except back to the pusher
** `origin` when it said it needs no echo (note 18). */
static size_t fan_out(knit_relay_engine_t *e, const char *ns, const knit_batch_t *b,
                      knit_relay_conn_t *origin)
{
    size_t sent = 0, skipped = 0;
    for (size_t u = 0; u < b->ntxns; u++) {
        const knit_txn_t *t = &b->txns[u];
        knit_batch_t view = *b;
        knit_txn_t one = {t->version, 0, t->count};
        knit_buf_t common = {NULL, 0, 0};
        int have_common = 0;
        uint64_t seq = t->version;

        view.changes = b->changes + t->first;
        view.nchanges = t->count;
        view.txns = &one;
        view.ntxns = 1;
        for (knit_relay_conn_t *c = e->conns; c; c = c->next) {
            sub_t *s;
            knit_msg_t m;
            knit_buf_t own = {NULL, 0, 0};
            uint8_t *p;
            size_t n;
            int rc;

            if (!alive(c) || c->state != ST_READY || !(s = find_sub(c, ns)) || !s->live)
                continue;
            if (s->cursor >= seq)
                continue;
            if (c == origin && c->no_echo && s->cursor == seq - 1) {
                /* Its ACK, sent before this fan-out, names the unit. */
                s->cursor = seq;
                skipped++;
                continue;
            }
            memset(&m, 0, sizeof m);
            m.type = KNIT_MSG_DELTAS;
            m.u.deltas.ns = ns;
            m.u.deltas.from = s->cursor;
            m.u.deltas.to = seq;
            m.u.deltas.batch = &view;
            if (s->cursor == seq - 1 && !have_common) {
                rc = knit_msg_encode(&m, &e->enc, &common);
                if (rc) {
                    logf_(e, KNIT_LOG_ERROR, "cannot encode unit %llu of %s: %s",
                          (unsigned long long)seq, ns, knit_strerror(rc));
                    knit_buf_free(&common);
                    have_common = -1;
                } else {
                    have_common = 1;
                }
            }
            if (s->cursor == seq - 1 && have_common > 0) {
                n = common.len;
            } else if (s->cursor == seq - 1 || (rc = knit_msg_encode(&m, &e->enc, &own)) != 0) {
                /* The unit cannot travel live (too big for a frame): the
                ** subscription falls back to catch-up, which splits what it
                ** can and closes the connection with an ERROR if even one
                ** unit cannot fit.  Never a silent gap (design note 4). */
                knit_buf_free(&own);
                s->live = 0;
                pump(c);
                continue;
            } else {
                n = own.len;
            }
            /* Design note 5: a consumer that is behind stops getting live
            ** units and catches up from the store when it has drained. */
            if (c->queued > 0 && c->queued + n > e->lim.max_queue) {
                knit_buf_free(&own);
                s->live = 0;
                knit__metrics_limit(e->m, KNIT_METRIC_SLOW);
                CLOG(c, KNIT_LOG_INFO, ": slow consumer, %s drops to catch-up at %llu", ns,
                     (unsigned long long)s->cursor);
                continue;
            }
            if (own.p) {
                p = own.p;
            } else if (!(p = knit__memdup(common.p, n))) {
                error_close(c, KNIT_ENOMEM, "out of memory");
                continue;
            }
            if (send_bytes(c, p, n) == 0) {
                s->cursor = seq;
                sent++;
            }
        }
        knit_buf_free(&common);
    }
    knit__metrics_echoes_skipped(e->m, skipped);
    return sent;
}

/* ---------------------------------------------------------------------- */
/* HELLO                                                                    */

/* Takes one registration from the bucket (lim.anon_per_min a minute, as
** many at once); 0 when it is empty. */
static int anon_token(knit_relay_engine_t *e, uint64_t wall_ms)
{
    double cap = (double)e->lim.anon_per_min;
    if (wall_ms > e->anon_refill_ms) {
        e->anon_tokens += (double)(wall_ms - e->anon_refill_ms) * cap / 60000.0;
        if (e->anon_tokens > cap)
            e->anon_tokens = cap;
    }
    if (wall_ms > e->anon_refill_ms)
        e->anon_refill_ms = wall_ms;
    if (e->anon_tokens < 1.0)
        return 0;
    e->anon_tokens -= 1.0;
    return 1;
}

/* Checks an anonymous credential, registering an unknown id (first use).
** c may be NULL (the connection went away while the hook waited). */
static int auth_anon(knit_relay_engine_t *e, knit_relay_conn_t *c, const knit_cred_t *cred,
                     uint64_t wall_ms, const char **why)
{
    uint8_t salt[KNIT_ANON_SALT_LEN], hash[KNIT_ANON_HASH_LEN];
    int rc;

    if (!knit_anon_id_ok(cred->id) || !knit_anon_secret_ok(cred->secret)) {
        *why = "anonymous id or secret not acceptable (secrets need 16 to 256 bytes)";
        return KNIT_EAUTH;
    }
    rc = e->st.anon_get(e->st.data, cred->id, salt, hash);
    if (rc == 0 && !anon_token(e, wall_ms)) {
        knit__metrics_limit(e->m, KNIT_METRIC_ANON_RATE);
        *why = "too many new anonymous ids; try again later";
        return KNIT_EBUSY;
    }
    if (rc == 0) {
        if (e->io.random(e->io.data, salt, sizeof salt) != 0) {
            *why = "relay has no randomness";
            return KNIT_EIO;
        }
        knit_anon_hash(salt, cred->id, cred->secret, hash);
        rc = e->st.anon_put(e->st.data, cred->id, salt, hash, wall_ms);
        if (rc == 0) {
            if (c)
                CLOG(c, KNIT_LOG_INFO, ": registered anonymous id %s", cred->id);
            return 0;
        }
        if (rc != KNIT_EEXISTS) {
            *why = "relay storage failed";
            return rc;
        }
        rc = e->st.anon_get(e->st.data, cred->id, salt, hash);
    }
    if (rc < 0) {
        *why = "relay storage failed";
        return rc;
    }
    if (knit_anon_check(salt, hash, cred->id, cred->secret) != 0) {
        *why = "wrong secret for this anonymous id";
        return KNIT_EAUTH;
    }
    return 0;
}

/* The built-in check of cred: anonymous credentials against the store,
** JWTs with the HS256 key.  On success writes the principal and expiry. */
static int builtin_auth(knit_relay_engine_t *e, knit_relay_conn_t *c, const knit_cred_t *cred,
                        uint64_t wall_ms, char *principal, uint64_t *exp_ms, const char **why,
                        int *unknown_kid)
{
    int rc;
    *exp_ms = 0;
    *unknown_kid = 0;
    if (cred->kind == KNIT_CRED_ANON) {
        if ((rc = auth_anon(e, c, cred, wall_ms, why)) != 0)
            return rc;
        return knit_auth_anon_principal(cred->id, principal, KNIT_PRINCIPAL_MAX) == 0 ? 0
                                                                                      : KNIT_EAUTH;
    }
    if (cred->kind == KNIT_CRED_JWT) {
        knit_jwt_claims_t cl;
        knit_jwt_keys_t k;
        if (!e->key && !e->jwks) {
            *why = "this relay accepts no tokens (no --jwt-secret-file, --jwks-file or "
                   "--jwks-url)";
            return KNIT_EAUTH;
        }
        if (!cred->token) {
            *why = "no token";
            return KNIT_EAUTH;
        }
        memset(&k, 0, sizeof k);
        k.hs_key = e->key;
        k.hs_keylen = e->keylen;
        k.jwks = e->jwks ? e->jwks(e->jwks_data, 0) : NULL;
        k.issuer = e->issuer;
        k.parties = (const char *const *)e->parties;
        k.nparties = e->nparties;
        k.skew_ms = e->lim.jwt_skew_ms;
        rc = knit_jwt_verify_keys(cred->token, strlen(cred->token), &k, wall_ms, &cl, why);
        if (rc && cl.unknown_kid && e->jwks) {
            /* The provider may have rotated its keys: once more, fresh. */
            k.jwks = e->jwks(e->jwks_data, 1);
            rc = knit_jwt_verify_keys(cred->token, strlen(cred->token), &k, wall_ms, &cl, why);
        }
        if (rc) {
            *unknown_kid = cl.unknown_kid;
            return KNIT_EAUTH;
        }
        *exp_ms = cl.exp_ms;
        return knit_auth_user_principal(cl.sub, principal, KNIT_PRINCIPAL_MAX) == 0 ? 0
                                                                                    : KNIT_EAUTH;
    }
    *why = "no acceptable credential";
    return KNIT_EAUTH;
}

void knit_relay_auth_check(const knit_auth_request_t *req, knit_auth_result_t *res,
                           char principal[KNIT_PRINCIPAL_MAX],
                           int *unknown_kid) /* see proto_server.h */
{
    hello_t *h = req->internal_;
    knit_cred_t cred = {(uint32_t)req->kind, req->id, req->secret, req->token};
    principal[0] = '\0';
    memset(res, 0, sizeof *res);
    res->why = "authentication failed";
    res->code = builtin_auth(h->e, h->c, &cred, req->wall_ms, principal, &res->exp_ms, &res->why,
                             unknown_kid);
    res->principal = principal;
}

void knit_relay_auth_default(const knit_auth_request_t *req) /* see proto_server.h */
{
    char principal[KNIT_PRINCIPAL_MAX];
    knit_auth_result_t res;
    int unknown_kid;
    knit_relay_auth_check(req, &res, principal, &unknown_kid);
    knit_relay_auth_done(req, &res);
}

static int default_hook(void *data, const knit_auth_request_t *req)
{
    (void)data;
    knit_relay_auth_default(req);
    return 0;
}

/* Ends a HELLO's wait (design note 11): frees it, and on a connection
** that is now READY resumes reading and reads what arrived meanwhile. */
static void hello_free(hello_t *h)
{
    knit_relay_engine_t *e = h->e;
    knit_relay_conn_t *c = h->c;
    e->nhellos--;
    knit_msg_free(&h->msg);
    knit_relay_ident_result_clear(&h->ident);
    knit__free(h);
    if (!c)
        return;
    c->hello = NULL;
    if (c->auth_paused && !c->lost) {
        c->auth_paused = 0;
        if (!c->paused && alive(c))
            e->io.pause(e->io.data, c->user, 0);
    }
    if (c->stash) {
        uint8_t *p = c->stash;
        size_t n = c->nstash;
        c->stash = NULL;
        c->nstash = 0;
        if (alive(c) && c->state == ST_READY)
            knit_relay_conn_input(c, p, n, c->stash_wall, c->stash_mono);
        knit__free(p);
    }
}

static int hello_begin_auth(hello_t *h, const knit_cred_t *cred, int claim);

/* The claim is merged (or failed): finish the HELLO or close. */
static void hello_welcome(hello_t *h);

static void on_merged(void *arg, int rc)
{
    hello_t *h = arg;
    knit_relay_engine_t *e = h->e;
    if (rc == KNIT_EDENIED) {
        /* Sealed to another account (design note 14). */
        logf_(e, KNIT_LOG_WARN, "claim of %s by %s refused: %s", h->anon, h->principal,
              e->st.errmsg(e->st.data));
        knit__metrics_auth_fail(e->m, KNIT_METRIC_CLAIM);
        if (h->c)
            error_close(h->c, KNIT_EAUTH,
                        "claim refused: this anonymous id was already claimed by another "
                        "account (sealed); sign in without claiming it");
        hello_free(h);
        return;
    }
    if (rc) {
        logf_(e, KNIT_LOG_ERROR, "claim of %s by %s failed: %s", h->anon, h->principal,
              e->st.errmsg(e->st.data));
        if (h->c)
            error_close(h->c, rc == KNIT_ENOMEM ? rc : KNIT_EDB, "claim failed: relay storage");
        hello_free(h);
        return;
    }
    logf_(e, KNIT_LOG_INFO, "claim: merged %zu cells of %s into %s", h->merged.cells, h->anon,
          h->principal);
    /* Other sessions of the account read the merged cells (note 12). */
    knit_relay_engine_advanced(e, h->principal, h->merged.seq);
    /* The anonymous id is sealed now: its sessions end (note 14). */
    knit_relay_engine_end_principal(e, h->anon, KNIT_EAUTH,
                                    "this anonymous id was claimed by an account and is sealed: "
                                    "sign in");
    if (!h->c || !alive(h->c)) {
        hello_free(h);
        return;
    }
    hello_welcome(h);
}

/* A principal the store refuses whatever the credential (design note 14):
** an erased account, a sealed anonymous id.  0, or the code with *res
** pointing at a refusal whose reason says which. */
static int principal_refused(knit_relay_engine_t *e, const char *principal,
                             const knit_auth_result_t **res)
{
    static knit_auth_result_t refusal;
    int is = 0, rc;
    if (strncmp(principal, "user:", 5) == 0 && e->st.erased) {
        if ((rc = e->st.erased(e->st.data, principal, &is)) != 0) {
            refusal.code = rc;
            refusal.why = "relay storage failed";
            *res = &refusal;
            return rc;
        }
        if (is) {
            refusal.code = KNIT_EERASED;
            refusal.why = "this account was erased; it signs in again once the identity "
                          "provider creates the user again";
            *res = &refusal;
            return KNIT_EERASED;
        }
    }
    if (strncmp(principal, "anon:", 5) == 0 && e->st.sealed) {
        if ((rc = e->st.sealed(e->st.data, principal, &is)) != 0) {
            refusal.code = rc;
            refusal.why = "relay storage failed";
            *res = &refusal;
            return rc;
        }
        if (is) {
            refusal.code = KNIT_EAUTH;
            refusal.why = "this anonymous id was claimed by an account and is sealed: sign in "
                          "(its data is in the account now)";
            *res = &refusal;
            return KNIT_EAUTH;
        }
    }
    return 0;
}

/* Resolves a signed-in provider id through the identity index (design
** note 15).  0, or the code with *res pointing at a refusal. */
static int identify_hello(hello_t *h, const char *principal, const knit_auth_result_t **res)
{
    static knit_auth_result_t refusal;
    knit_relay_engine_t *e = h->e;
    const knit_hello_t *m = &h->msg.u.hello;
    knit_token_profile_t tp;
    knit_ident_t in;
    int rc;

    if (!e->st.identify || strncmp(principal, "user:", 5) != 0 || m->cred.kind != KNIT_CRED_JWT)
        return 0;
    memset(&in, 0, sizeof in);
    /* The token was verified: its payload's claims may be read now. */
    if (knit__token_profile(m->cred.token, &tp) != 0)
        memset(&tp, 0, sizeof tp);
    in.id = principal + 5;
    in.email = tp.email;
    in.external_id = tp.external_id;
    for (int f = 0; f < KNIT_PROFILE_NFIELDS; f++)
        in.field[f] = tp.field[f];
    for (size_t i = 0; m->schema && i < m->schema->ntables; i++) {
        in.tracks[0] |= strcmp(m->schema->tables[i].name, KNIT_PROFILE_TABLE) == 0;
        in.tracks[1] |= strcmp(m->schema->tables[i].name, KNIT_ACTIVITY_TABLE) == 0;
    }
    rc = e->st.identify(e->st.data, &in, h->req.wall_ms, &h->ident);
    snprintf(h->user_id, sizeof h->user_id, "%s", principal + 5);
    knit__token_profile_free(&tp);
    if (rc) {
        logf_(e, KNIT_LOG_ERROR, "identity index failed for %s: %s", principal,
              e->st.errmsg(e->st.data));
        refusal.code = rc;
        refusal.why = "relay storage failed (identity index)";
        *res = &refusal;
        return rc;
    }
    if (h->ident.erased) {
        refusal.code = KNIT_EERASED;
        refusal.why = "this account was erased; it signs in again once the identity "
                      "provider creates the user again";
        *res = &refusal;
        return KNIT_EERASED;
    }
    h->identified = 1;
    if (h->ident.action == KNIT_IDENT_RELINKED || h->ident.email_conflict)
        logf_(e, KNIT_LOG_INFO, "identity: %s %s %s%s", principal,
              h->ident.action == KNIT_IDENT_RELINKED ? "relinked to" : "stays", h->ident.account,
              h->ident.email_conflict ? " (its email belongs to another account: not moved)" : "");
    return 0;
}

void knit_relay_auth_done(const knit_auth_request_t *req,
                          const knit_auth_result_t *res) /* see proto_server.h */
{
    hello_t *h = req->internal_;
    knit_relay_engine_t *e = h->e;
    knit_relay_conn_t *c = h->c;
    const knit_hello_t *m = &h->msg.u.hello;
    char msg[384];
    int code = res->code;

    if (!c || !alive(c)) {
        hello_free(h);
        return;
    }
    /* A hook's principal must be a principal: "anon:<id>" for a claim. */
    if (code == 0 &&
        (!res->principal || !res->principal[0] || strlen(res->principal) >= KNIT_PRINCIPAL_MAX ||
         (h->step == H_CLAIM && strncmp(res->principal, "anon:", 5) != 0))) {
        code = KNIT_EAUTH;
        res = NULL;
    }
    if (code == 0 && h->step == H_CRED)
        code = identify_hello(h, res->principal, &res);
    if (code == 0 && h->step == H_CRED)
        code = principal_refused(e, h->identified ? h->ident.account : res->principal, &res);
    if (code) {
        knit__metrics_auth_fail(e->m, h->step == H_CLAIM ? KNIT_METRIC_CLAIM
                                      : code == KNIT_EAUTH || code == KNIT_EERASED
                                          ? KNIT_METRIC_REFUSED
                                          : KNIT_METRIC_HOOK);
        snprintf(msg, sizeof msg, "%s: %s",
                 h->step == H_CLAIM ? "claim refused" : "authentication failed",
                 res && res->why ? res->why : "the credential is not acceptable");
        error_close(c, code == KNIT_EAUTH ? KNIT_EAUTH : code, msg);
        hello_free(h);
        return;
    }
    if (h->step == H_CRED) {
        snprintf(h->principal, sizeof h->principal, "%s",
                 h->identified ? h->ident.account : res->principal);
        h->exp_ms = res->exp_ms;
        if (m->claim.kind == 0) {
            hello_welcome(h);
            return;
        }
        if (m->claim.kind != KNIT_CRED_ANON || m->cred.kind != KNIT_CRED_JWT) {
            error_close(c, KNIT_EPROTO, "a claim is an anonymous credential sent with a JWT");
            hello_free(h);
            return;
        }
        h->step = H_CLAIM;
        hello_begin_auth(h, &m->claim, 1);
        return;
    }
    snprintf(h->anon, sizeof h->anon, "%s", res->principal);
    h->step = H_MERGE;
    code = e->st.merge(e->st.data, h->anon, h->principal, e->lim.max_changes, &h->merged, on_merged,
                       h);
    if (code != KNIT_RELAY_PENDING)
        on_merged(h, code);
}

/* Hands cred to the hook; its answer comes through knit_relay_auth_done. */
static int hello_begin_auth(hello_t *h, const knit_cred_t *cred, int claim)
{
    knit_relay_engine_t *e = h->e;
    int rc;
    memset(&h->req, 0, sizeof h->req);
    h->req.kind = (int)cred->kind;
    h->req.id = cred->id;
    h->req.secret = cred->secret;
    h->req.token = cred->token;
    h->req.claim = claim;
    h->req.wall_ms = h->c ? h->c->stash_wall : 0;
    h->req.peer = h->c ? h->c->name : "";
    h->req.data = e->auth_data;
    h->req.internal_ = h;
    rc = e->auth(e->auth_data, &h->req);
    if (rc) {
        /* The hook refused at once and will not call back. */
        knit_auth_result_t res;
        memset(&res, 0, sizeof res);
        res.code = rc < 0 ? rc : KNIT_EAUTH;
        res.why = "the authentication hook failed";
        knit_relay_auth_done(&h->req, &res);
    }
    return 0;
}

/* The session's role in ns: owner of its own namespace, its grant's role
** in an organization's, else none (design note 17). */
static int role_of(const knit_relay_conn_t *c, const char *ns)
{
    if (knit_auth_granted(c->principal, ns))
        return KNIT_ROLE_OWNER;
    for (size_t i = 0; i < c->ngrants; i++)
        if (strcmp(c->grants[i].ns, ns) == 0)
            return c->grants[i].role;
    return KNIT_ROLE_NONE;
}

typedef struct grant_list_s {
    grant_t *g;           /* grants, owned until handed to the connection */
    size_t n;             /* count */
    uint64_t token_ms;    /* when the token was issued (its iat, ms; 0 unknown) */
    const char *token_ns; /* the token's organization namespace, or NULL */
} grant_list_t;

/* A membership the store recorded: it overrides the token's claim on the
** same organization unless the token is newer (note 17). */
static void grant_member(void *arg, const char *org, const char *role, int present,
                         uint64_t updated_ms)
{
    grant_list_t *l = arg;
    char ns[KNIT_PRINCIPAL_MAX];
    size_t i;
    if (knit_auth_org_ns(org, ns, sizeof ns) != 0)
        return;
    for (i = 0; i < l->n && strcmp(l->g[i].ns, ns) != 0; i++)
        ;
    if (i < l->n && l->token_ns && strcmp(ns, l->token_ns) == 0 && l->token_ms > updated_ms)
        return; /* the token says more recently what holds */
    if (!present) {
        if (i < l->n)
            l->g[i] = l->g[--l->n];
        return;
    }
    if (i == l->n) {
        if (l->n == MAX_GRANTS)
            return;
        memcpy(l->g[l->n++].ns, ns, sizeof ns);
    }
    l->g[i].role = knit_auth_role(role);
}

/* The organization namespaces a signed-in session may use, with roles
** (design note 17): the token's active organization, then what the
** store's memberships say.  Anonymous sessions get none. */
static int grants_build(knit_relay_engine_t *e, knit_relay_conn_t *c, const knit_hello_t *hm)
{
    knit_token_profile_t tp;
    grant_list_t l = {0};
    char tns[KNIT_PRINCIPAL_MAX];
    int rc = 0;

    if (hm->cred.kind != KNIT_CRED_JWT || strncmp(c->principal, "user:", 5) != 0)
        return 0;
    if (!(l.g = knit__calloc(MAX_GRANTS, sizeof *l.g)))
        return KNIT_ENOMEM;
    if (knit__token_profile(hm->cred.token, &tp) != 0)
        memset(&tp, 0, sizeof tp);
    if (tp.org && knit_auth_org_ns(tp.org, tns, sizeof tns) == 0) {
        memcpy(l.g[0].ns, tns, sizeof tns);
        l.g[0].role = knit_auth_role(tp.org_role);
        l.n = 1;
        l.token_ns = tns;
        l.token_ms = tp.iat_ms;
    }
    knit__token_profile_free(&tp);
    if (e->st.memberships && (rc = e->st.memberships(e->st.data, c->principal, grant_member, &l)))
        logf_(e, KNIT_LOG_ERROR, "memberships of %s not read: %s", c->principal,
              e->st.errmsg(e->st.data));
    if (l.n == 0) {
        knit__free(l.g);
        return rc;
    }
    c->grants = l.g;
    c->ngrants = l.n;
    return rc;
}

static void on_hello(knit_relay_conn_t *c, knit_msg_t *msg, uint64_t wall_ms, uint64_t mono_ms)
{
    knit_relay_engine_t *e = c->e;
    const knit_hello_t *hm = &msg->u.hello;
    uint32_t version;
    hello_t *h;
    int rc;

    rc = knit_proto_negotiate(hm->min_version, hm->max_version, &version);
    if (rc) {
        error_close(c, rc,
                    rc == KNIT_EVERSION ? "unsupported protocol version"
                                        : "bad protocol version range");
        return;
    }
    if (!(h = knit__calloc(1, sizeof *h))) {
        error_close(c, KNIT_ENOMEM, "out of memory");
        return;
    }
    h->e = e;
    h->c = c;
    h->version = version;
    h->msg = *msg; /* the HELLO is the request's now */
    memset(msg, 0, sizeof *msg);
    e->nhellos++;
    c->hello = h;
    c->state = ST_AUTH;
    c->stash_wall = wall_ms;
    c->stash_mono = mono_ms;
    h->step = H_CRED;
    hello_begin_auth(h, &h->msg.u.hello.cred, 0);
}

/* Queues b as a push of no connection into ns (design note 15). */
static int queue_system_push(knit_relay_engine_t *e, const char *ns, knit_batch_t *b)
{
    pending_t *p = knit__calloc(1, sizeof *p);
    if (!p || !(p->ns = knit__strdup(ns))) {
        knit__free(p);
        return KNIT_ENOMEM;
    }
    p->batch = b;
    p->system = 1;
    p->arrived_us = knit__metrics_now(e->m);
    if (e->tail)
        e->tail->next = p;
    else
        e->head = p;
    e->tail = p;
    return 0;
}

int knit_relay_engine_stamp(knit_relay_engine_t *e, uint64_t wall_ms,
                            uint64_t *stamp) /* see proto_server.h */
{
    return knit_hlc_tick(&e->clock, wall_ms, stamp);
}

/* The profile and activity rows of a sign-in (design note 15). */
static void signin_rows(knit_relay_engine_t *e, knit_relay_conn_t *c, hello_t *h)
{
    const knit_ident_result_t *r = &h->ident;
    knit_batch_t *b = NULL;
    uint64_t stamp;
    char id[40];
    int rc;

    if (!h->identified || (!(r->tracks[0] && (r->changed || r->new_row)) && !r->tracks[1]))
        return;
    if (!e->have_site && (rc = e->st.site(e->st.data, &e->site)) != 0) {
        CLOG(c, KNIT_LOG_ERROR, ": no relay site id, no profile or activity row: %s",
             e->st.errmsg(e->st.data));
        return;
    }
    e->have_site = 1;
    if ((rc = knit_hlc_tick(&e->clock, c->stash_wall, &stamp)) == 0 &&
        (rc = knit_batch_new(&b)) == 0 && r->tracks[0])
        rc = knit__sysrows_profile(b, c->principal, &e->site, stamp, r);
    if (rc == 0 && r->tracks[1]) {
        snprintf(id, sizeof id, "knit-%016llx", (unsigned long long)stamp);
        rc = knit__sysrows_activity(b, c->principal, &e->site, stamp, id, h->user_id, "sign_in",
                                    c->stash_wall, "knit");
    }
    if (rc == 0 && b->nchanges && (rc = queue_system_push(e, c->principal, b)) == 0)
        return;
    if (rc)
        CLOG(c, KNIT_LOG_ERROR, ": cannot write the sign-in's profile and activity rows: %s",
             knit_strerror(rc));
    knit_batch_free(b);
}

/* Authenticated (and the claim merged): grants, subscriptions, WELCOME. */
static void hello_welcome(hello_t *h)
{
    knit_relay_engine_t *e = h->e;
    knit_relay_conn_t *c = h->c;
    const knit_hello_t *hm = &h->msg.u.hello;
    const char *granted[1 + MAX_GRANTS];
    char msg[384];
    uint64_t stamp;
    knit_msg_t m;
    int rc;

    memcpy(c->principal, h->principal, sizeof c->principal);
    if (grants_build(e, c, hm) == KNIT_ENOMEM) {
        error_close(c, KNIT_ENOMEM, "out of memory");
        hello_free(h);
        return;
    }
    for (size_t i = 0; i < hm->nsubs; i++) {
        if (role_of(c, hm->subs[i].ns) == KNIT_ROLE_NONE &&
            strncmp(hm->subs[i].ns, "org:", 4) != 0) {
            snprintf(msg, sizeof msg, "namespace %.100s is not granted to %s", hm->subs[i].ns,
                     h->principal);
            knit__metrics_auth_fail(e->m, KNIT_METRIC_DENIED);
            error_close(c, KNIT_EDENIED, msg);
            hello_free(h);
            return;
        }
    }
    if (strncmp(h->principal, "anon:", 5) == 0) {
        if (e->nanon >= e->lim.max_anon) {
            knit__metrics_limit(e->m, KNIT_METRIC_ANON);
            error_close(c, KNIT_EBUSY, "too many anonymous sessions on this relay; try later");
            hello_free(h);
            return;
        }
        e->nanon++;
        c->anon_session = 1;
    }
    c->auth_exp_ms = h->exp_ms;
    c->site = hm->site;
    c->no_echo = (hm->features & KNIT_HELLO_NO_ECHO) != 0;
    for (size_t i = 0; i < hm->nsubs; i++) {
        /* An organization no longer granted is left out of WELCOME, which
        ** tells the replica to drop it (note 17); it is not an error. */
        if (role_of(c, hm->subs[i].ns) == KNIT_ROLE_NONE) {
            CLOG(c, KNIT_LOG_INFO, ": %.100s is no longer granted to %s", hm->subs[i].ns,
                 c->principal);
            continue;
        }
        if ((rc = add_sub(c, hm->subs[i].ns, hm->subs[i].cursor)) != 0) {
            error_close(c, rc == KNIT_ENOMEM ? rc : KNIT_EDB, "relay storage failed");
            hello_free(h);
            return;
        }
    }
    if (knit_hlc_tick(&e->clock, c->stash_wall, &stamp) != 0)
        stamp = e->clock;
    granted[0] = c->principal;
    for (size_t i = 0; i < c->ngrants; i++)
        granted[1 + i] = c->grants[i].ns;
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_WELCOME;
    m.u.welcome.version = h->version;
    m.u.welcome.principal = c->principal;
    m.u.welcome.granted = granted;
    m.u.welcome.ngranted = 1 + c->ngrants;
    m.u.welcome.clock = stamp;
    m.u.welcome.limits.max_frame = e->lim.max_frame;
    m.u.welcome.limits.max_changes = e->lim.max_changes;
    m.u.welcome.limits.idle_ms = e->lim.idle_ms;
    m.u.welcome.limits.max_drift_ms = e->lim.max_drift_ms;
    m.u.welcome.features = KNIT_FEATURE_CHECK;
    if (send_msg(c, &m) != 0) {
        hello_free(h);
        return;
    }
    c->state = ST_READY;
    c->rd.max_frame = e->lim.max_frame;
    c->session = 1;
    knit__metrics_session(e->m, 1);
    {
        char fp[KNIT_SCHEMA_FP_HEX] = "none";
        if (hm->schema)
            knit__schema_fp_hex(hm->schema->fp, fp);
        CLOG(c, KNIT_LOG_INFO, ": welcome (%zu subscriptions, schema %s%s%s)", hm->nsubs, fp,
             hm->agent ? ", agent " : "", hm->agent ? hm->agent : "");
    }
    /* Design note 13: a report, never a reason to refuse the session. */
    if (e->st.device_seen && (rc = e->st.device_seen(e->st.data, c->principal, &c->site, hm->schema,
                                                     hm->agent, c->stash_wall)) != 0)
        CLOG(c, KNIT_LOG_WARN, ": cannot record the device's schema: %s (%s)",
             e->st.errmsg ? e->st.errmsg(e->st.data) : "", knit_err_name(rc));
    signin_rows(e, c, h);
    if (h->identified && h->ident.merged_seq)
        knit_relay_engine_advanced(e, c->principal, h->ident.merged_seq);
    if (h->identified && h->ident.moved_from[0])
        knit_relay_engine_end_principal(e, h->ident.moved_from, KNIT_EAUTH,
                                        "this sign-in's id now belongs to the account of its "
                                        "email: sign in again");
    pump(c);
    hello_free(h);
}

void knit_relay_engine_advanced(knit_relay_engine_t *e, const char *ns,
                                uint64_t seq) /* see proto_server.h */
{
    knit_relay_conn_t *c, *next;
    for (c = e->conns; c; c = next) {
        sub_t *s;
        next = c->next;
        if (!alive(c) || c->state != ST_READY || !(s = find_sub(c, ns)))
            continue;
        if (!s->live || s->cursor >= seq)
            continue;
        s->live = 0; /* design note 12: read the new units from the store */
        pump(c);
    }
}

size_t knit_relay_engine_end_principal(knit_relay_engine_t *e, const char *principal, int code,
                                       const char *msg) /* see proto_server.h */
{
    knit_relay_conn_t *c, *next;
    size_t n = 0;
    for (c = e->conns; c; c = next) {
        next = c->next;
        if (!alive(c) || c->state != ST_READY || strcmp(c->principal, principal) != 0)
            continue;
        /* Its pushes not yet in a group are dropped (design note 14). */
        for (pending_t *p = e->head; p; p = p->next) {
            if (p->conn != c || !p->batch)
                continue;
            knit_batch_free(p->batch);
            p->batch = NULL;
            p->code = KNIT_EDENIED;
            snprintf(p->msg, sizeof p->msg, "%s", msg);
        }
        error_close(c, code, msg);
        n++;
    }
    return n;
}

/* ---------------------------------------------------------------------- */
/* PUSH, SUBSCRIBE                                                          */

/* Why change ch of b is refused on arrival, or 0: a stamp beyond the
** allowed drift (design note 7), or a change no replica could apply
** (knit_change_check, design note 8).  text[0..n) gets the reason. */
static int refusal(const knit_batch_t *b, const knit_change_t *ch, uint64_t wall_ms, uint64_t limit,
                   char *text, size_t n)
{
    int rc = knit_change_check(b, ch, text, n);
    if (rc)
        return rc == KNIT_ENOMEM ? rc : rc == KNIT_ECORRUPT ? KNIT_ECORRUPT : KNIT_EINVAL;
    if (knit_hlc_ms(ch->hlc) > limit) {
        char when[KNIT_HLC_FMT_LEN];
        knit_hlc_format(ch->hlc, when, sizeof when);
        snprintf(text, n, "%.40s: stamp %s is %llu ms ahead of the relay's clock",
                 b->tables[ch->table].name, when,
                 (unsigned long long)(knit_hlc_ms(ch->hlc) - wall_ms));
        return KNIT_ECLOCKSKEW;
    }
    return 0;
}

/* Refuses, one reason per change and each naming it (its index, table and
** why), the changes stamped in the future or that no replica could apply.
** Returns 0 (p->nreasons says whether any was refused) or KNIT_ENOMEM. */
static int check_changes(knit_relay_engine_t *e, pending_t *p, const knit_batch_t *b,
                         uint64_t wall_ms)
{
    size_t n = 0, k = 0;
    uint64_t limit = wall_ms + e->lim.max_drift_ms;
    char text[REASON_TEXT];
    int rc;
    for (size_t i = 0; i < b->nchanges; i++) {
        if ((rc = refusal(b, &b->changes[i], wall_ms, limit, text, sizeof text)) == KNIT_ENOMEM)
            return rc;
        n += rc != 0;
    }
    if (n == 0)
        return 0;
    p->reasons = knit__calloc(n, sizeof *p->reasons);
    p->reason_text = knit__malloc(DETAILED_REASONS * REASON_TEXT);
    if (!p->reasons || !p->reason_text)
        return KNIT_ENOMEM;
    for (size_t i = 0; i < b->nchanges && k < n; i++) {
        char *t = k < DETAILED_REASONS ? p->reason_text + k * REASON_TEXT : text;
        rc = refusal(b, &b->changes[i], wall_ms, limit, t, REASON_TEXT);
        if (rc == 0)
            continue;
        if (rc == KNIT_ENOMEM)
            return rc;
        p->reasons[k].change = (int64_t)i;
        p->reasons[k].code = rc;
        p->reasons[k].message = k < DETAILED_REASONS    ? t
                                : rc == KNIT_ECLOCKSKEW ? "stamp too far in the future"
                                                        : "no replica can apply this change";
        if (rc != KNIT_ECLOCKSKEW)
            p->ninvalid++;
        k++;
    }
    p->nreasons = k;
    return 0;
}

/* Refuses every change of b with code and one message (a namespace the
** session may read but not write, note 17).  0 or KNIT_ENOMEM. */
static int refuse_all(pending_t *p, const knit_batch_t *b, int code, const char *fmt, ...)
{
    va_list ap;
    if (b->nchanges == 0)
        return 0;
    p->reasons = knit__calloc(b->nchanges, sizeof *p->reasons);
    p->reason_text = knit__malloc(REASON_TEXT);
    if (!p->reasons || !p->reason_text)
        return KNIT_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(p->reason_text, REASON_TEXT, fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < b->nchanges; i++) {
        p->reasons[i].change = (int64_t)i;
        p->reasons[i].code = code;
        p->reasons[i].message = p->reason_text;
    }
    p->nreasons = b->nchanges;
    return 0;
}

static void on_push(knit_relay_conn_t *c, knit_push_t *push, uint64_t wall_ms)
{
    knit_relay_engine_t *e = c->e;
    pending_t *p = knit__calloc(1, sizeof *p);
    if (!p || !(p->ns = knit__strdup(push->ns))) {
        knit__free(p);
        error_close(c, KNIT_ENOMEM, "out of memory");
        return;
    }
    p->conn = c;
    p->id = push->id;
    p->arrived_us = knit__metrics_now(e->m);
    knit__metrics_push(e->m);
    int role = role_of(c, push->ns);
    int org = strncmp(push->ns, "org:", 4) == 0;
    if (role == KNIT_ROLE_NONE && !org) {
        p->code = KNIT_EDENIED;
        snprintf(p->msg, sizeof p->msg, "namespace %.100s is not granted", push->ns);
    } else if (role < KNIT_ROLE_MEMBER) {
        int rc = role == KNIT_ROLE_NONE
                     ? refuse_all(p, push->batch, KNIT_EDENIED,
                                  "%.100s is not granted to %.100s (not a member)", push->ns,
                                  c->principal)
                     : refuse_all(p, push->batch, KNIT_EDENIED,
                                  "%.100s is read-only for %.100s (role %s)", push->ns,
                                  c->principal, knit_auth_role_name(role));
        if (rc != 0) {
            p->code = KNIT_ENOMEM;
            snprintf(p->msg, sizeof p->msg, "out of memory");
        } else {
            /* A viewer gets the state for REJECT (note 16); a non-member
            ** none: it may not read the organization's cells. */
            if (role != KNIT_ROLE_NONE) {
                p->refused = push->batch;
                push->batch = NULL;
            }
            CLOG(c, KNIT_LOG_INFO, ": push %llu refused: %s", (unsigned long long)p->id,
                 p->reasons[0].message);
        }
    } else if (push->batch->nchanges > e->lim.max_changes) {
        knit__metrics_limit(e->m, KNIT_METRIC_CHANGES);
        p->code = KNIT_ETOOBIG;
        snprintf(p->msg, sizeof p->msg, "%zu changes, the relay accepts %zu per push",
                 push->batch->nchanges, e->lim.max_changes);
    } else {
        int rc = check_changes(e, p, push->batch, wall_ms);
        if (rc) {
            p->code = rc;
            snprintf(p->msg, sizeof p->msg, "out of memory");
        } else if (p->nreasons == 0) {
            p->batch = push->batch; /* taken from the message */
            push->batch = NULL;
        } else {
            p->refused = push->batch; /* for REJECT's state (note 16) */
            push->batch = NULL;
            CLOG(c, p->ninvalid ? KNIT_LOG_WARN : KNIT_LOG_INFO,
                 ": push %llu refused: %zu changes stamped in the future, %zu that no replica "
                 "could apply (first: %s)",
                 (unsigned long long)p->id, p->nreasons - p->ninvalid, p->ninvalid,
                 p->reasons[0].message);
        }
    }
    if (p->code)
        CLOG(c, KNIT_LOG_INFO, ": push %llu refused: %s", (unsigned long long)p->id, p->msg);
    if (e->tail)
        e->tail->next = p;
    else
        e->head = p;
    e->tail = p;
    if (++c->npending >= e->lim.max_pending && !c->paused) {
        c->paused = 1;
        if (!c->auth_paused)
            e->io.pause(e->io.data, c->user, 1);
    }
}

static void on_subscribe(knit_relay_conn_t *c, const knit_subscribe_t *s)
{
    char msg[384];
    for (size_t i = 0; i < s->nsubs; i++) {
        if (role_of(c, s->subs[i].ns) == KNIT_ROLE_NONE) {
            snprintf(msg, sizeof msg, "namespace %.100s is not granted to %s", s->subs[i].ns,
                     c->principal);
            error_close(c, KNIT_EDENIED, msg);
            return;
        }
    }
    for (size_t i = 0; i < s->nsubs; i++) {
        int rc = add_sub(c, s->subs[i].ns, s->subs[i].cursor);
        if (rc) {
            error_close(c, rc == KNIT_ENOMEM ? rc : KNIT_EDB, "relay storage failed");
            return;
        }
    }
    pump(c);
}

/* The consistency check (check.h): answered at once from the store. */
static void on_check(knit_relay_conn_t *c, const knit_check_msg_t *q)
{
    knit_msg_t m;
    char msg[384];
    if (role_of(c, q->ns) == KNIT_ROLE_NONE) {
        snprintf(msg, sizeof msg, "namespace %.100s is not granted to %s", q->ns, c->principal);
        error_close(c, KNIT_EDENIED, msg);
        return;
    }
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_CHECKED;
    int rc = knit__relay_check(&c->e->st, q, &m.u.checked);
    if (rc) {
        knit__metrics_check(c->e->m, KNIT_METRIC_CHECK_ERROR);
        error_close(c, rc == KNIT_ENOMEM ? rc : KNIT_EDB, "relay storage failed");
        return;
    }
    knit__metrics_check(c->e->m, q->nfetch              ? KNIT_METRIC_CHECK_FETCH
                                 : m.u.checked.nbuckets ? KNIT_METRIC_CHECK_DIFFER
                                                        : KNIT_METRIC_CHECK_EQUAL);
    rc = send_msg(c, &m);
    if (rc == KNIT_ETOOBIG && m.u.checked.state) {
        /* Too many cells for one frame: none, the client fetches fewer. */
        knit_batch_free(m.u.checked.state);
        m.u.checked.state = NULL;
        rc = send_msg(c, &m);
    }
    knit__relay_check_clear(&m.u.checked);
}

/* ---------------------------------------------------------------------- */
/* Input                                                                    */

static void on_frame(knit_relay_conn_t *c, const uint8_t *p, size_t n, uint64_t wall_ms,
                     uint64_t mono_ms)
{
    knit_relay_engine_t *e = c->e;
    const knit_codec_limits_t *lim = c->state == ST_HELLO ? &e->dec_hello : &e->dec;
    const char *why = NULL;
    char msg[160];
    knit_msg_t m;
    int rc = knit_msg_decode(p, n, lim, &m, &why);

    if (rc) {
        snprintf(msg, sizeof msg, "malformed message: %s", why ? why : knit_strerror(rc));
        error_close(c, rc == KNIT_ETOOBIG || rc == KNIT_ENOMEM ? rc : KNIT_EPROTO, msg);
        return;
    }
    if (c->state == ST_HELLO) {
        if (m.type == KNIT_MSG_HELLO)
            on_hello(c, &m, wall_ms, mono_ms);
        else
            error_close(c, KNIT_EPROTO, "the first message must be HELLO");
        knit_msg_free(&m);
        return;
    }
    /* Design note 3: the credential is checked on every message. */
    if (c->auth_exp_ms && wall_ms >= c->auth_exp_ms + e->lim.jwt_skew_ms) {
        knit__metrics_auth_fail(e->m, KNIT_METRIC_EXPIRED);
        error_close(c, KNIT_EAUTH, "token expired");
        knit_msg_free(&m);
        return;
    }
    switch (m.type) {
    case KNIT_MSG_PUSH:
        on_push(c, &m.u.push, wall_ms);
        break;
    case KNIT_MSG_SUBSCRIBE:
        on_subscribe(c, &m.u.subscribe);
        break;
    case KNIT_MSG_CHECK:
        on_check(c, &m.u.check);
        break;
    case KNIT_MSG_PING: {
        knit_msg_t pong;
        memset(&pong, 0, sizeof pong);
        pong.type = KNIT_MSG_PONG;
        pong.u.ping.nonce = m.u.ping.nonce;
        send_msg(c, &pong);
        if (c->queued > 2 * e->lim.max_queue) {
            knit__metrics_limit(e->m, KNIT_METRIC_QUEUE);
            error_close(c, KNIT_ETOOBIG, "not reading");
        }
        break;
    }
    case KNIT_MSG_PONG:
        break;
    case KNIT_MSG_ERROR:
        CLOG(c, KNIT_LOG_INFO, ": peer sent ERROR %s: %.100s", knit_err_name(m.u.error.code),
             m.u.error.message ? m.u.error.message : "");
        c->state = ST_CLOSING;
        e->io.close(e->io.data, c->user);
        break;
    default:
        snprintf(msg, sizeof msg, "unexpected %s", knit_msg_type_name(m.type));
        error_close(c, KNIT_EPROTO, msg);
    }
    knit_msg_free(&m);
}

int knit_relay_conn_input(knit_relay_conn_t *c, const uint8_t *p, size_t n, uint64_t wall_ms,
                          uint64_t mono_ms) /* see proto_server.h */
{
    if (!alive(c) || c->e->shutting_down)
        return KNIT_ECLOSED;
    /* Only whole frames count as activity (last_rx_mono): bytes trickled
    ** into a frame that never ends must not hold a session open. */
    while (n > 0 && alive(c)) {
        if (c->state == ST_AUTH) {
            /* Design note 11: keep it for after WELCOME, and stop reading. */
            uint8_t *q;
            if (c->nstash + n > MAX_STASH) {
                knit__metrics_limit(c->e->m, KNIT_METRIC_STASH);
                error_close(c, KNIT_EPROTO, "too much sent before WELCOME");
                break;
            }
            if (!(q = knit__realloc(c->stash, c->nstash + n))) {
                error_close(c, KNIT_ENOMEM, "out of memory");
                break;
            }
            memcpy(q + c->nstash, p, n);
            if (!c->nstash) {
                c->stash_wall = wall_ms;
                c->stash_mono = mono_ms;
            }
            c->stash = q;
            c->nstash += n;
            break;
        }
        const uint8_t *payload;
        size_t used = 0, len;
        int rc = knit_frame_read(&c->rd, p, n, &used, &payload, &len);
        if (rc < 0) {
            if (rc == KNIT_ETOOBIG) {
                knit__metrics_limit(c->e->m, KNIT_METRIC_FRAME);
                error_close(c, KNIT_ETOOBIG, "frame longer than the relay accepts");
            } else if (rc == KNIT_ENOMEM)
                error_close(c, KNIT_ENOMEM, "out of memory");
            else
                error_close(c, KNIT_EPROTO, "malformed frame");
            break;
        }
        p += used;
        n -= used;
        if (rc == 0)
            break;
        c->last_rx_mono = mono_ms;
        on_frame(c, payload, len, wall_ms, mono_ms);
        knit_frame_done(&c->rd);
    }
    if (alive(c) && c->state == ST_AUTH && !c->auth_paused) {
        c->auth_paused = 1;
        if (!c->paused)
            c->e->io.pause(c->e->io.data, c->user, 1);
    }
    return alive(c) ? 0 : KNIT_ECLOSED;
}

void knit_relay_conn_sent(knit_relay_conn_t *c, size_t n) /* see proto_server.h */
{
    c->queued = n > c->queued ? 0 : c->queued - n;
    if (alive(c) && c->state == ST_READY)
        pump(c);
}

/* ---------------------------------------------------------------------- */
/* Group commit                                                             */

/* REJECT's state (note 16): the store's winning cells of the refused
** changes' rows, read after the commits before it; NULL when the store
** cannot say (the client then takes it that the relay holds none). */
static knit_batch_t *refused_state(knit_relay_engine_t *e, pending_t *p)
{
    knit_batch_t *out = NULL;
    size_t *idx;
    if (!e->st.cells || !p->refused || !p->nreasons)
        return NULL;
    if (!(idx = knit__calloc(p->nreasons, sizeof *idx)))
        return NULL;
    for (size_t i = 0; i < p->nreasons; i++)
        idx[i] = (size_t)p->reasons[i].change;
    if (e->st.cells(e->st.data, p->ns, p->refused, idx, p->nreasons, &out) != 0)
        out = NULL;
    knit__free(idx);
    return out;
}

static void answer(knit_relay_engine_t *e, pending_t *p)
{
    knit_relay_conn_t *c = p->conn;
    knit_msg_t m;
    knit_reason_t whole;

    if (!c)
        return;
    if (c->npending)
        c->npending--;
    if (c->paused && c->npending < e->lim.max_pending / 2 + 1 && !c->lost) {
        c->paused = 0;
        if (!c->auth_paused)
            e->io.pause(e->io.data, c->user, 0);
    }
    if (!alive(c))
        return;
    memset(&m, 0, sizeof m);
    if (p->code == 0 && p->nreasons == 0) {
        m.type = KNIT_MSG_ACK;
        m.u.ack.id = p->id;
        m.u.ack.durable = 1;
        /* Design note 9: the sequences this push took, all of them its own. */
        m.u.ack.first_seq = p->push.res.first_seq;
        m.u.ack.last_seq = p->push.res.last_seq;
    } else {
        m.type = KNIT_MSG_REJECT;
        m.u.reject.id = p->id;
        if (p->nreasons) {
            m.u.reject.reasons = p->reasons;
            m.u.reject.nreasons = p->nreasons;
            m.u.reject.state = refused_state(e, p);
        } else {
            whole.change = -1;
            whole.code = p->code;
            whole.message = p->msg;
            m.u.reject.reasons = &whole;
            m.u.reject.nreasons = 1;
        }
    }
    int sent = send_msg(c, &m);
    if (m.type == KNIT_MSG_REJECT)
        knit_batch_free(m.u.reject.state);
    if (sent == 0)
        knit__metrics_answer(e->m,
                             m.type == KNIT_MSG_ACK ? 0
                             : p->nreasons          ? (int)p->reasons[0].code
                                                    : (int)p->code,
                             p->arrived_us);
    if (alive(c) && c->queued > 2 * e->lim.max_queue) {
        knit__metrics_limit(e->m, KNIT_METRIC_QUEUE);
        error_close(c, KNIT_ETOOBIG, "not reading");
    }
}

static void close_all(knit_relay_engine_t *e);

/* The group in flight completed (design notes 1, 2 and 11): answers in
** arrival order, then the fan-out in sequence order. */
static void on_group_done(void *arg, int rc)
{
    knit_relay_engine_t *e = arg;
    pending_t *list = e->group, *p;
    size_t napply = 0, nunits = 0, nchanges = 0;

    e->group = NULL;
    e->committing = 0;
    for (p = list; p; p = p->next) {
        if (!p->batch)
            continue;
        napply++;
        if (rc == 0 && p->push.code) {
            /* This push alone was refused by the store. */
            p->code = p->push.code;
            snprintf(p->msg, sizeof p->msg, "%s", p->push.msg);
            knit_batch_free(p->batch);
            p->batch = NULL;
        }
    }
    if (rc) {
        /* Design note 1: nothing of this group is acknowledged. */
        logf_(e, KNIT_LOG_ERROR, "group commit failed: %s", e->st.errmsg(e->st.data));
        for (p = list; p; p = p->next) {
            if (!p->batch)
                continue;
            knit_batch_free(p->push.res.fanout);
            memset(&p->push.res, 0, sizeof p->push.res);
            p->code = rc == KNIT_EBUSY ? KNIT_EBUSY : KNIT_EIO;
            snprintf(p->msg, sizeof p->msg, "relay storage failed; push again later");
        }
    }
    for (p = list; p; p = p->next) {
        if (p->system && (rc || p->code)) {
            /* Note 15: the index holds values these rows did not bring;
            ** the next sign-in or event writes the profile row whole. */
            logf_(e, KNIT_LOG_ERROR, "the relay's profile/activity rows for %s were not stored: %s",
                  p->ns, rc ? e->st.errmsg(e->st.data) : p->msg);
            if (e->st.ident_dirty)
                e->st.ident_dirty(e->st.data, p->ns);
        }
        if (rc == 0 && p->batch) {
            nchanges += p->batch->nchanges;
            knit__metrics_ingest(e->m, p->batch->nchanges, p->push.res.applied);
        }
        answer(e, p);
    }
    if (napply)
        knit__metrics_group(e->m, napply, nchanges, rc == 0);
    for (p = list; p; p = p->next) {
        if (!p->push.res.fanout)
            continue;
        nunits += p->push.res.fanout->ntxns;
        for (size_t i = 0; i < p->push.res.fanout->nchanges; i++)
            knit_hlc_recv(&e->clock, p->push.res.fanout->changes[i].hlc, e->group_wall,
                          e->lim.max_drift_ms);
        knit__metrics_fanout(
            e->m, fan_out(e, p->ns, p->push.res.fanout, p->code || p->nreasons ? NULL : p->conn),
            p->arrived_us);
    }
    logf_(e, KNIT_LOG_DEBUG, "group: %zu pushes applied, %zu units committed", napply, nunits);
    while (list) {
        p = list;
        list = p->next;
        knit_batch_free(p->batch);
        knit_batch_free(p->push.res.fanout);
        knit__free(p->ns);
        knit__free(p->reasons);
        knit__free(p->reason_text);
        knit_batch_free(p->refused);
        knit__free(p);
    }
    if (e->shutting_down) {
        /* Pushes that waited behind this group are committed before the
        ** connections close (knit_relay_engine_shutdown). */
        if (e->head)
            knit_relay_engine_flush(e, e->group_wall, 0);
        if (!e->committing)
            close_all(e);
    }
}

int knit_relay_engine_flush(knit_relay_engine_t *e, uint64_t wall_ms,
                            uint64_t mono_ms) /* see proto_server.h */
{
    knit_relay_push_t *first = NULL, **link = &first;
    pending_t *p;
    int rc = 0;

    (void)mono_ms;
    if (!e->head || e->committing)
        return 0; /* note 11: one group in flight; the rest waits */
    e->group = e->head;
    e->head = e->tail = NULL;
    e->group_wall = wall_ms;
    for (p = e->group; p; p = p->next) {
        if (!p->batch)
            continue;
        memset(&p->push, 0, sizeof p->push);
        p->push.ns = p->ns;
        p->push.batch = p->batch;
        *link = &p->push;
        link = &p->push.next;
    }
    if (first) {
        e->committing = 1;
        rc = e->st.commit(e->st.data, first, on_group_done, e);
        if (rc == KNIT_RELAY_PENDING)
            return 0;
    }
    on_group_done(e, rc);
    return rc;
}

/* Sessions of accounts erased elsewhere (design note 14). */
static void check_erased(knit_relay_engine_t *e, uint64_t mono_ms)
{
    knit_relay_conn_t *c, *next;
    if (!e->st.erased || mono_ms - e->erased_checked < ERASED_CHECK_MS)
        return;
    e->erased_checked = mono_ms;
    for (c = e->conns; c; c = next) {
        int is = 0;
        next = c->next;
        if (!alive(c) || c->state != ST_READY || strncmp(c->principal, "user:", 5) != 0)
            continue;
        if (e->st.erased(e->st.data, c->principal, &is) != 0 || !is)
            continue;
        /* end_principal may close several: restart from the list's head. */
        knit_relay_engine_end_principal(e, c->principal, KNIT_EERASED,
                                        "account erased; its data is gone from the relay");
        next = e->conns;
    }
}

void knit_relay_engine_tick(knit_relay_engine_t *e, uint64_t wall_ms,
                            uint64_t mono_ms) /* see proto_server.h */
{
    knit_relay_conn_t *c, *next;
    check_erased(e, mono_ms);
    for (c = e->conns; c; c = next) {
        next = c->next;
        if (!alive(c))
            continue;
        if ((c->state == ST_HELLO || c->state == ST_AUTH) &&
            mono_ms - c->opened_mono >= e->lim.handshake_ms) {
            knit__metrics_limit(e->m, KNIT_METRIC_HANDSHAKE);
            error_close(c, KNIT_ETIMEDOUT, "no HELLO in time");
        } else if (c->state == ST_READY && mono_ms - c->last_rx_mono >= e->lim.idle_ms) {
            knit__metrics_limit(e->m, KNIT_METRIC_IDLE);
            error_close(c, KNIT_ETIMEDOUT, "idle timeout");
        } else if (c->state == ST_READY && c->auth_exp_ms &&
                   wall_ms >= c->auth_exp_ms + e->lim.jwt_skew_ms) {
            knit__metrics_auth_fail(e->m, KNIT_METRIC_EXPIRED);
            error_close(c, KNIT_EAUTH, "token expired");
        }
    }
}

static void close_all(knit_relay_engine_t *e)
{
    knit_relay_conn_t *c, *next;
    for (c = e->conns; c; c = next) {
        next = c->next;
        error_close(c, KNIT_ECLOSED, "relay shutting down");
    }
}

void knit_relay_engine_shutdown(knit_relay_engine_t *e, uint64_t wall_ms,
                                uint64_t mono_ms) /* see proto_server.h */
{
    knit_relay_engine_flush(e, wall_ms, mono_ms);
    e->shutting_down = 1;
    /* With a commit in flight, its completion closes them (note 11). */
    if (!e->committing)
        close_all(e);
}

int knit_relay_engine_busy(const knit_relay_engine_t *e) /* see proto_server.h */
{
    return e->committing || e->nhellos > 0;
}
