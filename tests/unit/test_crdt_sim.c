/*
** test_crdt_sim.c: convergence of replicas under a hostile network.
**
** Five replicas hold a small table: three rows, each with a causal length,
** two LWW columns ordered by (cl, hlc, site) and one OR-set column.  Each
** schedule interleaves random local writes, deletes, re-inserts and set
** operations with deliveries of the messages they produce; the network
** reorders, duplicates and drops messages, and dropped ones are sent again
** later, as a replica does until the relay acknowledges them.  Sometimes a
** replica sends its whole state instead.  When every message has arrived,
** all replicas must hold the same state and the same digest, that digest
** must equal the one each replica kept up to date change by change, and
** every LWW cell must hold the greatest write ever made to it.
**
** OR-set deltas travel encoded (knit_orset_encode/decode), as on the wire.
*/
#include "alloc.h"
#include "digest.h"
#include "lww.h"
#include "orset.h"
#include "test.h"

#define NREP 5
#define NROW 3
#define NLWW 2
#define COL_SET NLWW  /* column index of the OR-set */
#define COL_LIVE (-1) /* the row's liveness "column" */

typedef struct row_s {
    uint64_t cl;          /* causal length; 0 = never inserted */
    knit_lww_t col[NLWW]; /* LWW cells; hlc 0 = never written */
    knit_orset_t set;     /* the OR-set column */
} row_t;

typedef struct rep_s {
    row_t rows[NROW];     /* the table */
    uint64_t clock;       /* HLC */
    int64_t skew;         /* this replica's wall clock offset, ms */
    knit_digest_t digest; /* kept current change by change */
} rep_t;

enum { M_CELL, M_CL, M_SET };

typedef struct msg_s {
    int kind;        /* M_CELL, M_CL or M_SET */
    int dest;        /* receiving replica */
    int row;         /* row index */
    int col;         /* LWW column (M_CELL) */
    knit_lww_t cell; /* M_CELL: the write */
    uint64_t cl;     /* M_CL: causal length */
    uint8_t *bytes;  /* M_SET: encoded delta or state; owned */
    size_t n;        /* bytes at bytes */
} msg_t;

typedef struct net_s {
    msg_t *flight;  /* sent, not yet delivered */
    size_t nflight; /* count */
    msg_t *retry;   /* dropped; sent again later */
    size_t nretry;  /* count */
    size_t cap;     /* capacity of flight */
    size_t rcap;    /* capacity of retry */
} net_t;

typedef struct sim_s {
    rep_t rep[NREP];             /* replicas */
    net_t net;                   /* the network */
    knit_lww_t best[NROW][NLWW]; /* oracle: greatest write per cell */
    uint64_t best_cl[NROW];      /* oracle: greatest causal length */
    uint64_t now;                /* simulated time, ms */
    knit_rng_t r;                /* the schedule's randomness */
} sim_t;

static knit_site_t site_id[NREP]; /* 16-byte ids, not in index order */

static void sites_init(void)
{
    int i;

    for (i = 0; i < NREP; i++) {
        memset(site_id[i].b, 0, 16);
        site_id[i].b[0] = (uint8_t)(0x90 - 0x20 * (i % 3) + i); /* 90 71 52 93 74 */
        site_id[i].b[15] = (uint8_t)i;
    }
}

/* ---------------------------------------------------------------------- */
/* Cells and the digest. */

static int cell_exists(const row_t *row, int col)
{
    if (col == COL_LIVE)
        return row->cl > 0;
    if (col == COL_SET)
        return row->set.vv.len > 0 || row->set.ncloud > 0;
    return row->col[col].hlc != 0;
}

static void cell_hash(const rep_t *rp, int r, int col, uint8_t h[32])
{
    static const char *names[] = {"a", "b", "tags"};
    const row_t *row = &rp->rows[r];
    knit_value_t key = {KNIT_INTEGER, {r}}, null = {KNIT_NULL, {0}};
    uint8_t pk[16], val[16], *enc = NULL;
    knit_cell_t c;

    memset(&c, 0, sizeof c);
    c.ns = "user:sim";
    c.table = "t";
    c.pk = pk;
    c.pk_len = knit_value_encode(&key, pk);
    c.val = val;
    if (col == COL_LIVE) {
        c.column = "";
        c.val_len = knit_value_encode(&null, val);
        c.cl = row->cl;
    } else if (col == COL_SET) {
        /* sites named by id, so every replica hashes the same bytes
        ** whatever its own numbering */
        c.column = names[col];
        CHECK_OK(knit_orset_canonical(&row->set, site_id, NREP, &enc, &c.val_len));
        c.val = enc;
    } else {
        c.column = names[col];
        c.val_len = knit_value_encode(&row->col[col].value, val);
        c.cl = row->col[col].cl;
        c.hlc = row->col[col].hlc;
        c.site = row->col[col].site;
    }
    knit_cell_hash(&c, h);
    knit__free(enc);
}

/* Around every change of one cell: take its old hash out, put the new in. */
static void digest_out(rep_t *rp, int r, int col)
{
    uint8_t h[32];

    if (cell_exists(&rp->rows[r], col)) {
        cell_hash(rp, r, col, h);
        knit_digest_sub(&rp->digest, h);
    }
}

static void digest_in(rep_t *rp, int r, int col)
{
    uint8_t h[32];

    if (cell_exists(&rp->rows[r], col)) {
        cell_hash(rp, r, col, h);
        knit_digest_add(&rp->digest, h);
    }
}

static void digest_full(const rep_t *rp, knit_digest_t *d)
{
    uint8_t h[32];
    int r, col;

    knit_digest_zero(d);
    for (r = 0; r < NROW; r++)
        for (col = COL_LIVE; col <= COL_SET; col++)
            if (cell_exists(&rp->rows[r], col)) {
                cell_hash(rp, r, col, h);
                knit_digest_add(d, h);
            }
}

/* ---------------------------------------------------------------------- */
/* The network. */

static void net_push(msg_t **arr, size_t *n, size_t *cap, const msg_t *m)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *arr = realloc(*arr, *cap * sizeof **arr);
        CHECK(*arr != NULL);
    }
    (*arr)[(*n)++] = *m;
}

static void send_to(sim_t *s, msg_t m, int dest)
{
    m.dest = dest;
    if (m.kind == M_SET) {
        uint8_t *b = malloc(m.n);
        CHECK(b != NULL);
        memcpy(b, m.bytes, m.n);
        m.bytes = b;
    }
    net_push(&s->net.flight, &s->net.nflight, &s->net.cap, &m);
}

static void broadcast(sim_t *s, int from, msg_t m)
{
    int d;

    for (d = 0; d < NREP; d++)
        if (d != from)
            send_to(s, m, d);
    if (m.kind == M_SET)
        knit__free(m.bytes);
}

static void raise_cl(rep_t *rp, int r, uint64_t cl)
{
    if (cl > rp->rows[r].cl) {
        digest_out(rp, r, COL_LIVE);
        rp->rows[r].cl = cl;
        digest_in(rp, r, COL_LIVE);
    }
}

static void deliver(sim_t *s, const msg_t *m)
{
    rep_t *rp = &s->rep[m->dest];
    row_t *row = &rp->rows[m->row];
    knit_orset_t delta;

    switch (m->kind) {
    case M_CELL:
        CHECK_OK(knit_hlc_recv(&rp->clock, m->cell.hlc, s->now + 1000, UINT32_MAX));
        /* a write of life cl means the row reached that life */
        raise_cl(rp, m->row, m->cell.cl);
        digest_out(rp, m->row, m->col);
        knit_lww_merge(&row->col[m->col], &m->cell);
        digest_in(rp, m->row, m->col);
        break;
    case M_CL:
        raise_cl(rp, m->row, m->cl);
        break;
    default:
        CHECK_OK(knit_orset_decode(m->bytes, m->n, &delta));
        digest_out(rp, m->row, COL_SET);
        CHECK_OK(knit_orset_join(&row->set, &delta));
        digest_in(rp, m->row, COL_SET);
        knit_orset_free(&delta);
    }
}

/* Deliver, duplicate or drop the in-flight message at index i. */
static void net_act(sim_t *s, size_t i, int may_drop)
{
    msg_t m = s->net.flight[i];
    unsigned a = (unsigned)knit_rng_below(&s->r, 10);

    if (a == 0 && may_drop) {
        net_push(&s->net.retry, &s->net.nretry, &s->net.rcap, &m);
    } else {
        deliver(s, &m);
        if (a == 1)
            return; /* duplicated: it stays in flight and arrives again */
        if (m.kind == M_SET)
            free(m.bytes);
    }
    s->net.flight[i] = s->net.flight[--s->net.nflight];
}

static void net_resend(sim_t *s)
{
    size_t i;

    for (i = 0; i < s->net.nretry; i++)
        net_push(&s->net.flight, &s->net.nflight, &s->net.cap, &s->net.retry[i]);
    s->net.nretry = 0;
}

/* ---------------------------------------------------------------------- */
/* Local operations. */

static uint64_t stamp(sim_t *s, int i)
{
    uint64_t h;
    int64_t wall = (int64_t)s->now + s->rep[i].skew;

    CHECK_OK(knit_hlc_tick(&s->rep[i].clock, (uint64_t)(wall > 0 ? wall : 0), &h));
    return h;
}

static void set_value(sim_t *s, knit_value_t *v)
{
    static const char *words[] = {"red", "green", "blue"};
    uint64_t k = knit_rng_below(&s->r, 6);

    if (k < 3) {
        v->type = KNIT_TEXT;
        v->u.b.p = words[k];
        v->u.b.n = strlen(words[k]);
    } else {
        v->type = KNIT_INTEGER;
        v->u.i = (int64_t)k;
    }
}

static void local_op(sim_t *s, int i)
{
    rep_t *rp = &s->rep[i];
    int r = (int)knit_rng_below(&s->r, NROW);
    row_t *row = &rp->rows[r];
    unsigned op = (unsigned)knit_rng_below(&s->r, 10);
    msg_t m;

    memset(&m, 0, sizeof m);
    m.row = r;
    if (op < 4) {
        /* Write a column, inserting the row first if it is not live. */
        knit_lww_t w;
        int col = (int)knit_rng_below(&s->r, NLWW);
        if (!knit_cl_live(row->cl)) {
            uint64_t cl = knit_cl_insert(row->cl);
            raise_cl(rp, r, cl);
            m.kind = M_CL, m.cl = cl;
            broadcast(s, i, m);
            if (cl > s->best_cl[r])
                s->best_cl[r] = cl;
        }
        w.cl = row->cl;
        w.hlc = stamp(s, i);
        w.site = site_id[i];
        w.value.type = KNIT_INTEGER;
        w.value.u.i = (int64_t)knit_rng_below(&s->r, 1000);
        digest_out(rp, r, col);
        CHECK_EQ_INT(knit_lww_merge(&row->col[col], &w), 1); /* a local write wins */
        digest_in(rp, r, col);
        if (knit_lww_cmp(&w, &s->best[r][col]) > 0)
            s->best[r][col] = w;
        m.kind = M_CELL, m.col = col, m.cell = w;
        broadcast(s, i, m);
    } else if (op < 6) {
        /* Delete the row, or re-insert it when it is deleted. */
        uint64_t cl = knit_cl_live(row->cl) ? knit_cl_delete(row->cl) : knit_cl_insert(row->cl);
        raise_cl(rp, r, cl);
        if (cl > s->best_cl[r])
            s->best_cl[r] = cl;
        m.kind = M_CL, m.cl = cl;
        broadcast(s, i, m);
    } else {
        /* Add to or remove from the row's set; ship the delta. */
        knit_orset_t delta;
        knit_value_t v;
        set_value(s, &v);
        knit_orset_init(&delta);
        digest_out(rp, r, COL_SET);
        if (op < 9)
            CHECK_OK(knit_orset_add(&row->set, (uint32_t)i, &v, &delta));
        else
            CHECK_OK(knit_orset_remove(&row->set, &v, &delta));
        digest_in(rp, r, COL_SET);
        m.kind = M_SET;
        CHECK_OK(knit_orset_encode(&delta, &m.bytes, &m.n));
        knit_orset_free(&delta);
        broadcast(s, i, m);
    }
}

/* Anti-entropy: replica i sends its whole state to one other replica. */
static void send_state(sim_t *s, int i, int dest)
{
    rep_t *rp = &s->rep[i];
    int r, col;

    for (r = 0; r < NROW; r++) {
        row_t *row = &rp->rows[r];
        msg_t m;
        memset(&m, 0, sizeof m);
        m.row = r;
        if (row->cl) {
            m.kind = M_CL, m.cl = row->cl;
            send_to(s, m, dest);
        }
        for (col = 0; col < NLWW; col++) {
            if (row->col[col].hlc) {
                m.kind = M_CELL, m.col = col, m.cell = row->col[col];
                send_to(s, m, dest);
            }
        }
        m.kind = M_SET;
        CHECK_OK(knit_orset_encode(&row->set, &m.bytes, &m.n));
        send_to(s, m, dest);
        knit__free(m.bytes);
    }
}

/* ---------------------------------------------------------------------- */
/* Schedules. */

static void sim_init(sim_t *s, uint64_t seed)
{
    int i, r, c;

    memset(s, 0, sizeof *s);
    s->r.s = seed;
    s->now = 1700000000000;
    for (i = 0; i < NREP; i++) {
        s->rep[i].skew = (int64_t)knit_rng_below(&s->r, 101) - 50;
        knit_digest_zero(&s->rep[i].digest);
        for (r = 0; r < NROW; r++)
            knit_orset_init(&s->rep[i].rows[r].set);
    }
    for (r = 0; r < NROW; r++)
        for (c = 0; c < NLWW; c++)
            s->best[r][c].hlc = 0;
}

static void sim_free(sim_t *s)
{
    size_t k;
    int i, r;

    for (i = 0; i < NREP; i++)
        for (r = 0; r < NROW; r++)
            knit_orset_free(&s->rep[i].rows[r].set);
    for (k = 0; k < s->net.nflight; k++)
        if (s->net.flight[k].kind == M_SET)
            free(s->net.flight[k].bytes);
    free(s->net.flight);
    free(s->net.retry);
}

static void sim_check(sim_t *s)
{
    knit_digest_t d0, d;
    int i, r, c;

    digest_full(&s->rep[0], &d0);
    for (i = 0; i < NREP; i++) {
        digest_full(&s->rep[i], &d);
        CHECK(knit_digest_equal(&d, &s->rep[i].digest)); /* incremental = full */
        CHECK(knit_digest_equal(&d, &d0));
        for (r = 0; r < NROW; r++) {
            const row_t *a = &s->rep[i].rows[r], *b = &s->rep[0].rows[r];
            CHECK(a->cl == b->cl);
            CHECK(a->cl == s->best_cl[r]);
            for (c = 0; c < NLWW; c++) {
                CHECK(knit_lww_cmp(&a->col[c], &s->best[r][c]) == 0);
                CHECK(a->col[c].value.u.i == s->best[r][c].value.u.i);
            }
            CHECK(knit_orset_equal(&a->set, &b->set));
        }
    }
}

static void run_schedule(uint64_t seed, int state_only)
{
    sim_t s;
    int steps, k;

    knit_test_case_seed(seed);
    sim_init(&s, seed);
    steps = 10 + (int)knit_rng_below(&s.r, 40);
    for (k = 0; k < steps; k++) {
        unsigned a = (unsigned)knit_rng_below(&s.r, 10);
        s.now += knit_rng_below(&s.r, 3);
        if (a < 4) {
            local_op(&s, (int)knit_rng_below(&s.r, NREP));
            if (state_only) {
                /* drop the deltas: only whole states travel */
                size_t j;
                for (j = 0; j < s.net.nflight; j++)
                    if (s.net.flight[j].kind == M_SET)
                        free(s.net.flight[j].bytes);
                s.net.nflight = 0;
            }
        } else if (a < 8) {
            if (s.net.nflight)
                net_act(&s, (size_t)knit_rng_below(&s.r, s.net.nflight), 1);
        } else if (a < 9 || state_only) {
            int from = (int)knit_rng_below(&s.r, NREP);
            send_state(&s, from, (from + 1 + (int)knit_rng_below(&s.r, NREP - 1)) % NREP);
        } else {
            net_resend(&s);
        }
    }
    if (state_only) {
        /* a ring of state exchanges, twice round, spreads everything */
        int i;
        net_resend(&s);
        while (s.net.nflight)
            net_act(&s, (size_t)knit_rng_below(&s.r, s.net.nflight), 0);
        for (i = 0; i < 2 * NREP; i++) {
            send_state(&s, i % NREP, (i + 1) % NREP);
            while (s.net.nflight)
                net_act(&s, (size_t)knit_rng_below(&s.r, s.net.nflight), 0);
        }
    }
    /* Everything dropped is sent again; then the network drains. */
    net_resend(&s);
    while (s.net.nflight)
        net_act(&s, (size_t)knit_rng_below(&s.r, s.net.nflight), 0);
    sim_check(&s);
    sim_free(&s);
}

static void converge(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    sites_init();
    for (i = 0; i < n; i++)
        run_schedule(seed + (uint64_t)i, 0);
}

static void converge_states(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(2000);

    sites_init();
    for (i = 0; i < n; i++)
        run_schedule(seed ^ (UINT64_C(0x57a7e) + (uint64_t)i), 1);
}

KNIT_TESTS(T(converge), T(converge_states))
