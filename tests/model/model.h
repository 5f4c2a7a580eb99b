/*
** model.h: the reference model for the model-based test (test_model.c).
**
** The model knows nothing of knit's metadata.  It is fed what an observer
** of the replicas can see: each committed local write (the row before and
** after, read with plain SQL), the stamp it must have been given, and the
** batches each replica applied.  From that it predicts the one state every
** replica must reach once all cells have arrived.
**
** Design notes
**   1. Clocks.  The test owns every replica's wall clock.  The model keeps,
**      per replica, the largest HLC it issued or received and predicts the
**      next stamp exactly as crdt/hlc.h says: max(wall << 16, seen + 1).
**      Receiving a batch raises "seen" to the batch's largest stamp.
**   2. Lives.  Per replica and row the model keeps the largest causal length
**      it has seen (its own writes, and every change of a tracked table and
**      column in a batch it applied).  An insert of an absent row takes the
**      next odd length, a delete the next even one; an update keeps it.
**   3. LWW.  A row's final life is the largest causal length anyone wrote;
**      the row is live when it is odd.  Each column holds the write of that
**      life with the largest (hlc, site); a column no write of that life
**      touched holds its DEFAULT.
**   4. OR-sets.  Each add is an operation with an id; a remove records the
**      adds its replica knew for that cell.  Knowledge travels with cells:
**      a replica that pushes a cell gives the relay what it knew of it, and
**      a replica that applies a cell from a page, a fan-out or a peer learns
**      what the sender knew when the batch was read.  An element is in the
**      final set when an add of the final life was seen by no remove (add
**      wins).
*/
#ifndef KNIT_TEST_MODEL_H
#define KNIT_TEST_MODEL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    M_MAXR = 12,    /* replicas per case, copies and joiners included */
    M_MAXT = 3,     /* tables */
    M_MAXC = 7,     /* non-key columns per table, the added one included */
    M_MAXPK = 2,    /* key columns */
    M_NKEYS = 6,    /* keys per table */
    M_MAXADD = 256, /* OR-set adds per cell */
    M_KW = M_MAXADD / 64,
    M_NNS = 2,   /* namespaces */
    M_VMAX = 640 /* bytes of a value */
};

/* A value as SQLite stores it. */
typedef struct mval_s {
    int t;                   /* SQLITE_INTEGER, _FLOAT, _TEXT, _BLOB, _NULL */
    int64_t i;               /* INTEGER */
    double r;                /* FLOAT */
    int n;                   /* TEXT / BLOB length */
    unsigned char p[M_VMAX]; /* TEXT / BLOB bytes */
} mval_t;

static inline int mval_eq(const mval_t *a, const mval_t *b)
{
    if (a->t != b->t)
        return 0;
    switch (a->t) {
    case SQLITE_INTEGER:
        return a->i == b->i;
    case SQLITE_FLOAT:
        return memcmp(&a->r, &b->r, sizeof a->r) == 0;
    case SQLITE_TEXT:
    case SQLITE_BLOB:
        return a->n == b->n && memcmp(a->p, b->p, (size_t)a->n) == 0;
    default:
        return 1;
    }
}

static inline void mval_col(sqlite3_stmt *st, int i, mval_t *v)
{
    memset(v, 0, offsetof(mval_t, p));
    v->t = sqlite3_column_type(st, i);
    if (v->t == SQLITE_INTEGER)
        v->i = sqlite3_column_int64(st, i);
    else if (v->t == SQLITE_FLOAT)
        v->r = sqlite3_column_double(st, i);
    else if (v->t == SQLITE_TEXT || v->t == SQLITE_BLOB) {
        const void *p = v->t == SQLITE_TEXT ? (const void *)sqlite3_column_text(st, i)
                                            : sqlite3_column_blob(st, i);
        v->n = sqlite3_column_bytes(st, i);
        if (v->n > M_VMAX)
            v->n = M_VMAX;
        if (v->n)
            memcpy(v->p, p, (size_t)v->n);
    }
}

static inline void mval_bind(sqlite3_stmt *st, int i, const mval_t *v)
{
    switch (v->t) {
    case SQLITE_INTEGER:
        sqlite3_bind_int64(st, i, v->i);
        break;
    case SQLITE_FLOAT:
        sqlite3_bind_double(st, i, v->r);
        break;
    case SQLITE_TEXT:
        sqlite3_bind_text(st, i, (const char *)v->p, v->n, SQLITE_TRANSIENT);
        break;
    case SQLITE_BLOB:
        sqlite3_bind_blob(st, i, v->p, v->n, SQLITE_TRANSIENT);
        break;
    default:
        sqlite3_bind_null(st, i);
    }
}

/* One LWW write of a cell. */
typedef struct mwrite_s {
    uint64_t cl;      /* life it was made in */
    uint64_t hlc;     /* predicted stamp */
    uint8_t site[16]; /* writer */
    int rep;          /* replica index, for traces */
    mval_t v;         /* value written */
} mwrite_t;

/* OR-set operations on one cell. */
typedef struct madd_s {
    int elem;    /* element (index into the test's element pool) */
    uint64_t cl; /* life */
} madd_t;

typedef struct mrem_s {
    int elem;           /* element removed */
    uint64_t cl;        /* life */
    uint64_t obs[M_KW]; /* adds (ids) its replica knew of this cell */
} mrem_t;

typedef struct mcell_s {
    mwrite_t *w;          /* LWW writes */
    int nw, capw;         /* count, capacity */
    madd_t add[M_MAXADD]; /* OR-set adds; the index is the add's id */
    int nadd;             /* count */
    mrem_t *rem;          /* OR-set removes */
    int nrem, caprem;     /* count, capacity */
} mcell_t;

/* The whole model of one case. */
typedef struct model_s {
    uint64_t maxcl[M_MAXT][M_NKEYS];       /* largest life written */
    mcell_t cell[M_MAXT][M_NKEYS][M_MAXC]; /* per column */
} model_t;

static inline void model_free(model_t *m)
{
    for (int t = 0; t < M_MAXT; t++)
        for (int k = 0; k < M_NKEYS; k++)
            for (int c = 0; c < M_MAXC; c++) {
                free(m->cell[t][k][c].w);
                free(m->cell[t][k][c].rem);
            }
    memset(m, 0, sizeof *m);
}

static inline void model_lww(model_t *m, int t, int k, int c, const mwrite_t *w)
{
    mcell_t *x = &m->cell[t][k][c];
    if (x->nw == x->capw) {
        x->capw = x->capw ? x->capw * 2 : 8;
        x->w = realloc(x->w, (size_t)x->capw * sizeof *x->w);
        if (!x->w)
            abort();
    }
    x->w[x->nw++] = *w;
}

static inline int model_add(model_t *m, int t, int k, int c, int elem, uint64_t cl)
{
    mcell_t *x = &m->cell[t][k][c];
    if (x->nadd >= M_MAXADD)
        return -1;
    x->add[x->nadd].elem = elem;
    x->add[x->nadd].cl = cl;
    return x->nadd++;
}

static inline void model_rem(model_t *m, int t, int k, int c, int elem, uint64_t cl,
                             const uint64_t *obs)
{
    mcell_t *x = &m->cell[t][k][c];
    if (x->nrem == x->caprem) {
        x->caprem = x->caprem ? x->caprem * 2 : 8;
        x->rem = realloc(x->rem, (size_t)x->caprem * sizeof *x->rem);
        if (!x->rem)
            abort();
    }
    x->rem[x->nrem].elem = elem;
    x->rem[x->nrem].cl = cl;
    memcpy(x->rem[x->nrem].obs, obs, sizeof x->rem[0].obs);
    x->nrem++;
}

/* The winning LWW write of the final life, or NULL (design note 3). */
static inline const mwrite_t *model_winner(const model_t *m, int t, int k, int c)
{
    const mcell_t *x = &m->cell[t][k][c];
    const mwrite_t *best = NULL;
    uint64_t life = m->maxcl[t][k];
    for (int i = 0; i < x->nw; i++) {
        const mwrite_t *w = &x->w[i];
        if (w->cl != life)
            continue;
        if (!best || w->hlc > best->hlc ||
            (w->hlc == best->hlc && memcmp(w->site, best->site, 16) > 0))
            best = w;
    }
    return best;
}

/* The final OR-set as a bit mask of elements (design note 4). */
static inline unsigned model_set(const model_t *m, int t, int k, int c)
{
    const mcell_t *x = &m->cell[t][k][c];
    uint64_t life = m->maxcl[t][k];
    unsigned out = 0;
    for (int a = 0; a < x->nadd; a++) {
        if (x->add[a].cl != life)
            continue;
        int seen = 0;
        for (int r = 0; r < x->nrem && !seen; r++)
            seen = x->rem[r].elem == x->add[a].elem && x->rem[r].cl == life &&
                   (x->rem[r].obs[a / 64] >> (a % 64) & 1);
        if (!seen)
            out |= 1u << x->add[a].elem;
    }
    return out;
}

#endif
