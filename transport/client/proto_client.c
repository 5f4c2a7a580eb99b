/*
** proto_client.c: the sync client's protocol engine (API in proto_client.h,
** protocol in docs/PROTOCOL.md).  It decides what to send, when to
** reconnect, which changes are acknowledged and when a DELTAS may be
** applied; the glue (client.c) moves the bytes and touches the replica.
**
** Design notes
**   1. Acknowledged means durable.  The watermark handed to io.acked only
**      covers pushes the relay answered with ACK: pushes complete in order
**      (a slot list in version order), and the watermark moves to a slot's
**      `covers` only when that slot and every earlier one are ACKed, so a
**      REJECT or a lost connection never lets a later ACK cover an earlier
**      refused push.  It never passes a change of a namespace the session
**      may not write (the "ceiling"), so such changes stay pending.
**   2. Unacknowledged pushes are forgotten when the connection goes: the
**      next session reads the replica again from the durable watermark and
**      pushes everything after it.  Replaying a committed push is harmless.
**   3. A DELTAS is applied only if it continues from the cursor (from <=
**      cursor); its changes and its `to` go to the replica in one
**      transaction (io.apply), so a crash keeps both or neither; the
**      cursor becomes `to` exactly, also when that is lower.  A gap
**      sends SUBSCRIBE with the cursor once and drops DELTAS until the chain
**      resumes.
**   4. The engine reads no clock: every call carries the monotonic time in
**      milliseconds, and reconnect jitter comes from a seeded generator.
**      Reconnect delays are "full jitter": uniform in [0, min(cap, base *
**      2^attempt)], the attempt count reset once a session catches up.
**   5. Remote changes can hide local ones (applying stamps local writes
**      first), so after DELTAS the replica is read for local changes again,
**      but only once every subscription is caught up: during a long
**      catch-up that read would repeat for every page.
**   6. A claim completes before anything local is read.  HELLO carries the
**      claim (only with a JWT); the relay merges `anon:<id>` into the
**      account before it answers WELCOME, or refuses with ERROR and nothing
**      happens.  On WELCOME, io.ready names the write namespace first (so a
**      never-synced home is named the account's, not left behind), then
**      io.claimed moves the replica's rows of `anon:<id>`, and only then are
**      cursors read, SUBSCRIBE sent and READY entered: no local change is
**      read under the old namespace.  The claim is cleared only when
**      io.claimed succeeds; a lost connection, a crash or a failed move
**      leaves it set, and the next HELLO claims again, which the relay's
**      merge (a CRDT union) and the move (nothing left to move) make
**      harmless.
**   7. Our own pushes are not downloaded again.  An ACK names the
**      sequences first..last its push took (all of them the push's own
**      units, PROTOCOL.md ACK).  When the cursor reaches first - 1 (at once,
**      or after the DELTAS of other devices' units before first arrive),
**      the cursor moves to last without applying anything: the replica
**      already holds those changes, since they are its own.  It never
**      jumps over a sequence that is not ours, so no other device's change
**      is skipped.  The live echo of those units (the relay sends every
**      unit to every subscriber, the pusher included, unless its HELLO
**      announced KNIT_HELLO_NO_ECHO, as this client's does) is then
**      recognised by its range and not applied; SYNCED waits until every
**      own range is behind the cursor, so the next session's catch-up
**      starts after them.
**   8. The schema in HELLO (io.schema) is a report for the relay's
**      operator, never a condition of syncing: when the glue cannot read
**      it, or it would make the HELLO larger than a relay accepts before
**      WELCOME (KNIT_HELLO_MAX_FRAME), the HELLO goes without it.
**   9. A refusal of single changes with a permanent code (PROTOCOL.md
**      6.3.4; clock skew included: it does not pass by itself) is
**      terminal.  io.rejected rolls those changes back in the replica and
**      records them; the engine then drops them from the slot and pushes
**      the rest at once (nothing of a refused push was applied), so one
**      refused write never blocks the writes behind it and is never sent
**      again.  A slot left empty completes as if ACKed.  Without
**      io.rejected, or when it fails, pushing stops as before.
**  10. The consistency check compares the replica's digest of one granted
**      namespace (round robin) with the relay's every check_ms, and only
**      when the session is synced: nothing to push, in flight or unread,
**      every subscription caught up.  Otherwise a difference is expected.
**      The answer counts only if the relay's sequence is the cursor the
**      digest was taken at and the session is still synced.  Then:
**
**        idle --due, synced: io.check_digest, CHECK--> asked
**        asked --CHECKED, equal--> idle (checks + 1)
**        asked --CHECKED, differs: the buckets that differ--> fetching
**        fetching --CHECKED with state: io.check_repair, next buckets--> ...
**        fetching --last buckets repaired--> idle (repaired + 1)
**
**      The relay announces the feature in WELCOME (KNIT_FEATURE_CHECK);
**      an older relay announces nothing and is never sent a CHECK.  A lost
**      connection drops a check in flight; the next session checks again.
**  11. A push carries its units as one (knit_batch_coalesce): the stamps of
**      local writes it holds apply together at every receiver, which keeps
**      each of them whole, each row's cells travel under one key (a row
**      inserted in one stamp and updated in another is sent once, not
**      twice), and the relay gives the push one sequence and one DELTAS.
**      A slot's covers is still the last version it holds whole.
**  12. Bookkeeping never waits for the app.  A cursor moved past own pushes
**      (note 7) and the watermark of an ACK are saved without waiting for
**      another writer (io.save_cursor, io.acked): when an app is in the
**      middle of its transactions the replica answers KNIT_EBUSY at once,
**      and they are saved again SAVE_RETRY_MS later, while the loop goes on
**      pushing and applying.  Waiting there blocked the loop for as long
**      as the app kept writing.  Until saved, the replica holds an older
**      cursor or watermark, which is safe: the next session re-reads own
**      units it already holds (known, nothing changes) or pushes changes
**      the relay already has (merged again, nothing changes).  A DELTAS
**      applied saves its cursor with it, and the end of a session saves
**      what is left, waiting.
**
** States (transitions name the functions that make them):
**
**   IDLE --start()--> WAITING --want_connect()--> CONNECTING
**                       ^                              |
**                       |                         connected(): HELLO
**                       |                              v
**                       +--lost()-- CLOSING <--+-- HELLO_SENT --WELCOME--> READY
**                       |              ^       |                             |
**                       |              +-------+----- ERROR, bad input, -----+
**                       |                             timeout, stop()
**   lost() while stopping, or stop() with no connection --> STOPPED
*/
#include "proto_client.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "cred.h"
#include "frame.h"

enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

#define DEF_MAX_INFLIGHT 4
#define DEF_MAX_PUSH 65536
#define DEF_BACKOFF_BASE_MS 200
#define DEF_BACKOFF_MAX_MS 15000
#define DEF_HANDSHAKE_MS 10000
#define DEF_RETRY_MS 500
#define RETRY_MAX_MS 30000
#define DEF_ACK_FLUSH_MS 1000
#define SAVE_RETRY_MS 5 /* a busy replica: save the watermark or cursors again after (note 12) */
#define DEF_CHECK_MS 300000 /* consistency check interval (note 10) */
#define CHECK_RETRY_MS 1000 /* a check that could not compare is tried again */
#define CHECK_BUCKETS 256   /* bucket digests asked for */
#define CHECK_FETCH 16      /* buckets fetched per CHECK at first */

enum { SLOT_QUEUED, SLOT_SENT, SLOT_ACKED };

/* One push: a part of the local changes, waiting to be sent, in flight or
** acknowledged (design note 1). */
typedef struct slot_s {
    uint64_t id;         /* batch id of its latest PUSH (0: never sent) */
    char *ns;            /* namespace, owned */
    knit_batch_t *batch; /* the changes, owned */
    uint64_t covers;     /* watermark once it and every earlier slot are ACKed */
    int state;           /* SLOT_* */
    uint64_t retry_at;   /* QUEUED after a REJECT: not sent before this time */
    unsigned attempts;   /* REJECTs it got */
} slot_t;

/* Sequences first..last of a namespace that our own acknowledged pushes
** took (design note 7). */
typedef struct own_s {
    uint64_t first; /* first sequence */
    uint64_t last;  /* last sequence, >= first */
} own_t;

#define MAX_OWN                                                                                    \
    32 /* own ranges remembered per subscription; more are forgotten                               \
          (their echoes are then applied like any DELTAS) */

/* One subscription of the session. */
typedef struct sub_s {
    char *ns;           /* namespace, owned */
    uint64_t cursor;    /* last relay sequence applied to the replica */
    uint64_t saved;     /* the cursor the replica holds (note 12) */
    int caught_up;      /* the relay said catch-up is complete */
    int resub;          /* a gap was seen and SUBSCRIBE sent (design note 3) */
    own_t own[MAX_OWN]; /* own ranges, sorted, disjoint, not adjacent (note 7) */
    size_t nown;        /* count */
} sub_t;

struct knit_client_s {
    knit_client_io_t io;               /* the glue's callbacks */
    knit_client_config_t cfg;          /* resolved configuration */
    char *cred_id;                     /* owned copy of cfg.cred.id */
    char *cred_secret;                 /* owned copy of cfg.cred.secret */
    char *cred_token;                  /* owned copy of cfg.cred.token */
    char *claim_id;                    /* owned copy of cfg.claim.id (NULL: no claim) */
    char *claim_secret;                /* owned copy of cfg.claim.secret */
    char claim_ns[KNIT_PRINCIPAL_MAX]; /* "anon:<claim_id>", "" when no claim */
    int claim_sent;                    /* this connection's HELLO carried the claim */
    char *agent;                       /* owned copy of cfg.agent */
    knit_client_state_t state;         /* see the diagram */
    uint64_t rng;                      /* splitmix64 state for jitter */
    unsigned attempt;                  /* reconnects since the last healthy session */
    uint64_t retry_at;                 /* WAITING: when the next attempt is due */
    uint64_t conn_at;                  /* when the current attempt began */
    uint64_t last_rx;                  /* when a frame last arrived */
    uint64_t last_tx;                  /* when a frame was last queued */
    uint64_t ping_nonce;               /* last PING nonce sent */
    knit_wire_limits_t limits;         /* the relay's, from WELCOME */
    char *principal;                   /* session principal, owned (NULL when none) */
    char **granted;                    /* namespaces the session may write, owned */
    size_t ngranted;                   /* count */
    knit_frame_reader_t rd;            /* frame reassembly */
    knit_codec_limits_t dec;           /* decoding what the relay sends */
    knit_codec_limits_t enc;           /* encoding what we send (the relay's limits) */
    knit_buf_t out;                    /* frames queued for the glue */
    slot_t *slots;                     /* pushes in version order */
    size_t nslots;                     /* count */
    size_t capslots;                   /* allocated */
    sub_t *subs;                       /* subscriptions of the session */
    size_t nsubs;                      /* count */
    uint64_t pushed_upto;              /* local changes up to here are in slots or acked */
    uint64_t durable;                  /* acknowledged (or known empty) up to here */
    uint64_t reported;                 /* last value io.acked accepted */
    uint64_t ceiling;                  /* the watermark may not pass this (note 1) */
    uint64_t last_flush;               /* when the watermark was last reported */
    uint64_t ack_retry_at;             /* a busy replica refused it: try then (note 12) */
    uint64_t save_retry_at;            /* cursors wait to be saved until then (note 12) */
    size_t push_limit;                 /* changes per push this session */
    uint64_t next_id;                  /* last batch id used */
    int dirty;                         /* local changes may be waiting to be read */
    int dirty_remote;                  /* DELTAS applied since the last read (note 5) */
    int halted;                        /* the relay refused a push for good: stop pushing */
    int stopping;                      /* stop() was called */
    uint64_t stop_deadline;            /* when stopping gives up waiting for ACKs */
    int synced;                        /* SYNCED was reported and still holds */
    int fatal_close;                   /* the connection ended on a fatal error */
    int warned_ungranted;              /* the ceiling warning was logged */
    knit_client_stats_t st;            /* counters */
    uint64_t features;                 /* the relay's WELCOME features */
    uint64_t check_next;               /* when the next consistency check is due (note 10) */
    uint64_t check_id;                 /* last CHECK id sent */
    int check_wait;                    /* 0 idle, 1 CHECK asked, 2 buckets being fetched */
    size_t check_sub;                  /* next subscription to check (round robin) */
    uint64_t check_seq;                /* its cursor when its digest was taken */
    char *check_ns;                    /* the namespace being checked, owned */
    knit_digest_t check_total;         /* the replica's digest of it */
    knit_digest_t *check_buckets;      /* and its CHECK_BUCKETS bucket digests */
    uint32_t *check_todo;              /* differing buckets not repaired yet */
    size_t ntodo;                      /* count */
    size_t check_round;                /* buckets fetched per CHECK */
    size_t check_rows;                 /* rows this repair restored so far */
    size_t check_cells;                /* cells it pushed again */
};

/* ---------------------------------------------------------------------- */
/* Small helpers                                                            */

static void logf_(knit_client_t *c, int level, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void logf_(knit_client_t *c, int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    if (level > c->cfg.log_level || !c->io.log)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    c->io.log(c->io.data, level, line);
}

static void emit(knit_client_t *c, knit_client_event_t *ev)
{
    ev->state = c->state;
    if (c->io.event)
        c->io.event(c->io.data, ev);
}

static void set_state(knit_client_t *c, knit_client_state_t s, uint64_t delay_ms)
{
    knit_client_event_t ev;
    if (c->state == s)
        return;
    c->state = s;
    memset(&ev, 0, sizeof ev);
    ev.type = KNIT_CLIENT_EV_STATE;
    ev.delay_ms = delay_ms;
    emit(c, &ev);
}

/* claim: the namespace a refused HELLO was claiming, or NULL. */
static void emit_error_claim(knit_client_t *c, int code, int fatal, int push, const char *msg,
                             const char *claim)
{
    knit_client_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.type = KNIT_CLIENT_EV_ERROR;
    ev.code = code;
    ev.fatal = fatal;
    ev.push = push;
    ev.message = msg;
    ev.claim = claim;
    logf_(c, fatal ? LOG_ERROR : LOG_WARN, "%s", msg);
    emit(c, &ev);
}

static void emit_error(knit_client_t *c, int code, int fatal, int push, const char *msg)
{
    emit_error_claim(c, code, fatal, push, msg, NULL);
}

/* Why the glue's request failed, into buf: its detail (io.errmsg), else
** the code's message.  Copied, never formatted from an earlier message, so
** the same failure always reads the same. */
static const char *detail(knit_client_t *c, int rc, char *buf, size_t n)
{
    const char *d = c->io.errmsg ? c->io.errmsg(c->io.data) : NULL;
    snprintf(buf, n, "%s", d && *d ? d : knit_strerror(rc));
    return buf;
}

/* Errors that no retry can fix without a new credential or software.
** KNIT_EACCOUNT: io.ready found the replica file belongs to another account
** (one file per account); the same credential meets the same refusal. */
static int is_fatal(int code)
{
    return code == KNIT_EAUTH || code == KNIT_EDENIED || code == KNIT_EVERSION ||
           code == KNIT_EACCOUNT || code == KNIT_EERASED;
}

/* REJECT codes that say "push the same changes again later" (PROTOCOL §8). */
static int is_retryable(int code)
{
    switch (code) {
    case KNIT_ENOMEM:
    case KNIT_EIO:
    case KNIT_EDB:
    case KNIT_EBUSY:
    case KNIT_ECLOSED:
    case KNIT_ETIMEDOUT:
    case KNIT_ECLOCKSKEW:
        return 1;
    default:
        return 0;
    }
}

/* A refusal of one change that is terminal for it (design note 9): a
** permanent code, or a stamp ahead of the relay's clock, which does not
** pass by itself (a push-level clock skew is still retried). */
static int is_terminal_change(int code)
{
    return code == KNIT_ECLOCKSKEW || !is_retryable(code);
}

static void send_queued(knit_client_t *c, uint64_t now);
static void complete_prefix(knit_client_t *c, uint64_t now);

/* A copy of b without the changes whose flag in drop is set, units kept
** (an emptied unit is left out). */
static int batch_without(const knit_batch_t *b, const uint8_t *drop, knit_batch_t **out)
{
    knit_batch_t *c;
    uint32_t idx;
    int rc = knit_batch_new(&c);
    for (size_t i = 0; !rc && i < b->nns; i++)
        rc = knit_batch_ns(c, b->ns[i], &idx);
    for (size_t i = 0; !rc && i < b->nsites; i++)
        rc = knit_batch_site(c, &b->sites[i], &idx);
    for (size_t i = 0; !rc && i < b->ntables; i++) {
        const knit_batch_table_t *t = &b->tables[i];
        rc = knit_batch_table(c, t->name, t->npk, t->ncols, (const char *const *)t->cols, t->orset,
                              &idx);
    }
    for (size_t u = 0; !rc && u < b->ntxns; u++) {
        const knit_txn_t *x = &b->txns[u];
        int begun = 0;
        for (size_t i = x->first; !rc && i < x->first + x->count; i++) {
            if (drop[i])
                continue;
            if (!begun && (rc = knit_batch_begin(c, x->version)) != 0)
                break;
            begun = 1;
            rc = knit_batch_add(c, &b->changes[i]);
        }
    }
    if (rc && c) {
        knit_batch_free(c);
        c = NULL;
    }
    *out = c;
    return rc;
}

/* Design note 9: the refused changes are rolled back by the glue and the
** rest of the push goes again.  Returns 1 when that happened, 0 when the
** refusal is handled as before (pushing stops). */
static int roll_back(knit_client_t *c, slot_t *s, const knit_reject_t *r, uint64_t now)
{
    knit_batch_t *rest = NULL;
    uint8_t *drop;
    size_t nrefused = 0;
    int rc;
    if (!c->io.rejected)
        return 0;
    for (size_t i = 0; i < r->nreasons; i++) {
        const knit_reason_t *x = &r->reasons[i];
        if (x->change < 0 || (uint64_t)x->change >= s->batch->nchanges)
            return 0; /* the push as a whole, or a change it does not have */
        nrefused += is_terminal_change(x->code);
    }
    if (!nrefused)
        return 0;
    if (!(drop = knit__calloc(s->batch->nchanges + 1, 1)))
        return 0;
    knit_reason_t *keep = knit__calloc(r->nreasons, sizeof *keep);
    size_t nkeep = 0;
    if (!keep) {
        knit__free(drop);
        return 0;
    }
    for (size_t i = 0; i < r->nreasons; i++)
        if (is_terminal_change(r->reasons[i].code)) {
            keep[nkeep++] = r->reasons[i];
            drop[r->reasons[i].change] = 1;
        }
    rc = c->io.rejected(c->io.data, s->ns, s->batch, keep, nkeep, r->state);
    knit__free(keep);
    if (rc == 0)
        rc = batch_without(s->batch, drop, &rest);
    knit__free(drop);
    if (rc) {
        knit_batch_free(rest);
        return 0;
    }
    c->st.rolled_back += nrefused;
    logf_(c, LOG_INFO,
          "%zu changes of %s refused by the relay were rolled back; pushing the "
          "other %zu",
          nrefused, s->ns, rest->nchanges);
    knit_batch_free(s->batch);
    s->batch = rest;
    s->attempts = 0;
    if (rest->nchanges == 0) {
        /* Nothing left of it: its watermark is reached as if ACKed (the
        ** rolled-back cells are no longer this replica's writes). */
        s->state = SLOT_ACKED;
        complete_prefix(c, now);
    } else {
        s->state = SLOT_QUEUED;
        s->retry_at = now;
    }
    send_queued(c, now);
    return 1;
}

static uint64_t rng_next(knit_client_t *c)
{
    uint64_t z = (c->rng += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Full jitter (design note 4). */
static uint64_t backoff_delay(knit_client_t *c)
{
    uint64_t bound = c->cfg.backoff_base_ms;
    for (unsigned i = 0; i < c->attempt && bound < c->cfg.backoff_max_ms; i++)
        bound *= 2;
    if (bound > c->cfg.backoff_max_ms)
        bound = c->cfg.backoff_max_ms;
    if (c->attempt < 64)
        c->attempt++;
    return rng_next(c) % (bound + 1);
}

static char *dup_or_null(const char *s, int *failed)
{
    char *d;
    if (!s)
        return NULL;
    if (!(d = knit__strdup(s)))
        *failed = 1;
    return d;
}

static int send_msg(knit_client_t *c, const knit_msg_t *m, uint64_t now)
{
    int rc = knit_msg_encode(m, &c->enc, &c->out);
    if (rc == 0)
        c->last_tx = now;
    return rc;
}

static int granted(const knit_client_t *c, const char *ns)
{
    for (size_t i = 0; i < c->ngranted; i++)
        if (strcmp(c->granted[i], ns) == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Sessions                                                                 */

static void slot_release(slot_t *s)
{
    knit__free(s->ns);
    knit_batch_free(s->batch);
    memset(s, 0, sizeof *s);
}

/* Forgets everything of the session (design note 2). */
static void save_cursors(knit_client_t *c, uint64_t now, int wait);

static void session_reset(knit_client_t *c)
{
    save_cursors(c, 0, 1); /* note 12: the next session starts from them */
    c->save_retry_at = 0;
    for (size_t i = 0; i < c->nslots; i++)
        slot_release(&c->slots[i]);
    c->nslots = 0;
    for (size_t i = 0; i < c->nsubs; i++)
        knit__free(c->subs[i].ns);
    knit__free(c->subs);
    c->subs = NULL;
    c->nsubs = 0;
    for (size_t i = 0; i < c->ngranted; i++)
        knit__free(c->granted[i]);
    knit__free(c->granted);
    c->granted = NULL;
    c->ngranted = 0;
    knit__free(c->principal);
    c->principal = NULL;
    knit_frame_reader_free(&c->rd);
    knit_buf_free(&c->out);
    knit_codec_limits_default(&c->enc);
    c->pushed_upto = c->durable;
    c->push_limit = c->cfg.max_push;
    c->dirty = 1;
    c->dirty_remote = 0;
    c->halted = 0;
    c->synced = 0;
    c->claim_sent = 0;
    c->check_wait = 0;
    c->ntodo = 0;
}

/* Reports the watermark to the glue (design note 1). */
static void report_acks(knit_client_t *c, uint64_t now)
{
    uint64_t target = c->durable < c->ceiling ? c->durable : c->ceiling;
    int rc;
    c->last_flush = now;
    if (target <= c->reported)
        return;
    rc = c->io.acked ? c->io.acked(c->io.data, target) : 0;
    c->ack_retry_at = rc == KNIT_EBUSY ? now + SAVE_RETRY_MS : 0; /* note 12 */
    if (rc) {
        if (rc != KNIT_EBUSY)
            logf_(c, LOG_WARN, "cannot record acknowledged version %llu: %s (will retry)",
                  (unsigned long long)target, knit_strerror(rc));
        return;
    }
    c->reported = target;
    c->st.acked = target;
}

/* Ends the connection: optionally tells the relay why (ERROR), then asks
** the glue to close.  Error events are raised here, for failures the
** engine detected and for the relay's ERROR (claim: see emit_error_claim). */
static void close_conn_claim(knit_client_t *c, int code, int send_error, const char *msg,
                             const char *claim)
{
    if (c->state != KNIT_CLIENT_CONNECTING && c->state != KNIT_CLIENT_HELLO_SENT &&
        c->state != KNIT_CLIENT_READY)
        return;
    if (send_error && c->state != KNIT_CLIENT_CONNECTING) {
        knit_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = KNIT_MSG_ERROR;
        m.u.error.code = code;
        m.u.error.message = msg;
        knit_msg_encode(&m, &c->enc, &c->out);
    }
    /* KNIT_EAUTH during a session means the token expired: the next
    ** connection may bring a fresh one.  At HELLO it is a refusal. */
    int fatal = is_fatal(code) && !(code == KNIT_EAUTH && c->state == KNIT_CLIENT_READY);
    set_state(c, KNIT_CLIENT_CLOSING, 0);
    c->fatal_close = fatal;
    if (code)
        emit_error_claim(c, code, fatal, 0, msg, claim);
}

static void close_conn(knit_client_t *c, int code, int send_error, const char *msg)
{
    close_conn_claim(c, code, send_error, msg, NULL);
}

static void close_proto(knit_client_t *c, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* A protocol violation by the relay: ERROR EPROTO, then close. */
static void close_proto(knit_client_t *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    close_conn(c, KNIT_EPROTO, 1, msg);
}

static int all_caught_up(const knit_client_t *c)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (!c->subs[i].caught_up || c->subs[i].resub)
            return 0;
    return 1;
}

static size_t count_sent(const knit_client_t *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->nslots; i++)
        n += c->slots[i].state == SLOT_SENT;
    return n;
}

/* 1 while an own range (design note 7) is not behind the cursor yet. */
static int own_pending(const knit_client_t *c)
{
    for (size_t i = 0; i < c->nsubs; i++)
        for (size_t j = 0; j < c->subs[i].nown; j++)
            if (c->subs[i].own[j].last > c->subs[i].cursor)
                return 1;
    return 0;
}

static void check_synced(knit_client_t *c)
{
    int now_synced = c->state == KNIT_CLIENT_READY && !c->stopping && all_caught_up(c) &&
                     c->nslots == 0 && !c->dirty && !c->dirty_remote && !c->halted &&
                     !own_pending(c);
    if (now_synced && !c->synced) {
        knit_client_event_t ev;
        c->synced = 1;
        memset(&ev, 0, sizeof ev);
        ev.type = KNIT_CLIENT_EV_SYNCED;
        logf_(c, LOG_DEBUG, "synced: acknowledged up to %llu", (unsigned long long)c->durable);
        emit(c, &ev);
    } else if (!now_synced) {
        c->synced = 0;
    }
}

/* ---------------------------------------------------------------------- */
/* Splitting local changes into pushes                                      */

/* A batch being filled with the changes of one namespace, whose site and
** table dictionaries are copies of the source's, in the same order, so
** every index (and every site number inside an OR-set state) stays valid
** without remapping. */
typedef struct chunk_s {
    knit_batch_t *b; /* being filled, NULL when none is open */
    uint32_t ns;     /* source namespace index it holds */
    size_t unit;     /* source unit last begun in it (SIZE_MAX: none) */
} chunk_t;

static int chunk_open(const knit_batch_t *src, uint32_t ns, chunk_t *ch)
{
    knit_batch_t *b = NULL;
    uint32_t idx;
    int rc = knit_batch_new(&b);
    if (!rc)
        rc = knit_batch_ns(b, src->ns[ns], &idx);
    for (size_t i = 0; !rc && i < src->nsites; i++)
        rc = knit_batch_site(b, &src->sites[i], &idx);
    for (size_t i = 0; !rc && i < src->ntables; i++) {
        const knit_batch_table_t *t = &src->tables[i];
        rc = knit_batch_table(b, t->name, t->npk, t->ncols, (const char *const *)t->cols, t->orset,
                              &idx);
    }
    if (rc) {
        knit_batch_free(b);
        return rc;
    }
    ch->b = b;
    ch->ns = ns;
    ch->unit = SIZE_MAX;
    return 0;
}

typedef struct slotlist_s {
    slot_t *v;  /* slots made */
    size_t n;   /* count */
    size_t cap; /* allocated */
} slotlist_t;

static void slotlist_free(slotlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        slot_release(&l->v[i]);
    knit__free(l->v);
    memset(l, 0, sizeof *l);
}

/* Closes the open chunk into a new queued slot covering `covers`.  Its
** units become one (design note 11). */
static int chunk_close(const knit_batch_t *src, chunk_t *ch, uint64_t covers, slotlist_t *l)
{
    slot_t *s;
    int rc;
    if (!ch->b)
        return 0;
    if ((rc = knit_batch_coalesce(ch->b)) != 0)
        return rc;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        slot_t *v = knit__realloc(l->v, cap * sizeof *v);
        if (!v)
            return KNIT_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    s = &l->v[l->n];
    memset(s, 0, sizeof *s);
    if (!(s->ns = knit__strdup(src->ns[ch->ns])))
        return KNIT_ENOMEM;
    s->batch = ch->b;
    s->covers = covers;
    s->state = SLOT_QUEUED;
    l->n++;
    ch->b = NULL;
    return 0;
}

/* Splits src into slots of at most `limit` changes, one namespace each,
** keeping units whole where they fit and in order everywhere.  A slot's
** covers is the version of the last unit wholly placed when it closed
** (starting from `start`), the last slot's at least `covers`.  Changes of
** namespaces `c` may not write are left out and lower *ceiling to just
** before their unit.  On error nothing is kept. */
static int split_batch(knit_client_t *c, const knit_batch_t *src, size_t limit, uint64_t start,
                       uint64_t covers, slotlist_t *l, uint64_t *ceiling)
{
    chunk_t ch = {NULL, 0, SIZE_MAX};
    uint64_t done = start;
    uint8_t *ok = knit__calloc(src->nns ? src->nns : 1, 1);
    int rc = ok ? 0 : KNIT_ENOMEM;

    if (limit == 0)
        limit = 1;
    /* An organization not granted is pushed all the same: the relay
    ** refuses its changes one by one, and the replica rolls them back
    ** (ARCHITECTURE.md, "Organization namespaces"), instead of leaving them
    ** pending for ever. */
    for (size_t i = 0; !rc && i < src->nns; i++)
        ok[i] = (uint8_t)(granted(c, src->ns[i]) || strncmp(src->ns[i], "org:", 4) == 0);
    for (size_t u = 0; !rc && u < src->ntxns; u++) {
        const knit_txn_t *t = &src->txns[u];
        int skipped = 0;
        for (uint32_t ns = 0; !rc && ns < src->nns; ns++) {
            size_t piece = 0;
            for (size_t i = t->first; i < t->first + t->count; i++)
                piece += src->changes[i].ns == ns;
            /* A unit that does not fit what is left starts a new push. */
            if (piece && ok[ns] && ch.b && ch.b->nchanges + piece > limit)
                rc = chunk_close(src, &ch, done, l);
            for (size_t i = t->first; !rc && i < t->first + t->count; i++) {
                const knit_change_t *x = &src->changes[i];
                knit_change_t copy;
                if (x->ns != ns)
                    continue;
                if (!ok[ns]) {
                    skipped = 1;
                    continue;
                }
                if (ch.b && (ch.ns != ns || ch.b->nchanges >= limit))
                    rc = chunk_close(src, &ch, done, l);
                if (!rc && !ch.b)
                    rc = chunk_open(src, ns, &ch);
                if (!rc && ch.unit != u) {
                    rc = knit_batch_begin(ch.b, t->version);
                    ch.unit = u;
                }
                if (rc)
                    break;
                copy = *x;
                copy.ns = 0;
                rc = knit_batch_add(ch.b, &copy);
            }
        }
        if (skipped && t->version - 1 < *ceiling)
            *ceiling = t->version - 1;
        if (t->version > done)
            done = t->version;
    }
    if (!rc)
        rc = chunk_close(src, &ch, done > covers ? done : covers, l);
    knit__free(ok);
    if (rc) {
        knit_batch_free(ch.b);
        slotlist_free(l);
    }
    return rc;
}

/* Inserts the slots of l at position at (replacing nothing). */
static int slots_insert(knit_client_t *c, size_t at, slotlist_t *l)
{
    if (c->nslots + l->n > c->capslots) {
        size_t cap = c->capslots ? c->capslots : 8;
        slot_t *v;
        while (cap < c->nslots + l->n)
            cap *= 2;
        if (!(v = knit__realloc(c->slots, cap * sizeof *v)))
            return KNIT_ENOMEM;
        c->slots = v;
        c->capslots = cap;
    }
    memmove(&c->slots[at + l->n], &c->slots[at], (c->nslots - at) * sizeof *c->slots);
    memcpy(&c->slots[at], l->v, l->n * sizeof *l->v);
    c->nslots += l->n;
    knit__free(l->v);
    memset(l, 0, sizeof *l);
    return 0;
}

/* Replaces slot i by smaller pushes (the relay found it too big).  Returns
** KNIT_ETOOBIG when it holds a single change. */
static int split_slot(knit_client_t *c, size_t i)
{
    slot_t *s = &c->slots[i];
    slotlist_t l = {NULL, 0, 0};
    uint64_t ceiling = UINT64_MAX;
    size_t half = s->batch->nchanges / 2;
    int rc;
    if (s->batch->nchanges <= 1)
        return KNIT_ETOOBIG;
    /* Pieces start from 0: a piece covering less than the truth is safe. */
    rc = split_batch(c, s->batch, half, 0, s->covers, &l, &ceiling);
    if (rc)
        return rc;
    if (half < c->push_limit)
        c->push_limit = half;
    slot_release(s);
    memmove(&c->slots[i], &c->slots[i + 1], (c->nslots - i - 1) * sizeof *c->slots);
    c->nslots--;
    if ((rc = slots_insert(c, i, &l)) != 0) {
        /* The changes are dropped from this session only; the watermark
        ** cannot pass them, so the next session pushes them again. */
        slotlist_free(&l);
        c->halted = 1;
    }
    logf_(c, LOG_INFO, "push split: at most %zu changes per push now", c->push_limit);
    return rc;
}

/* Sends queued slots while the window has room (design note 1). */
static void send_queued(knit_client_t *c, uint64_t now)
{
    size_t sent = count_sent(c);
    for (size_t i = 0; i < c->nslots && c->state == KNIT_CLIENT_READY && !c->halted; i++) {
        slot_t *s = &c->slots[i];
        knit_msg_t m;
        int rc;
        if (sent >= c->cfg.max_inflight)
            break;
        if (s->state != SLOT_QUEUED || s->retry_at > now)
            continue;
        memset(&m, 0, sizeof m);
        m.type = KNIT_MSG_PUSH;
        m.u.push.id = c->next_id + 1;
        m.u.push.ns = s->ns;
        m.u.push.batch = s->batch;
        rc = send_msg(c, &m, now);
        if (rc == KNIT_ETOOBIG) {
            /* Bigger than the relay's frame: send it in smaller parts. */
            rc = split_slot(c, i);
            if (rc == 0) {
                i--;
                continue;
            }
        }
        if (rc) {
            char msg[256];
            snprintf(msg, sizeof msg, "cannot push %zu changes of %s: %s", s->batch->nchanges,
                     s->ns,
                     rc == KNIT_ETOOBIG ? "one change is larger than the relay's frame limit"
                                        : knit_strerror(rc));
            c->halted = 1;
            emit_error(c, rc, rc != KNIT_ENOMEM, 1, msg);
            return;
        }
        s->id = ++c->next_id;
        s->state = SLOT_SENT;
        sent++;
        c->st.pushes++;
        c->st.pushed_changes += s->batch->nchanges;
        logf_(c, LOG_DEBUG, "push %llu: %zu changes of %s, covers %llu", (unsigned long long)s->id,
              s->batch->nchanges, s->ns, (unsigned long long)s->covers);
    }
}

/* Drops the leading ACKed slots, moving the watermark (design note 1). */
static void complete_prefix(knit_client_t *c, uint64_t now)
{
    size_t k = 0;
    while (k < c->nslots && c->slots[k].state == SLOT_ACKED) {
        if (c->slots[k].covers > c->durable)
            c->durable = c->slots[k].covers;
        slot_release(&c->slots[k]);
        k++;
    }
    if (k == 0)
        return;
    memmove(&c->slots[0], &c->slots[k], (c->nslots - k) * sizeof *c->slots);
    c->nslots -= k;
    report_acks(c, now);
}

/* Nothing to push up to version: the watermark may pass it once every
** push before it is acknowledged. */
static void cover_empty(knit_client_t *c, uint64_t version)
{
    if (version > c->pushed_upto)
        c->pushed_upto = version;
    if (c->nslots == 0) {
        if (version > c->durable)
            c->durable = version;
    } else if (version > c->slots[c->nslots - 1].covers) {
        c->slots[c->nslots - 1].covers = version;
    }
}

/* Stopping: close once nothing is pending or the grace time is over. */
static void maybe_finish(knit_client_t *c, uint64_t now)
{
    if (!c->stopping || c->state != KNIT_CLIENT_READY)
        return;
    if ((c->nslots == 0 && !c->dirty) || c->halted || now >= c->stop_deadline) {
        if (c->nslots)
            logf_(c, LOG_WARN, "stopping with %zu pushes unacknowledged (pushed again next time)",
                  c->nslots);
        close_conn(c, 0, 0, "stopping");
    }
}

/* ---------------------------------------------------------------------- */
/* Messages from the relay                                                  */

static void on_welcome(knit_client_t *c, const knit_welcome_t *w, uint64_t now)
{
    knit_msg_t m;
    knit_sub_t *subs = NULL;
    int rc;

    if (w->version < KNIT_PROTO_VERSION_MIN || w->version > KNIT_PROTO_VERSION_MAX) {
        close_proto(c, "relay chose protocol version %u, outside %d..%d", w->version,
                    KNIT_PROTO_VERSION_MIN, KNIT_PROTO_VERSION_MAX);
        return;
    }
    c->limits = w->limits;
    c->features = w->features;
    c->check_next = now + c->cfg.check_ms;
    if (!(c->principal = knit__strdup(w->principal)))
        goto nomem;
    if (w->ngranted && !(c->granted = knit__calloc(w->ngranted, sizeof *c->granted)))
        goto nomem;
    for (size_t i = 0; i < w->ngranted; i++) {
        if (!(c->granted[i] = knit__strdup(w->granted[i])))
            goto nomem;
        c->ngranted++;
    }
    c->push_limit = c->cfg.max_push;
    if (c->limits.max_changes && c->limits.max_changes < c->push_limit)
        c->push_limit = (size_t)c->limits.max_changes;
    if (c->limits.max_frame && c->limits.max_frame < KNIT_DEFAULT_MAX_FRAME * (uint64_t)256)
        c->enc.max_frame = (size_t)c->limits.max_frame;
    if (c->enc.max_changes < c->push_limit)
        c->enc.max_changes = c->push_limit;

    /* The replica adopts the session's namespace before anything is read
    ** from it, so rows written before the first sync are pushed there. */
    if (c->io.ready && (rc = c->io.ready(c->io.data, w)) != 0) {
        char msg[600], why[400];
        snprintf(msg, sizeof msg, "cannot start the session as %s: %s", w->principal,
                 detail(c, rc, why, sizeof why));
        close_conn(c, rc, 0, msg);
        return;
    }
    /* Design note 6: the claimed rows move before any cursor or local
    ** change is read. */
    if (c->claim_sent) {
        if (c->io.claimed && (rc = c->io.claimed(c->io.data, c->claim_ns, w->principal)) != 0) {
            char msg[700], why[400];
            snprintf(msg, sizeof msg, "cannot move the rows of %s into %s: %s (claiming again)",
                     c->claim_ns, w->principal, detail(c, rc, why, sizeof why));
            close_conn(c, rc, 0, msg);
            return;
        }
        logf_(c, LOG_DEBUG, "claimed %s: its rows belong to %s now", c->claim_ns, w->principal);
        c->st.claims++;
        c->claim_sent = 0;
        knit_client_set_claim(c, NULL);
    }
    if (w->ngranted) {
        if (!(c->subs = knit__calloc(w->ngranted, sizeof *c->subs)) ||
            !(subs = knit__calloc(w->ngranted, sizeof *subs)))
            goto nomem;
        for (size_t i = 0; i < w->ngranted; i++) {
            sub_t *s = &c->subs[i];
            if (!(s->ns = knit__strdup(w->granted[i])))
                goto nomem;
            c->nsubs++;
            if (c->io.cursor && (rc = c->io.cursor(c->io.data, s->ns, &s->cursor)) != 0) {
                char msg[600], why[400];
                snprintf(msg, sizeof msg, "cannot read the cursor of %s: %s", s->ns,
                         detail(c, rc, why, sizeof why));
                knit__free(subs);
                close_conn(c, rc, 0, msg);
                return;
            }
            s->saved = s->cursor;
            subs[i].ns = s->ns;
            subs[i].cursor = s->cursor;
        }
        memset(&m, 0, sizeof m);
        m.type = KNIT_MSG_SUBSCRIBE;
        m.u.subscribe.subs = subs;
        m.u.subscribe.nsubs = w->ngranted;
        rc = send_msg(c, &m, now);
        knit__free(subs);
        subs = NULL;
        if (rc) {
            close_conn(c, rc, 0, "cannot encode SUBSCRIBE");
            return;
        }
    }
    c->st.sessions++;
    c->pushed_upto = c->durable;
    c->dirty = 1;
    set_state(c, KNIT_CLIENT_READY, 0);
    logf_(c, LOG_DEBUG, "session as %s (protocol %u, %zu namespaces, %llu changes per push)",
          c->principal, w->version, c->nsubs, (unsigned long long)c->push_limit);
    return;
nomem:
    knit__free(subs);
    close_conn(c, KNIT_ENOMEM, 0, "out of memory");
}

static void on_error(knit_client_t *c, const knit_error_msg_t *e)
{
    char msg[300];
    int code = e->code < 0 ? e->code : KNIT_EPROTO;
    if (code == KNIT_EVERSION)
        snprintf(msg, sizeof msg, "relay: %s (it speaks versions %u..%u, we %d..%d)",
                 e->message && *e->message ? e->message : knit_strerror(code), e->min_version,
                 e->max_version, KNIT_PROTO_VERSION_MIN, KNIT_PROTO_VERSION_MAX);
    else
        snprintf(msg, sizeof msg, "relay: %s (%s)",
                 e->message && *e->message ? e->message : knit_strerror(code), knit_err_name(code));
    /* The relay closes after ERROR; nothing is sent back.  An answer to a
    ** HELLO that claimed names the claim: the relay refuses a bad claim
    ** like a bad credential (KNIT_EAUTH), and the application may choose
    ** to sign in without it. */
    close_conn_claim(c, code, 0, msg,
                     c->state == KNIT_CLIENT_HELLO_SENT && c->claim_sent ? c->claim_ns : NULL);
}

static sub_t *find_sub(knit_client_t *c, const char *ns)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (strcmp(c->subs[i].ns, ns) == 0)
            return &c->subs[i];
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Our own units (design note 7)                                            */

/* Remembers that sequences first..last of s are our own acknowledged
** units, keeping the list sorted and merged. */
static void own_add(sub_t *s, uint64_t first, uint64_t last)
{
    size_t i = 0, j;
    while (i < s->nown && s->own[i].last + 1 < first)
        i++;
    j = i;
    while (j < s->nown && s->own[j].first <= last + 1) {
        if (s->own[j].first < first)
            first = s->own[j].first;
        if (s->own[j].last > last)
            last = s->own[j].last;
        j++;
    }
    /* own[i..j) merge into one entry at i. */
    if (j == i) {
        if (s->nown == MAX_OWN) {
            if (i == 0)
                return; /* older than all we remember: forget it */
            memmove(&s->own[0], &s->own[1], (size_t)(i - 1) * sizeof *s->own);
            i--;
            s->nown--;
        }
        memmove(&s->own[i + 1], &s->own[i], (s->nown - i) * sizeof *s->own);
        s->nown++;
    } else {
        memmove(&s->own[i + 1], &s->own[j], (s->nown - j) * sizeof *s->own);
        s->nown -= j - i - 1;
    }
    s->own[i].first = first;
    s->own[i].last = last;
}

/* 1 if every sequence in (from, to] is one of our own units. */
static int own_covers(const sub_t *s, uint64_t from, uint64_t to)
{
    if (to <= from)
        return 0;
    for (size_t i = 0; i < s->nown; i++)
        if (s->own[i].first <= from + 1 && s->own[i].last >= to)
            return 1;
    return 0;
}

/* Forgets the ranges the relay has sent past (no echo of them can come). */
static void own_trim(sub_t *s, uint64_t upto)
{
    size_t k = 0;
    while (k < s->nown && s->own[k].last <= upto)
        k++;
    memmove(&s->own[0], &s->own[k], (s->nown - k) * sizeof *s->own);
    s->nown -= k;
}

/* Saves the cursors that moved past own pushes (note 12).  wait = 0: without
** waiting for another writer (io.save_cursor); wait = 1: through io.apply,
** which waits, when the session ends. */
static void save_cursors(knit_client_t *c, uint64_t now, int wait)
{
    for (size_t i = 0; i < c->nsubs; i++) {
        sub_t *s = &c->subs[i];
        int rc = 0;
        if (s->cursor == s->saved)
            continue;
        if (!wait && c->io.save_cursor) {
            rc = c->io.save_cursor(c->io.data, s->ns, s->saved, s->cursor);
        } else if (c->io.apply) {
            knit_batch_t *b = NULL;
            if ((rc = knit_batch_new(&b)) == 0)
                rc = c->io.apply(c->io.data, s->ns, s->saved, s->cursor, b);
            knit_batch_free(b);
        }
        if (rc) {
            if (rc != KNIT_EBUSY)
                logf_(c, LOG_WARN,
                      "cannot save the cursor of %s past our own pushes: %s (will retry)", s->ns,
                      knit_strerror(rc));
            c->save_retry_at = now + (rc == KNIT_EBUSY ? SAVE_RETRY_MS : c->cfg.ack_flush_ms);
            return;
        }
        s->saved = s->cursor;
        /* Design note 5: the apply stamped local writes it found; read again. */
        c->dirty_remote = 1;
    }
    c->save_retry_at = 0;
}

/* 1 while a cursor moved past own pushes is not saved yet. */
static int cursors_unsaved(const knit_client_t *c)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].cursor != c->subs[i].saved)
            return 1;
    return 0;
}

/* Moves the cursor of s to `to` without applying anything (note 12). */
static void move_cursor(knit_client_t *c, sub_t *s, uint64_t to, uint64_t now)
{
    s->cursor = to;
    if (now >= c->save_retry_at)
        save_cursors(c, now, 0);
}

/* Moves the cursor past own ranges that continue it. */
static void absorb(knit_client_t *c, sub_t *s, uint64_t now)
{
    for (size_t i = 0; i < s->nown; i++) {
        const own_t *o = &s->own[i];
        if (o->first > s->cursor + 1 || o->last <= s->cursor)
            continue;
        logf_(c, LOG_DEBUG, "%s: %llu..%llu are our own pushes; cursor %llu -> %llu", s->ns,
              (unsigned long long)o->first, (unsigned long long)o->last,
              (unsigned long long)s->cursor, (unsigned long long)o->last);
        move_cursor(c, s, o->last, now);
    }
}

static void on_deltas(knit_client_t *c, const knit_deltas_t *d, uint64_t now)
{
    sub_t *s = find_sub(c, d->ns);
    int rc;
    if (!s) {
        close_proto(c, "DELTAS for %.100s, which is not subscribed", d->ns);
        return;
    }
    if (d->from > s->cursor) {
        /* A gap (design note 3): ask once to continue from our cursor. */
        c->st.gaps++;
        if (!s->resub) {
            knit_msg_t m;
            knit_sub_t sub = {s->ns, s->cursor};
            logf_(c, LOG_INFO, "gap in %s: at %llu, relay sent from %llu; subscribing again", s->ns,
                  (unsigned long long)s->cursor, (unsigned long long)d->from);
            memset(&m, 0, sizeof m);
            m.type = KNIT_MSG_SUBSCRIBE;
            m.u.subscribe.subs = &sub;
            m.u.subscribe.nsubs = 1;
            if ((rc = send_msg(c, &m, now)) != 0) {
                close_conn(c, rc, 0, "cannot encode SUBSCRIBE");
                return;
            }
            s->resub = 1;
            s->caught_up = 0;
        }
        return;
    }
    if (own_covers(s, d->from, d->to)) {
        /* The echo of our own units (design note 7): nothing to apply. */
        if (d->to > s->cursor)
            move_cursor(c, s, d->to, now);
        c->st.echoes += d->batch->nchanges;
    } else if (d->batch->nchanges || d->to != s->cursor) {
        rc = c->io.apply ? c->io.apply(c->io.data, s->ns, d->from, d->to, d->batch) : 0;
        if (rc) {
            char msg[700], why[512];
            snprintf(msg, sizeof msg, "cannot apply %zu changes of %s (%llu..%llu): %s",
                     d->batch->nchanges, s->ns, (unsigned long long)d->from,
                     (unsigned long long)d->to, detail(c, rc, why, sizeof why));
            close_conn(c, rc, 0, msg);
            return;
        }
        /* Exactly `to`, as the replica records it (knit_apply_at): after a
        ** relay restored from an older backup resends from 0, the cursor
        ** follows it down (PROTOCOL.md 6.2), so the consistency check's
        ** answer at the relay's sequence counts again. */
        s->cursor = s->saved = d->to;
        c->st.deltas++;
        c->st.delta_changes += d->batch->nchanges;
        if (d->batch->nchanges)
            c->dirty_remote = 1;
    }
    own_trim(s, d->to);
    absorb(c, s, now);
    s->resub = 0;
    if (d->caught_up && !s->caught_up) {
        s->caught_up = 1;
        logf_(c, LOG_DEBUG, "%s caught up at %llu", s->ns, (unsigned long long)s->cursor);
        if (all_caught_up(c))
            c->attempt = 0; /* a healthy session (design note 4) */
    }
}

/* The slot answered by an ACK or REJECT: relays answer in the order the
** pushes were sent, so it must be the SENT slot with the smallest id. */
static slot_t *answered_slot(knit_client_t *c, uint64_t id, size_t *at)
{
    slot_t *best = NULL;
    for (size_t i = 0; i < c->nslots; i++) {
        slot_t *s = &c->slots[i];
        if (s->state == SLOT_SENT && (!best || s->id < best->id)) {
            best = s;
            *at = i;
        }
    }
    return best && best->id == id ? best : NULL;
}

static void on_ack(knit_client_t *c, const knit_ack_t *a, uint64_t now)
{
    size_t at = 0;
    slot_t *s = answered_slot(c, a->id, &at);
    if (!s) {
        close_proto(c, "ACK %llu answers no push in flight (or out of order)",
                    (unsigned long long)a->id);
        return;
    }
    (void)at;
    c->st.acks++;
    c->st.acked_changes += s->batch->nchanges;
    if (c->io.ack_seen)
        c->io.ack_seen(c->io.data, s->ns, s->batch);
    if (a->last_seq) {
        /* Design note 7: those sequences are ours. */
        sub_t *sub = find_sub(c, s->ns);
        if (a->first_seq == 0 || a->first_seq > a->last_seq) {
            close_proto(c, "ACK %llu names sequences %llu..%llu", (unsigned long long)a->id,
                        (unsigned long long)a->first_seq, (unsigned long long)a->last_seq);
            return;
        }
        if (sub) {
            own_add(sub, a->first_seq, a->last_seq);
            absorb(c, sub, now);
        }
    }
    s->state = SLOT_ACKED;
    complete_prefix(c, now);
    send_queued(c, now);
}

static void on_reject(knit_client_t *c, const knit_reject_t *r, uint64_t now)
{
    size_t at = 0;
    slot_t *s = answered_slot(c, r->id, &at);
    int toobig = 0, retry = 1, code = 0;
    const char *why = "";
    char msg[400];

    if (!s) {
        close_proto(c, "REJECT %llu answers no push in flight (or out of order)",
                    (unsigned long long)r->id);
        return;
    }
    c->st.rejects++;
    if (roll_back(c, s, r, now))
        return;
    for (size_t i = 0; i < r->nreasons; i++) {
        const knit_reason_t *x = &r->reasons[i];
        if (x->code == KNIT_ETOOBIG && x->change < 0)
            toobig = 1;
        else if (!is_retryable(x->code))
            retry = 0;
        if (i == 0 || (!is_retryable(x->code) && is_retryable(code))) {
            code = x->code;
            why = x->message && *x->message ? x->message : knit_strerror(x->code);
        }
    }
    if (toobig && retry) {
        s->state = SLOT_QUEUED;
        if (split_slot(c, at) == 0) {
            send_queued(c, now);
            return;
        }
        retry = 0;
        code = KNIT_ETOOBIG;
        why = "a single change is more than the relay accepts";
    }
    if (retry) {
        uint64_t delay = c->cfg.retry_ms;
        for (unsigned i = 0; i < s->attempts && delay < RETRY_MAX_MS; i++)
            delay *= 2;
        if (delay > RETRY_MAX_MS)
            delay = RETRY_MAX_MS;
        s->attempts++;
        s->state = SLOT_QUEUED;
        s->retry_at = now + delay;
        if (code == KNIT_ECLOCKSKEW) {
            /* It does not pass by itself: say so, as an error the user sees
            ** (sync-agent's last error, --once's verdict). */
            char line[400];
            snprintf(line, sizeof line,
                     "the relay refused %zu changes of %s: stamped ahead of its clock (%s); "
                     "is this device's clock set ahead? again in %llu ms",
                     s->batch->nchanges, s->ns, why, (unsigned long long)delay);
            emit_error(c, code, 0, 1, line);
        } else
            logf_(c, LOG_INFO,
                  "push of %zu changes of %s refused for now (%s: %s); again in %llu ms",
                  s->batch->nchanges, s->ns, knit_err_name(code), why, (unsigned long long)delay);
        send_queued(c, now);
        return;
    }
    /* Refused for good: the changes stay pending (never acknowledged), and
    ** pushing stops until the next session, which will try again. */
    s->state = SLOT_QUEUED;
    c->halted = 1;
    snprintf(msg, sizeof msg, "relay refused %zu changes of %s: %s (%s); they stay pending",
             s->batch->nchanges, s->ns, why, knit_err_name(code));
    emit_error(c, code, 1, 1, msg);
}

/* ---------------------------------------------------------------------- */
/* The consistency check (design note 10)                                  */

/* Synced: nothing to push, in flight or unread, everything caught up. */
static int quiet(const knit_client_t *c)
{
    return c->state == KNIT_CLIENT_READY && !c->stopping && all_caught_up(c) && c->nslots == 0 &&
           !c->dirty && !c->dirty_remote && !c->halted && !own_pending(c);
}

static void check_done(knit_client_t *c, uint64_t now, uint64_t delay)
{
    c->check_wait = 0;
    c->ntodo = 0;
    c->check_next = now + delay;
}

static void check_send(knit_client_t *c, uint64_t now, const uint32_t *fetch, size_t nfetch)
{
    knit_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_CHECK;
    m.u.check.id = ++c->check_id;
    m.u.check.ns = c->check_ns;
    m.u.check.digest = c->check_total;
    m.u.check.nbuckets = CHECK_BUCKETS;
    m.u.check.fetch = fetch;
    m.u.check.nfetch = nfetch;
    int rc = send_msg(c, &m, now);
    if (rc) {
        logf_(c, LOG_WARN, "consistency check of %s: cannot encode CHECK: %s", c->check_ns,
              knit_strerror(rc));
        check_done(c, now, c->cfg.check_ms);
        return;
    }
    c->check_wait = nfetch ? 2 : 1;
}

static void check_start(knit_client_t *c, uint64_t now)
{
    char why[400];
    sub_t *s = &c->subs[c->check_sub++ % c->nsubs];
    int rc =
        c->io.check_digest(c->io.data, s->ns, CHECK_BUCKETS, &c->check_total, c->check_buckets);
    if (rc == KNIT_EBUSY) {
        logf_(c, LOG_DEBUG, "consistency check of %s: local writes not pushed yet, later", s->ns);
        check_done(c, now, CHECK_RETRY_MS);
        return;
    }
    if (rc) {
        logf_(c, LOG_WARN, "consistency check of %s: cannot read the replica's digests: %s", s->ns,
              detail(c, rc, why, sizeof why));
        check_done(c, now, c->cfg.check_ms);
        return;
    }
    knit__free(c->check_ns);
    if (!(c->check_ns = knit__strdup(s->ns))) {
        check_done(c, now, c->cfg.check_ms);
        return;
    }
    c->check_seq = s->cursor;
    check_send(c, now, NULL, 0);
}

static void check_fetch(knit_client_t *c, uint64_t now)
{
    check_send(c, now, c->check_todo, c->ntodo < c->check_round ? c->ntodo : c->check_round);
}

static void on_checked(knit_client_t *c, const knit_checked_t *a, uint64_t now)
{
    char here[65], there[65], why[400];
    size_t n, rows = 0, cells = 0;
    if (!c->check_wait || a->id != c->check_id || !c->check_ns || strcmp(a->ns, c->check_ns) != 0)
        return; /* not the answer to the CHECK in flight */
    if (c->check_wait == 1) {
        sub_t *s = find_sub(c, a->ns);
        if (!s || a->seq != c->check_seq || s->cursor != c->check_seq || !quiet(c)) {
            logf_(c, LOG_DEBUG,
                  "consistency check of %s: not comparable (relay at %llu, here %llu)", a->ns,
                  (unsigned long long)a->seq, (unsigned long long)c->check_seq);
            check_done(c, now, CHECK_RETRY_MS);
            return;
        }
        c->st.checks++;
        if (knit_digest_equal(&a->digest, &c->check_total)) {
            logf_(c, LOG_DEBUG, "consistency check of %s at sequence %llu: equal", a->ns,
                  (unsigned long long)a->seq);
            check_done(c, now, c->cfg.check_ms);
            return;
        }
        c->st.check_found++;
        c->ntodo = 0;
        for (size_t i = 0; i < a->nbuckets && i < CHECK_BUCKETS; i++)
            if (!knit_digest_equal(&a->buckets[i], &c->check_buckets[i]))
                c->check_todo[c->ntodo++] = (uint32_t)i;
        knit_digest_hex(&c->check_total, here);
        knit_digest_hex(&a->digest, there);
        logf_(c, LOG_WARN,
              "consistency check: %s differs from the relay at sequence %llu (digest %.16s here, "
              "%.16s at the relay): %zu of %d buckets differ%s",
              a->ns, (unsigned long long)a->seq, here, there, c->ntodo, CHECK_BUCKETS,
              c->ntodo ? ", repairing" : "; cannot tell which rows, not repaired");
        if (!c->ntodo) {
            check_done(c, now, c->cfg.check_ms);
            return;
        }
        c->check_rows = c->check_cells = 0;
        c->check_round = CHECK_FETCH;
        check_fetch(c, now);
        return;
    }
    n = c->ntodo < c->check_round ? c->ntodo : c->check_round;
    if (!a->state) {
        /* The relay could not fit the cells in one frame: fetch fewer. */
        if (c->check_round > 1) {
            c->check_round /= 2;
            check_fetch(c, now);
        } else {
            logf_(c, LOG_WARN,
                  "consistency check of %s: the relay cannot send bucket %u; "
                  "not repaired",
                  a->ns, c->check_todo[0]);
            check_done(c, now, c->cfg.check_ms);
        }
        return;
    }
    int rc = c->io.check_repair(c->io.data, a->ns, CHECK_BUCKETS, c->check_todo, n, a->state, &rows,
                                &cells);
    if (rc) {
        logf_(c, LOG_WARN, "consistency check of %s: cannot repair: %s (checking again)", a->ns,
              detail(c, rc, why, sizeof why));
        check_done(c, now, rc == KNIT_EBUSY ? CHECK_RETRY_MS : c->cfg.check_ms);
        return;
    }
    c->check_rows += rows;
    c->check_cells += cells;
    memmove(c->check_todo, c->check_todo + n, (c->ntodo - n) * sizeof *c->check_todo);
    c->ntodo -= n;
    c->dirty = 1; /* restored cells of this replica are pushed again */
    c->synced = 0;
    if (c->ntodo) {
        check_fetch(c, now);
        return;
    }
    c->st.check_repaired++;
    c->st.check_rows += c->check_rows;
    c->st.check_cells += c->check_cells;
    logf_(c, LOG_WARN,
          "consistency check: repaired %s: %zu rows restored from the relay's state, %zu cells "
          "the relay lacked pushed again",
          a->ns, c->check_rows, c->check_cells);
    check_done(c, now, c->cfg.check_ms);
}

static void on_frame(knit_client_t *c, const uint8_t *p, size_t n, uint64_t now)
{
    knit_msg_t m;
    const char *why = NULL;
    int rc = knit_msg_decode(p, n, &c->dec, &m, &why);
    if (rc) {
        close_conn(c, rc == KNIT_ENOMEM ? rc : KNIT_EPROTO, rc != KNIT_ENOMEM,
                   why ? why : "malformed message from the relay");
        return;
    }
    if (c->state == KNIT_CLIENT_HELLO_SENT) {
        if (m.type == KNIT_MSG_WELCOME)
            on_welcome(c, &m.u.welcome, now);
        else if (m.type == KNIT_MSG_ERROR)
            on_error(c, &m.u.error);
        else
            close_proto(c, "expected WELCOME, got %s", knit_msg_type_name(m.type));
        knit_msg_free(&m);
        return;
    }
    switch (m.type) {
    case KNIT_MSG_DELTAS:
        on_deltas(c, &m.u.deltas, now);
        break;
    case KNIT_MSG_ACK:
        on_ack(c, &m.u.ack, now);
        break;
    case KNIT_MSG_REJECT:
        on_reject(c, &m.u.reject, now);
        break;
    case KNIT_MSG_PING: {
        knit_msg_t pong;
        memset(&pong, 0, sizeof pong);
        pong.type = KNIT_MSG_PONG;
        pong.u.ping.nonce = m.u.ping.nonce;
        if ((rc = send_msg(c, &pong, now)) != 0)
            close_conn(c, rc, 0, "cannot encode PONG");
        break;
    }
    case KNIT_MSG_PONG:
        break;
    case KNIT_MSG_CHECKED:
        on_checked(c, &m.u.checked, now);
        break;
    case KNIT_MSG_ERROR:
        on_error(c, &m.u.error);
        break;
    default:
        close_proto(c, "unexpected %s from the relay", knit_msg_type_name(m.type));
    }
    knit_msg_free(&m);
}

/* ---------------------------------------------------------------------- */
/* API                                                                      */

int knit_client_new(const knit_client_config_t *cfg, const knit_client_io_t *io,
                    knit_client_t **out) /* see proto_client.h */
{
    knit_client_t *c;
    int failed = 0, rc;
    *out = NULL;
    if (!cfg || !io)
        return KNIT_EINVAL;
    if (!(c = knit__calloc(1, sizeof *c)))
        return KNIT_ENOMEM;
    c->io = *io;
    c->cfg = *cfg;
    if (!c->cfg.max_inflight)
        c->cfg.max_inflight = DEF_MAX_INFLIGHT;
    if (!c->cfg.max_push)
        c->cfg.max_push = DEF_MAX_PUSH;
    if (!c->cfg.max_frame)
        c->cfg.max_frame = KNIT_DEFAULT_MAX_FRAME;
    if (!c->cfg.backoff_base_ms)
        c->cfg.backoff_base_ms = DEF_BACKOFF_BASE_MS;
    if (!c->cfg.backoff_max_ms)
        c->cfg.backoff_max_ms = DEF_BACKOFF_MAX_MS;
    if (c->cfg.backoff_max_ms < c->cfg.backoff_base_ms)
        c->cfg.backoff_max_ms = c->cfg.backoff_base_ms;
    if (!c->cfg.handshake_ms)
        c->cfg.handshake_ms = DEF_HANDSHAKE_MS;
    if (!c->cfg.retry_ms)
        c->cfg.retry_ms = DEF_RETRY_MS;
    if (!c->cfg.ack_flush_ms)
        c->cfg.ack_flush_ms = DEF_ACK_FLUSH_MS;
    if (!c->cfg.check_ms)
        c->cfg.check_ms = DEF_CHECK_MS;
    c->check_buckets = knit__calloc(CHECK_BUCKETS, sizeof *c->check_buckets);
    c->check_todo = knit__calloc(CHECK_BUCKETS, sizeof *c->check_todo);
    if (!c->check_buckets || !c->check_todo)
        failed = 1;
    c->agent = dup_or_null(cfg->agent, &failed);
    c->cfg.agent = c->agent;
    c->rng = cfg->seed;
    c->durable = c->reported = c->pushed_upto = cfg->acked;
    c->st.acked = cfg->acked;
    c->ceiling = UINT64_MAX;
    c->push_limit = c->cfg.max_push;
    c->dirty = 1;
    c->state = KNIT_CLIENT_IDLE;
    knit_codec_limits_default(&c->dec);
    c->dec.max_frame = c->cfg.max_frame;
    knit_codec_limits_default(&c->enc);
    c->cfg.cred.kind = 0;
    c->cfg.claim.kind = 0;
    if (failed || knit_client_set_cred(c, &cfg->cred) != 0) {
        knit_client_free(c);
        return KNIT_ENOMEM;
    }
    if ((rc = knit_client_set_claim(c, &cfg->claim)) != 0) {
        knit_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void knit_client_free(knit_client_t *c) /* see proto_client.h */
{
    if (!c)
        return;
    session_reset(c);
    knit__free(c->slots);
    knit__free(c->cred_id);
    if (c->cred_secret)
        memset(c->cred_secret, 0, strlen(c->cred_secret));
    knit__free(c->cred_secret);
    if (c->cred_token)
        memset(c->cred_token, 0, strlen(c->cred_token));
    knit__free(c->cred_token);
    knit_client_set_claim(c, NULL);
    knit__free(c->agent);
    knit__free(c->check_ns);
    knit__free(c->check_buckets);
    knit__free(c->check_todo);
    knit__free(c);
}

int knit_client_set_cred(knit_client_t *c, const knit_cred_t *cred) /* see proto_client.h */
{
    int failed = 0;
    char *id = dup_or_null(cred->id, &failed);
    char *secret = dup_or_null(cred->secret, &failed);
    char *token = dup_or_null(cred->token, &failed);
    if (failed) {
        knit__free(id);
        knit__free(secret);
        knit__free(token);
        return KNIT_ENOMEM;
    }
    knit__free(c->cred_id);
    if (c->cred_secret)
        memset(c->cred_secret, 0, strlen(c->cred_secret));
    knit__free(c->cred_secret);
    if (c->cred_token)
        memset(c->cred_token, 0, strlen(c->cred_token));
    knit__free(c->cred_token);
    c->cred_id = id;
    c->cred_secret = secret;
    c->cred_token = token;
    c->cfg.cred.kind = cred->kind;
    c->cfg.cred.id = id;
    c->cfg.cred.secret = secret;
    c->cfg.cred.token = token;
    return 0;
}

int knit_client_set_claim(knit_client_t *c, const knit_cred_t *claim) /* see proto_client.h */
{
    char ns[KNIT_PRINCIPAL_MAX];
    char *id = NULL, *secret = NULL;
    if (claim && claim->kind != 0) {
        if (claim->kind != KNIT_CRED_ANON || !claim->id || !claim->secret ||
            knit_auth_anon_principal(claim->id, ns, sizeof ns) != 0)
            return KNIT_EINVAL;
        id = knit__strdup(claim->id);
        secret = knit__strdup(claim->secret);
        if (!id || !secret) {
            knit__free(id);
            knit__free(secret);
            return KNIT_ENOMEM;
        }
    } else {
        ns[0] = '\0';
    }
    knit__free(c->claim_id);
    if (c->claim_secret)
        memset(c->claim_secret, 0, strlen(c->claim_secret));
    knit__free(c->claim_secret);
    c->claim_id = id;
    c->claim_secret = secret;
    snprintf(c->claim_ns, sizeof c->claim_ns, "%s", ns);
    memset(&c->cfg.claim, 0, sizeof c->cfg.claim);
    if (id) {
        c->cfg.claim.kind = KNIT_CRED_ANON;
        c->cfg.claim.id = id;
        c->cfg.claim.secret = secret;
    }
    return 0;
}

const char *knit_client_claim(const knit_client_t *c) /* see proto_client.h */
{
    return c->claim_ns;
}

int knit_client_start(knit_client_t *c, uint64_t now) /* see proto_client.h */
{
    if (c->state != KNIT_CLIENT_IDLE)
        return KNIT_EINVAL;
    c->retry_at = now;
    set_state(c, KNIT_CLIENT_WAITING, 0);
    return 0;
}

void knit_client_stop(knit_client_t *c, uint64_t now, uint64_t grace_ms) /* see proto_client.h */
{
    if (c->state == KNIT_CLIENT_STOPPED)
        return;
    c->stopping = 1;
    c->stop_deadline = now + grace_ms;
    switch (c->state) {
    case KNIT_CLIENT_IDLE:
    case KNIT_CLIENT_WAITING:
        report_acks(c, now);
        set_state(c, KNIT_CLIENT_STOPPED, 0);
        break;
    case KNIT_CLIENT_CONNECTING:
    case KNIT_CLIENT_HELLO_SENT:
        close_conn(c, 0, 0, "stopping");
        break;
    case KNIT_CLIENT_READY:
        c->dirty = 1; /* one last look for local changes */
        c->synced = 0;
        maybe_finish(c, now);
        break;
    default:
        break;
    }
}

knit_client_state_t knit_client_state(const knit_client_t *c) /* see proto_client.h */
{
    return c->state;
}

void knit_client_stats(const knit_client_t *c, knit_client_stats_t *st) /* see proto_client.h */
{
    *st = c->st;
    st->synced = c->synced;
}

const char *knit_client_principal(const knit_client_t *c) /* see proto_client.h */
{
    return c->state == KNIT_CLIENT_READY && c->principal ? c->principal : "";
}

int knit_client_want_connect(knit_client_t *c, uint64_t now) /* see proto_client.h */
{
    if (c->state != KNIT_CLIENT_WAITING || c->stopping || now < c->retry_at)
        return 0;
    c->conn_at = now;
    set_state(c, KNIT_CLIENT_CONNECTING, 0);
    return 1;
}

int knit_client_connected(knit_client_t *c, uint64_t now) /* see proto_client.h */
{
    knit_msg_t m;
    int rc;
    if (c->state != KNIT_CLIENT_CONNECTING)
        return KNIT_EINVAL;
    knit_frame_reader_init(&c->rd, c->cfg.max_frame);
    c->last_rx = c->last_tx = now;
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_HELLO;
    m.u.hello.min_version = KNIT_PROTO_VERSION_MIN;
    m.u.hello.max_version = KNIT_PROTO_VERSION_MAX;
    m.u.hello.site = c->cfg.site;
    m.u.hello.cred = c->cfg.cred;
    m.u.hello.agent = c->agent;
    /* Design note 7: ACK's first..last move the cursor, so no echo is needed. */
    m.u.hello.features = KNIT_HELLO_NO_ECHO;
    /* PROTOCOL §7: a claim goes only with a JWT (design note 6). */
    c->claim_sent = c->claim_id && c->cfg.cred.kind == KNIT_CRED_JWT;
    if (c->claim_sent) {
        m.u.hello.claim = c->cfg.claim;
        logf_(c, LOG_DEBUG, "HELLO claims %s", c->claim_ns);
    }
    /* Design note 8: the schema is a report; without it the HELLO still goes. */
    if (c->io.schema) {
        const knit_schema_t *schema = NULL;
        if ((rc = c->io.schema(c->io.data, &schema)) != 0) {
            logf_(c, LOG_WARN, "HELLO goes without the schema: %s", knit_strerror(rc));
            schema = NULL;
        }
        m.u.hello.schema = schema;
    }
    /* Subscriptions follow WELCOME, for the namespaces it grants. */
    if (m.u.hello.schema) {
        size_t before = c->out.len;
        rc = send_msg(c, &m, now);
        if (rc == 0 && c->out.len - before > KNIT_FRAME_HEADER + KNIT_HELLO_MAX_FRAME) {
            c->out.len = before;
            rc = KNIT_ETOOBIG;
        }
        if (rc == 0) {
            set_state(c, KNIT_CLIENT_HELLO_SENT, 0);
            return 0;
        }
        logf_(c, LOG_WARN, "HELLO goes without the schema (%zu tables): %s",
              m.u.hello.schema->ntables, knit_strerror(rc));
        m.u.hello.schema = NULL;
    }
    if ((rc = send_msg(c, &m, now)) != 0) {
        c->claim_sent = 0;
        close_conn(c, rc, 0, "cannot encode HELLO (is the credential well-formed?)");
        return rc;
    }
    set_state(c, KNIT_CLIENT_HELLO_SENT, 0);
    return 0;
}

int knit_client_input(knit_client_t *c, const uint8_t *p, size_t n,
                      uint64_t now) /* see proto_client.h */
{
    if (c->state != KNIT_CLIENT_HELLO_SENT && c->state != KNIT_CLIENT_READY)
        return KNIT_ECLOSED;
    c->last_rx = now;
    while (n > 0 && (c->state == KNIT_CLIENT_HELLO_SENT || c->state == KNIT_CLIENT_READY)) {
        const uint8_t *payload;
        size_t used = 0, len;
        int rc = knit_frame_read(&c->rd, p, n, &used, &payload, &len);
        if (rc < 0) {
            char msg[120];
            if (rc == KNIT_ETOOBIG)
                snprintf(msg, sizeof msg, "the relay sent a frame over our limit of %zu bytes",
                         c->cfg.max_frame);
            else
                snprintf(msg, sizeof msg, "malformed frame from the relay");
            close_conn(c,
                       rc == KNIT_ENOMEM    ? rc
                       : rc == KNIT_ETOOBIG ? rc
                                            : KNIT_EPROTO,
                       rc != KNIT_ENOMEM, msg);
            break;
        }
        p += used;
        n -= used;
        if (rc == 0)
            break;
        on_frame(c, payload, len, now);
        knit_frame_done(&c->rd); /* a big catch-up frame's buffer goes now */
    }
    maybe_finish(c, now);
    check_synced(c);
    return c->state == KNIT_CLIENT_CLOSING ? KNIT_ECLOSED : 0;
}

void knit_client_lost(knit_client_t *c, uint64_t now, int code,
                      const char *message) /* see proto_client.h */
{
    knit_client_state_t was = c->state;
    char msg[300];
    if (was != KNIT_CLIENT_CONNECTING && was != KNIT_CLIENT_HELLO_SENT &&
        was != KNIT_CLIENT_READY && was != KNIT_CLIENT_CLOSING)
        return;
    if (was != KNIT_CLIENT_CLOSING && code) {
        snprintf(msg, sizeof msg, "%s: %s",
                 was == KNIT_CLIENT_CONNECTING ? "cannot connect" : "connection lost",
                 message && *message ? message : knit_strerror(code));
        /* A refused certificate (or an unreadable CA file), or a stream
        ** that cannot be set up there (a WebSocket upgrade answered with a
        ** 4xx, or not HTTP: ws_client.c), stays so until someone changes
        ** it: fatal, like a refused credential. */
        int fatal = code == KNIT_ETLS || (was == KNIT_CLIENT_CONNECTING && code == KNIT_EPROTO);
        if (fatal)
            c->fatal_close = 1;
        emit_error(c, code, fatal, 0, msg);
    }
    report_acks(c, now);
    session_reset(c);
    if (c->stopping) {
        set_state(c, KNIT_CLIENT_STOPPED, 0);
        return;
    }
    if (c->fatal_close)
        c->attempt = 64; /* retrying soon cannot help: wait the longest */
    c->fatal_close = 0;
    uint64_t delay = backoff_delay(c);
    c->retry_at = now + delay;
    logf_(c, LOG_DEBUG, "next attempt in %llu ms", (unsigned long long)delay);
    set_state(c, KNIT_CLIENT_WAITING, delay);
}

int knit_client_want_close(const knit_client_t *c) /* see proto_client.h */
{
    return c->state == KNIT_CLIENT_CLOSING;
}

void knit_client_take_output(knit_client_t *c, knit_buf_t *out) /* see proto_client.h */
{
    *out = c->out;
    memset(&c->out, 0, sizeof c->out);
}

uint64_t knit_client_tick(knit_client_t *c, uint64_t now) /* see proto_client.h */
{
    uint64_t next = UINT64_MAX;
#define SOONER(t)                                                                                  \
    do {                                                                                           \
        uint64_t t_ = (t);                                                                         \
        if (t_ < next)                                                                             \
            next = t_;                                                                             \
    } while (0)

    switch (c->state) {
    case KNIT_CLIENT_WAITING:
        SOONER(c->retry_at);
        break;
    case KNIT_CLIENT_CONNECTING:
    case KNIT_CLIENT_HELLO_SENT:
        if (now - c->conn_at >= c->cfg.handshake_ms) {
            char msg[120];
            snprintf(msg, sizeof msg, "%s within %llu ms",
                     c->state == KNIT_CLIENT_CONNECTING ? "no connection" : "no WELCOME",
                     (unsigned long long)c->cfg.handshake_ms);
            close_conn(c, KNIT_ETIMEDOUT, 0, msg);
        } else {
            SOONER(c->conn_at + c->cfg.handshake_ms);
        }
        break;
    case KNIT_CLIENT_READY: {
        uint64_t idle = c->limits.idle_ms;
        if (idle && now - c->last_rx >= idle) {
            char msg[120];
            snprintf(msg, sizeof msg, "the relay was silent for %llu ms",
                     (unsigned long long)(now - c->last_rx));
            close_conn(c, KNIT_ETIMEDOUT, 0, msg);
            break;
        }
        if (idle) {
            SOONER(c->last_rx + idle);
            /* PROTOCOL §6.4: PING when we sent nothing for idle_ms / 2. */
            if (now - c->last_tx >= idle / 2) {
                knit_msg_t m;
                memset(&m, 0, sizeof m);
                m.type = KNIT_MSG_PING;
                m.u.ping.nonce = ++c->ping_nonce;
                send_msg(c, &m, now);
            }
            SOONER(c->last_tx + idle / 2);
        }
        send_queued(c, now);
        for (size_t i = 0; i < c->nslots; i++)
            if (c->slots[i].state == SLOT_QUEUED && !c->halted)
                SOONER(c->slots[i].retry_at > now ? c->slots[i].retry_at : now + 1);
        if (c->stopping) {
            maybe_finish(c, now);
            SOONER(c->stop_deadline);
        }
        if ((c->features & KNIT_FEATURE_CHECK) && c->io.check_digest && c->io.check_repair &&
            c->cfg.check_ms != UINT64_MAX && !c->stopping && !c->check_wait && c->nsubs) {
            if (now >= c->check_next) {
                if (quiet(c))
                    check_start(c, now);
                else
                    c->check_next = now + CHECK_RETRY_MS; /* a difference is expected now */
            }
            if (!c->check_wait && c->state == KNIT_CLIENT_READY)
                SOONER(c->check_next);
        }
        break;
    }
    default:
        break;
    }
    /* Watermark moves without an ACK (reads that found nothing) are saved
    ** now and then, not on every read; one a busy replica refused, soon. */
    if ((c->durable < c->ceiling ? c->durable : c->ceiling) > c->reported) {
        uint64_t due = c->ack_retry_at ? c->ack_retry_at : c->last_flush + c->cfg.ack_flush_ms;
        if (now >= due)
            report_acks(c, now);
        else
            SOONER(due);
    }
    if (cursors_unsaved(c)) {
        if (now >= c->save_retry_at)
            save_cursors(c, now, 0);
        if (cursors_unsaved(c))
            SOONER(c->save_retry_at);
    }
    check_synced(c);
    return next;
#undef SOONER
}

void knit_client_local_changed(knit_client_t *c) /* see proto_client.h */
{
    c->dirty = 1;
    c->synced = 0;
}

int knit_client_push_room(const knit_client_t *c, uint64_t *after,
                          size_t *max) /* see proto_client.h */
{
    if (c->state != KNIT_CLIENT_READY || c->halted)
        return 0;
    if (!c->dirty && !(c->dirty_remote && all_caught_up(c)))
        return 0;
    for (size_t i = 0; i < c->nslots; i++)
        if (c->slots[i].state == SLOT_QUEUED)
            return 0;
    size_t sent = count_sent(c);
    if (sent >= c->cfg.max_inflight)
        return 0;
    *after = c->pushed_upto;
    /* Enough for every free slot of the window: one read, several pushes
    ** (each read of the replica scans every row changed after `after`). */
    *max = c->push_limit * (c->cfg.max_inflight - sent);
    return 1;
}

int knit_client_push(knit_client_t *c, knit_batch_t *b, uint64_t covers,
                     uint64_t now) /* see proto_client.h */
{
    slotlist_t l = {NULL, 0, 0};
    uint64_t ceiling = c->ceiling;
    int rc;
    if (c->state != KNIT_CLIENT_READY) {
        knit_batch_free(b);
        return KNIT_ECLOSED;
    }
    rc = split_batch(c, b, c->push_limit, c->pushed_upto, covers, &l, &ceiling);
    if (!rc && l.n == 0)
        cover_empty(c, covers); /* nothing this session may push */
    else if (!rc)
        rc = slots_insert(c, c->nslots, &l);
    knit_batch_free(b);
    if (rc) {
        slotlist_free(&l);
        return rc; /* still dirty: the read is repeated */
    }
    if (ceiling < c->ceiling) {
        c->ceiling = ceiling;
        if (!c->warned_ungranted) {
            c->warned_ungranted = 1;
            logf_(c, LOG_WARN,
                  "local changes from version %llu on belong to a namespace this "
                  "credential may not write; they stay pending",
                  (unsigned long long)ceiling + 1);
        }
    }
    if (covers > c->pushed_upto)
        c->pushed_upto = covers;
    c->dirty_remote = 0;
    c->synced = 0;
    send_queued(c, now);
    check_synced(c);
    return 0;
}

void knit_client_push_none(knit_client_t *c, uint64_t version,
                           uint64_t now) /* see proto_client.h */
{
    c->dirty = 0;
    c->dirty_remote = 0;
    if (c->state != KNIT_CLIENT_READY)
        return;
    cover_empty(c, version);
    maybe_finish(c, now);
    check_synced(c);
}
