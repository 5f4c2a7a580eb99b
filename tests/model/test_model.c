/*
** test_model.c: a model-based randomized test of replicas syncing through
** the relay store, checked against the reference model in model.h.
**
** Each case makes a random schema (one to three tables; NOT NULL columns
** without defaults, single-column CHECKs, DEFAULTs, composite keys of mixed
** types and BLOB keys, quoted and long identifiers, OR-set columns, a column
** added later by ALTER TABLE and tracked again), opens three to five
** replicas as real files, writes them with plain SQL on separate
** connections, copies replica files into new devices, lets fresh replicas
** join, and syncs everything through the real relay store engine (pushes of
** knit_changes_since(acked, local_only), knit_ack, catch-up pages of random
** size applied with knit_apply_at, fan-out, duplicate and delayed pages,
** and raw batches between replicas).  Disk faults (faultvfs.h) and
** allocation failures (knit__alloc_fail_at) hit stamps, reads and applies;
** a failed call must fail cleanly and succeed when retried.  After a final
** full sync every replica must hold exactly the model's rows, equal digests
** per namespace equal to the relay's, cursors at the relay's head, a clean
** knit_verify and no refused rows.
**
** "migrate" (cases migrations, upgrades) gives the app a random sequence of
** versions (MIG): ALTER TABLE ADD COLUMN with or without DEFAULT then
** knit_track; a rebuild (CREATE new, INSERT ... SELECT, DROP, RENAME)
** keeping key and columns, maybe adding NOT NULL or CHECK (c IS NOT 'bad')
** to a column; a new tracked table.  Each device upgrades at a random
** moment, possibly several steps at once, and writes before and after;
** devices not yet stricter write what the constraint refuses, one time in
** three; before its stricter rebuild a device fixes its own rows with an
** UPDATE (a real write), so once all have upgraded every row is valid
** everywhere and nothing may stay set aside.  A device does not write a row
** it holds refused (the model cannot know that row's life there), and a
** stricter step waits while the device holds refused rows.  The final sync
** upgrades everyone, syncs, runs knit_aside_retry on each and syncs again.
** "trig" (cases triggers, upgrades) adds app triggers on table 0: audit
** rows 'ins:' || key in a tracked table, a counter in an untracked one, an
** FTS5 index; the model predicts the audit rows and each device's counter
** (inserts it saw: the app's, and knit's, including a later life of a live
** row, which knit writes as DELETE + INSERT) and checks the index.
**
** Running it
**   test_model CASE          CASE = basic, orset, constraints, keys, idents,
**                            alter, copy, join, delivery, faults, ns, all,
**                            migrations, triggers, upgrades
**                            (each turns on its features, see FEATURES);
**                            "long" runs everything for a long time
**   KNIT_SEED=n              base seed (case i uses n + i); printed always
**   KNIT_CASES=n             number of cases (default per CTest case below)
**   KNIT_MODEL_FEATURES=...  "orset,copy" sets the features, "+fault,-dup"
**                            adds and removes; "all" is every feature
**   KNIT_MODEL_SECONDS=s     stop after s seconds (long runs)
**   KNIT_MODEL_DIR=dir       where case directories go (default /dev/shm)
**   KNIT_TRACE=n             operations printed on failure (default 80)
**   KNIT_KEEP=1              keep the failing case's directory
**   KNIT_MODEL_VERIFY=1      knit_verify after every stamp and apply
**   KNIT_MODEL_DEBUG=1       trace every column of every write
** A failure prints the seed and the command that reproduces the case alone
** (KNIT_SEED=... KNIT_CASES=1 KNIT_MODEL_FEATURES=... test_model CASE).
*/
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "alloc.h"
#include "model/model.h"
#include "replica.h"
#include "relay_store.h"
#include "runtime/faultvfs.h"
#include "runtime/rt.h"

/* knit_aside_count is new API (knit.h); linked weakly so this test builds
** and runs on trees that do not have it yet, where _knit_aside is read
** with plain SQL instead. */
extern int knit_aside_count(knit_t *k, size_t *refused_rows, size_t *waiting);
#pragma weak knit_aside_count

/* ---------------------------------------------------------------------- */
/* Features                                                                */

enum {
    F_ORSET = 1 << 0,    /* OR-set columns */
    F_NOTNULL = 1 << 1,  /* NOT NULL columns without defaults */
    F_CHECK = 1 << 2,    /* single-column CHECK constraints */
    F_DEFAULT = 1 << 3,  /* DEFAULT values, columns omitted on insert */
    F_KEYS = 1 << 4,     /* composite keys of mixed types, BLOB and untyped keys */
    F_KEYUPD = 1 << 5,   /* UPDATE of the key */
    F_IDENT = 1 << 6,    /* identifiers with spaces, quotes, dots */
    F_LONGID = 1 << 7,   /* identifiers of several hundred bytes */
    F_ALTER = 1 << 8,    /* ALTER TABLE ADD COLUMN, then knit_track again */
    F_COPY = 1 << 9,     /* copies of replica files become new devices */
    F_JOIN = 1 << 10,    /* fresh replicas join late */
    F_DUP = 1 << 11,     /* duplicate, delayed pages; fan-out; lost ACKs */
    F_DIRECT = 1 << 12,  /* raw batches between replicas */
    F_FAULT = 1 << 13,   /* disk faults in stamp, apply, relay commit */
    F_OOM = 1 << 14,     /* allocation failures */
    F_NS2 = 1 << 15,     /* two namespaces */
    F_TIES = 1 << 16,    /* stamps in the same millisecond on several replicas */
    F_LONGVAL = 1 << 17, /* values of several hundred bytes */
    F_ALL = (1 << 18) - 1,
    F_MIGRATE = 1 << 18, /* devices upgrade through a random migration sequence */
    F_TRIG = 1 << 19     /* app triggers: audit table, counter, FTS5 index */
};

static const struct {
    const char *name; /* as written in KNIT_MODEL_FEATURES */
    unsigned bit;     /* its flag */
} FEATURES[] = {
    {"orset", F_ORSET},   {"notnull", F_NOTNULL}, {"check", F_CHECK},     {"default", F_DEFAULT},
    {"keys", F_KEYS},     {"keyupd", F_KEYUPD},   {"ident", F_IDENT},     {"longid", F_LONGID},
    {"alter", F_ALTER},   {"copy", F_COPY},       {"join", F_JOIN},       {"dup", F_DUP},
    {"direct", F_DIRECT}, {"fault", F_FAULT},     {"oom", F_OOM},         {"ns2", F_NS2},
    {"ties", F_TIES},     {"longval", F_LONGVAL}, {"migrate", F_MIGRATE}, {"trig", F_TRIG},
    {"all", F_ALL},
};

static unsigned parse_features(unsigned base)
{
    const char *e = getenv("KNIT_MODEL_FEATURES");
    unsigned f = base;
    int first = 1;
    if (!e)
        return base;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", e);
    for (char *tok = strtok(buf, ", "); tok; tok = strtok(NULL, ", ")) {
        int op = 0; /* 0 set, 1 add, 2 remove */
        if (*tok == '+')
            op = 1, tok++;
        else if (*tok == '-')
            op = 2, tok++;
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof FEATURES / sizeof FEATURES[0]; i++)
            if (strcmp(FEATURES[i].name, tok) == 0)
                bit = FEATURES[i].bit;
        if (!bit && strcmp(tok, "none") != 0) {
            fprintf(stderr, "unknown feature %s\n", tok);
            exit(2);
        }
        if (op == 0 && first)
            f = 0;
        first = 0;
        if (op == 2)
            f &= ~bit;
        else
            f |= bit;
    }
    return f;
}

static void features_str(unsigned f, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof FEATURES / sizeof FEATURES[0] - 1; i++)
        if (f & FEATURES[i].bit)
            off += (size_t)snprintf(buf + off, n - off, "%s%s", off ? "," : "", FEATURES[i].name);
    if (!off)
        snprintf(buf, n, "none");
}

/* ---------------------------------------------------------------------- */
/* Case state                                                              */

static unsigned F;            /* features of the running case */
static knit_rng_t R;          /* the case's random stream */
static uint64_t case_seed;    /* its seed */
static long case_no;          /* its number in this run */
static const char *case_name; /* the CTest case */
static int in_case;           /* a case is running (atexit reports) */
static char dir[300];         /* the case's directory */
static uint64_t wall;         /* every replica's wall clock, ms */
static rt_clock_t clk;        /* handed to knit_open (reads wall) */
static model_t M;             /* the reference model */
static void aside_counts(int r, long *refused, long *waiting);
static long app_counter(int r);

/* What a run exercised ("migrate", "trig"), printed at its end. */
static struct {
    long steps[4];     /* upgrade steps by MG_* kind */
    long strict;       /* rebuilds that added a constraint */
    long fixed;        /* rows the app fixed before such a rebuild */
    long backfilled;   /* rows backfilled by ADD COLUMN */
    long refused_seen; /* applies after which the replica held refused rows */
    long waiting_seen; /* ... waiting changes */
    long held;         /* upgrades that waited for refused rows */
    long fired;        /* applies that fired the insert trigger */
    long retry_left;   /* set-aside changes still there before the final retry */
} ST;

#define RND(n) ((int)knit_rng_below(&R, (uint64_t)(n)))
#define CHANCE(n) (knit_rng_below(&R, (uint64_t)(n)) == 0)

static const char *NSNAME[M_NNS] = {"ns:one", "ns:two"};

/* Trace of the last operations, printed on failure. */
#define TRACE_N 1024
static char trace[TRACE_N][240];
static long ntrace;

#ifdef __GNUC__
__attribute__((format(printf, 1, 2)))
#endif
static void
tr(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(trace[ntrace % TRACE_N], sizeof trace[0], fmt, ap);
    va_end(ap);
    ntrace++;
}

static void print_trace(void)
{
    const char *e = getenv("KNIT_TRACE");
    long n = e ? atol(e) : 80;
    if (n > TRACE_N)
        n = TRACE_N;
    long from = ntrace > n ? ntrace - n : 0;
    fprintf(stderr, "--- last %ld of %ld operations of case %ld ---\n", ntrace - from, ntrace,
            case_no);
    for (long i = from; i < ntrace; i++)
        fprintf(stderr, "  %4ld %s\n", i, trace[i % TRACE_N]);
}

static void print_repro(void)
{
    char fs[400];
    features_str(F, fs, sizeof fs);
    fprintf(stderr,
            "*** model case %ld failed (%s): reproduce with\n"
            "    KNIT_SEED=%" PRIu64 " KNIT_CASES=1 KNIT_MODEL_FEATURES=%s test_model %s\n",
            case_no, case_name, case_seed, fs, case_name);
}

static void case_report(void)
{
    if (!in_case)
        return;
    in_case = 0;
    print_trace();
    print_repro();
    if (!getenv("KNIT_KEEP") && dir[0]) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    } else if (dir[0]) {
        fprintf(stderr, "    files kept in %s\n", dir);
    }
}

static void on_signal(int sig)
{
    fprintf(stderr, "\n*** signal %d\n", sig);
    case_report();
    signal(sig, SIG_DFL);
    raise(sig);
}

#ifdef __GNUC__
__attribute__((format(printf, 1, 2), noreturn))
#endif
static void
fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\n*** FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    case_report();
    exit(1);
}

/* ---------------------------------------------------------------------- */
/* Schema                                                                  */

typedef struct mcol_s {
    char name[600]; /* column name */
    char decl[16];  /* declared type */
    int orset;      /* OR-set column */
    int notnull;    /* NOT NULL */
    int check;      /* 0 none, 1 length, 2 not 'forbidden', 3 integer or NULL */
    char dflt[24];  /* DEFAULT expression or "" */
    int later;      /* added by ALTER TABLE: the app version that adds it
                    ** (1 for the "alter" feature's one column; 0 = base) */
    int strict;     /* a rebuild adds 1 NOT NULL or 2 CHECK (c IS NOT 'bad') */
    int strict_ver; /* at that app version */
} mcol_t;

typedef struct mtab_s {
    char name[600];               /* table name */
    int npk;                      /* key columns */
    char pk[M_MAXPK][600];        /* their names */
    char pkdecl[M_MAXPK][8];      /* their declared types */
    int ncols;                    /* non-key columns, the later one included */
    mcol_t c[M_MAXC];             /* non-key columns */
    int worowid;                  /* WITHOUT ROWID */
    int has_later;                /* c[ncols - 1] is added later ("alter") */
    int born;                     /* app version that creates the table (0 = base) */
    mval_t key[M_NKEYS][M_MAXPK]; /* the key space */
    int ns[M_NKEYS];              /* namespace of each key */
} mtab_t;

static mtab_t T[M_MAXT];
static int NT;

/* OR-set element pool; a set is a bit mask over it. */
static const struct {
    int is_int;       /* integer element */
    int64_t i;        /* its value */
    const char *s;    /* text element */
    const char *json; /* as written in a JSON array */
} ELEM[] = {
    {0, 0, "a", "\"a\""},       {0, 0, "b", "\"b\""},     {0, 0, "c d", "\"c d\""},
    {1, 1, NULL, "1"},          {1, 2, NULL, "2"},        {1, 30, NULL, "30"},
    {0, 0, "it's", "\"it's\""}, {0, 0, "x.y", "\"x.y\""},
};
#define NELEM ((int)(sizeof ELEM / sizeof ELEM[0]))

static void make_ident(char *out, size_t n, const char *base, int idx, int allow_long)
{
    static const char *odd[] = {"my col", "a\"b", "x.y", "it's", "sp ace.\"q\"", "Ünï"};
    size_t off;
    if ((F & F_IDENT) && CHANCE(2))
        off = (size_t)snprintf(out, n, "%s %s%d", odd[RND(6)], base, idx);
    else
        off = (size_t)snprintf(out, n, "%s%d", base, idx);
    if ((F & F_LONGID) && allow_long && CHANCE(2)) {
        size_t want = 250 + (size_t)RND(270);
        while (off < want && off + 1 < n) {
            out[off] = "abcdefghijklmnopqrstuvwxyz_0123456789"[RND(37)];
            off++;
        }
        out[off] = 0;
    }
}

/* The app's versions ("migrate"): version v is the base schema after
** MIG[0..v-1].  Every device goes through the same sequence, each at its own
** moment, possibly several steps at once. */
enum { MG_ADDCOL = 1, MG_REBUILD, MG_NEWTABLE };
#define M_MAXMIG 5
#define V_ALL 1000 /* a version after every migration */
typedef struct mig_s {
    int kind; /* MG_* */
    int t;    /* table */
    int c;    /* ADDCOL: the added column; REBUILD: the column made stricter, or -1 */
} mig_t;
static mig_t MIG[M_MAXMIG];
static int NMIG;

static const char *mig_str(int s, char *buf, size_t n)
{
    const mig_t *m = &MIG[s];
    const mcol_t *col = m->c >= 0 ? &T[m->t].c[m->c] : NULL;
    if (m->kind == MG_ADDCOL)
        snprintf(buf, n, "v%d: ALTER TABLE t%d ADD COLUMN %d%s%s%s, knit_track", s + 1, m->t, m->c,
                 col->dflt[0] ? " DEFAULT " : " (no default)", col->dflt,
                 col->notnull ? " NOT NULL" : "");
    else if (m->kind == MG_REBUILD)
        snprintf(buf, n, "v%d: rebuild t%d%s%d%s", s + 1, m->t,
                 col ? ", column " : " (same schema)", col ? m->c : 0,
                 !col               ? ""
                 : col->strict == 1 ? " becomes NOT NULL"
                                    : " gets CHECK (IS NOT 'bad')");
    else
        snprintf(buf, n, "v%d: new tracked table t%d", s + 1, m->t);
    return buf;
}

static void gen_schema(void);

static void gen_migrations(void)
{
    NMIG = 0;
    if (!(F & F_MIGRATE))
        return;
    int n = 1 + RND(M_MAXMIG - 1);
    /* The last table may appear at one of the steps (never the trigger
    ** source, table 0). */
    int newt = NT >= 2 && !CHANCE(3) ? NT - 1 : -1;
    int born_step = newt >= 0 ? RND(n) : -1;
    if (newt >= 0)
        T[newt].born = V_ALL;
    for (int s = 0; s < n; s++) {
        mig_t *m = &MIG[NMIG++];
        int v = s + 1;
        m->c = -1;
        if (s == born_step) {
            m->kind = MG_NEWTABLE;
            m->t = newt;
            T[newt].born = v;
            continue;
        }
        int t;
        do
            t = RND(NT);
        while (T[t].born >= v);
        mtab_t *x = &T[t];
        m->t = t;
        if (x->ncols < M_MAXC && CHANCE(2)) {
            m->kind = MG_ADDCOL;
            m->c = x->ncols;
            mcol_t *col = &x->c[x->ncols++];
            memset(col, 0, sizeof *col);
            make_ident(col->name, sizeof col->name, "added", s, 1);
            snprintf(col->decl, sizeof col->decl, "%s",
                     (const char *[]){"", "TEXT", "INTEGER"}[RND(3)]);
            if (CHANCE(2)) {
                snprintf(col->dflt, sizeof col->dflt, "%s",
                         (const char *[]){"0", "'dflt'", "X'00'", "'later'"}[RND(4)]);
                col->notnull = (F & F_NOTNULL) && CHANCE(3);
            }
            col->later = v;
            continue;
        }
        m->kind = MG_REBUILD;
        int cand[M_MAXC], nc = 0;
        for (int c = 0; c < x->ncols; c++) {
            const mcol_t *col = &x->c[c];
            if (!col->later && !col->orset && !col->notnull && !col->check && !col->strict)
                cand[nc++] = c;
        }
        if (nc && !CHANCE(3)) {
            m->c = cand[RND(nc)];
            x->c[m->c].strict = 1 + RND(2);
            x->c[m->c].strict_ver = v;
        }
    }
}

static void gen_schema(void)
{
    NT = 1 + RND(3);
    memset(T, 0, sizeof T);
    for (int t = 0; t < NT; t++) {
        mtab_t *x = &T[t];
        make_ident(x->name, sizeof x->name, "tab", t, 1);
        x->worowid = CHANCE(3);
        /* The trigger source (table 0 with "trig") has one TEXT key:
        ** its audit rows are keyed 'ins:' || key. */
        int trig_src = (F & F_TRIG) && t == 0;
        x->npk = (F & F_KEYS) && !trig_src ? 1 + RND(2) : 1;
        /* key kinds: 0 TEXT, 1 INT, 2 BLOB, 3 untyped (mixed values) */
        int kinds[M_MAXPK];
        for (int j = 0; j < x->npk; j++) {
            kinds[j] = (F & F_KEYS) && !trig_src ? RND(4) : 0;
            make_ident(x->pk[j], sizeof x->pk[j], "id", j, 1);
            snprintf(x->pkdecl[j], sizeof x->pkdecl[j], "%s",
                     kinds[j] == 0   ? "TEXT"
                     : kinds[j] == 1 ? "INT"
                     : kinds[j] == 2 ? "BLOB"
                                     : "");
        }
        for (int k = 0; k < M_NKEYS; k++) {
            for (int j = 0; j < x->npk; j++) {
                mval_t *v = &x->key[k][j];
                int part = x->npk == 1 ? k : (j == 0 ? k % 3 : k / 3);
                int kind = kinds[j] == 3 ? part % 3 : kinds[j];
                memset(v, 0, sizeof *v);
                if (kind == 0) {
                    static const char *tk[] = {"k0", "k 1", "k'2", "K3", "k\"4", "k.5"};
                    v->t = SQLITE_TEXT;
                    v->n = (int)strlen(tk[part]);
                    memcpy(v->p, tk[part], (size_t)v->n);
                } else if (kind == 1) {
                    static const int64_t ik[] = {0, -1, 7, 1LL << 40, -123456789, 42};
                    v->t = SQLITE_INTEGER;
                    v->i = ik[part];
                } else {
                    v->t = SQLITE_BLOB;
                    v->n = part == 0 ? 0 : part;
                    for (int b = 0; b < v->n; b++)
                        v->p[b] = (unsigned char)(0xf0 + part * 3 + b);
                    if (kinds[j] == 3) { /* untyped: '1' vs 1 vs X'31' */
                        v->n = 1;
                        v->p[0] = (unsigned char)('0' + part);
                    }
                }
            }
            x->ns[k] = (F & F_NS2) ? RND(2) : 0;
        }
        int nbase = 1 + RND(4);
        for (int c = 0; c < nbase; c++) {
            mcol_t *col = &x->c[x->ncols++];
            make_ident(col->name, sizeof col->name, "col", c, 1);
            static const char *decls[] = {"", "TEXT", "INTEGER", "REAL", "NUMERIC", "BLOB"};
            snprintf(col->decl, sizeof col->decl, "%s", decls[RND(6)]);
            if ((F & F_NOTNULL) && CHANCE(2))
                col->notnull = 1;
            if ((F & F_DEFAULT) && CHANCE(2))
                snprintf(col->dflt, sizeof col->dflt, "%s",
                         (const char *[]){"0", "'dflt'", "X'00'", "2.5"}[RND(4)]);
            if ((F & F_CHECK) && CHANCE(2)) {
                col->check = 1 + RND(3);
                if (col->check == 3 && strcmp(col->decl, "") && strcmp(col->decl, "INTEGER"))
                    col->check = 1;
                if (col->check == 3 && col->dflt[0])
                    snprintf(col->dflt, sizeof col->dflt, "5");
            }
        }
        if ((F & F_ORSET) && !CHANCE(4)) {
            int nsets = 1 + CHANCE(3);
            for (int s = 0; s < nsets; s++) {
                mcol_t *col = &x->c[x->ncols++];
                make_ident(col->name, sizeof col->name, "tags", s, 0);
                snprintf(col->decl, sizeof col->decl, "%s", CHANCE(2) ? "TEXT" : "");
                col->orset = 1;
                if (CHANCE(2))
                    snprintf(col->dflt, sizeof col->dflt, "'[]'");
            }
        }
        if ((F & F_ALTER) && !(F & F_MIGRATE) && !CHANCE(3)) {
            mcol_t *col = &x->c[x->ncols++];
            make_ident(col->name, sizeof col->name, "added", 0, 1);
            snprintf(col->decl, sizeof col->decl, "%s", CHANCE(2) ? "TEXT" : "");
            snprintf(col->dflt, sizeof col->dflt, "'later'");
            col->notnull = (F & F_NOTNULL) && CHANCE(2);
            col->later = 1;
            x->has_later = 1;
        }
    }
    gen_migrations();
}

/* CREATE TABLE for t (named name, or its own name) at app version
** with_later: the columns added by then, the constraints a rebuild added by
** then ("alter": 1 includes its added column); model_db leaves out NOT NULL
** and CHECK (the model holds merged rows). */
static char *ddl_named(int t, int with_later, int model_db, const char *name)
{
    mtab_t *x = &T[t];
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "CREATE TABLE \"%w\"(", name ? name : x->name);
    for (int j = 0; j < x->npk; j++)
        sqlite3_str_appendf(s, "%s\"%w\" %s NOT NULL", j ? ", " : "", x->pk[j], x->pkdecl[j]);
    for (int c = 0; c < x->ncols; c++) {
        mcol_t *col = &x->c[c];
        if (col->later > with_later)
            continue;
        int strict = col->strict && col->strict_ver <= with_later && !model_db;
        sqlite3_str_appendf(s, ", \"%w\" %s", col->name, col->decl);
        if ((col->notnull || (strict && col->strict == 1)) && !model_db)
            sqlite3_str_appendf(s, " NOT NULL");
        if (strict && col->strict == 2)
            sqlite3_str_appendf(s, " CHECK (\"%w\" IS NOT 'bad')", col->name);
        if (col->dflt[0])
            sqlite3_str_appendf(s, " DEFAULT %s", col->dflt);
        if (col->check && !model_db)
            sqlite3_str_appendf(s, " CHECK (%s)",
                                col->check == 1   ? "length(\"%w\") <= 600"
                                : col->check == 2 ? "\"%w\" IS NOT 'forbidden'"
                                                  : "typeof(\"%w\") IN ('integer', 'null')");
    }
    sqlite3_str_appendf(s, ", PRIMARY KEY(");
    for (int j = 0; j < x->npk; j++)
        sqlite3_str_appendf(s, "%s\"%w\"", j ? ", " : "", x->pk[j]);
    sqlite3_str_appendf(s, "))%s", x->worowid ? " WITHOUT ROWID" : "");
    char *sql = sqlite3_str_finish(s);
    /* The CHECK format above holds %w for the column name: format again. */
    for (int c = 0; c < x->ncols; c++) {
        mcol_t *col = &x->c[c];
        if (!col->check || model_db || col->later > with_later)
            continue;
        char *p = strstr(sql, "%w");
        if (p) {
            *p = 0;
            char *n = sqlite3_mprintf("%s%w%s", sql, col->name, p + 2);
            sqlite3_free(sql);
            sql = n;
        }
    }
    return sql;
}

static char *ddl(int t, int with_later, int model_db)
{
    return ddl_named(t, with_later, model_db, NULL);
}

static char *track_spec(int t, int with_later)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    int n = 0;
    for (int c = 0; c < T[t].ncols; c++)
        if (T[t].c[c].orset && T[t].c[c].later <= with_later)
            sqlite3_str_appendf(s, "%s%s:orset", n++ ? "," : "", T[t].c[c].name);
    return sqlite3_str_finish(s);
}

/* A value column c may hold, within its constraints. */
static void gen_value(const mcol_t *col, mval_t *v)
{
    memset(v, 0, offsetof(mval_t, p));
    int pick = RND(col->check == 3 ? 2 : 6);
    if (pick == 0 && !col->notnull) {
        v->t = SQLITE_NULL;
        return;
    }
    if (pick <= 1) {
        static const int64_t iv[] = {0, 1, -3, 9, 1LL << 40, 100};
        v->t = SQLITE_INTEGER;
        v->i = iv[RND(6)];
    } else if (pick == 2) {
        static const double rv[] = {0.5, -2.25, 1e10, 3.0};
        v->t = SQLITE_FLOAT;
        v->r = rv[RND(4)];
    } else if (pick == 3) {
        static const char *sv[] = {"a", "b", "hello world", "it's", "x.y", "1"};
        const char *s = sv[RND(6)];
        v->t = SQLITE_TEXT;
        v->n = (int)strlen(s);
        memcpy(v->p, s, (size_t)v->n);
    } else if (pick == 4 && (F & F_LONGVAL)) {
        v->t = SQLITE_TEXT;
        v->n = 200 + RND(400);
        for (int i = 0; i < v->n; i++)
            v->p[i] = (unsigned char)"abcdefghij klmnop"[RND(17)];
    } else {
        v->t = SQLITE_BLOB;
        v->n = 1 + RND((F & F_LONGVAL) ? 300 : 8);
        for (int i = 0; i < v->n; i++)
            v->p[i] = (unsigned char)RND(256);
    }
}

static void mval_str(const mval_t *v, char *buf, size_t n)
{
    switch (v->t) {
    case SQLITE_INTEGER:
        snprintf(buf, n, "%lld", (long long)v->i);
        break;
    case SQLITE_FLOAT:
        snprintf(buf, n, "%.17g", v->r);
        break;
    case SQLITE_TEXT:
        snprintf(buf, n, "'%.*s'%s", v->n > 24 ? 24 : v->n, v->p, v->n > 24 ? "..." : "");
        break;
    case SQLITE_BLOB: {
        size_t off = (size_t)snprintf(buf, n, "X'");
        for (int i = 0; i < v->n && i < 12 && off + 3 < n; i++)
            off += (size_t)snprintf(buf + off, n - off, "%02X", v->p[i]);
        snprintf(buf + off, n - off, "'%s", v->n > 12 ? "..." : "");
        break;
    }
    default:
        snprintf(buf, n, "NULL");
    }
}

/* SQL literal of a value (for WHERE clauses in dumps). */
static char *mval_lit(const mval_t *v)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    switch (v->t) {
    case SQLITE_INTEGER:
        sqlite3_str_appendf(s, "%lld", (long long)v->i);
        break;
    case SQLITE_FLOAT:
        sqlite3_str_appendf(s, "%!.17g", v->r);
        break;
    case SQLITE_TEXT:
        sqlite3_str_appendf(s, "'%.*q'", v->n, v->p);
        break;
    case SQLITE_BLOB:
        sqlite3_str_appendf(s, "X'");
        for (int i = 0; i < v->n; i++)
            sqlite3_str_appendf(s, "%02X", v->p[i]);
        sqlite3_str_appendf(s, "'");
        break;
    default:
        sqlite3_str_appendf(s, "NULL");
    }
    return sqlite3_str_finish(s);
}

/* ---------------------------------------------------------------------- */
/* Replicas                                                                */

typedef uint64_t know_t[M_MAXT][M_NKEYS][M_MAXC][M_KW];

#define MAXPAGES 4
typedef struct page_s {
    knit_batch_t *b; /* a catch-up page or fan-out, owned */
    int ns;          /* its namespace */
    uint64_t from;   /* cursor it continues */
    uint64_t to;     /* cursor it brings a reader to */
    know_t know;     /* what the relay knew of its cells when it was read */
} page_t;

typedef struct rep_s {
    int alive;                    /* open and part of the case */
    char file[32];                /* file name in dir */
    knit_t *k;                    /* the replica */
    sqlite3 *db;                  /* the app's plain connection */
    uint8_t site[16];             /* site id (knit_site) */
    uint64_t hlc;                 /* model HLC (model.h note 1) */
    int alt[M_MAXT];              /* the added columns up to this version exist and
                                  ** are tracked ("alter": 0/1; "migrate": ver) */
    int ver;                      /* app version ("migrate") */
    long cnt;                     /* the trigger counter as the model predicts it */
    uint64_t scl[M_NKEYS];        /* life of each source row as written here ("trig") */
    uint64_t cl[M_MAXT][M_NKEYS]; /* known causal lengths (note 2) */
    /* newest life among the cells waiting here for column c (not added yet) */
    uint64_t wcl[M_MAXT][M_NKEYS][M_MAXC];
    know_t know;            /* OR-set adds known per cell (note 4) */
    uint64_t cursor[M_NNS]; /* relay cursor per namespace */
    int wns;                /* current write namespace */
    int sent_direct;        /* has sent raw batches: never retired */
    uint64_t sent[M_MAXR];  /* version sent directly to each peer */
    page_t pages[MAXPAGES]; /* held pages, for duplicates and delays */
    int npages;             /* pages held (ring) */
} rep_t;

static rep_t REP[M_MAXR];
static int NREP;
static knit_relay_store_t *S;
static know_t RKNOW;         /* what the relay knows (note 4) */
static page_t FAN[MAXPAGES]; /* recent fan-outs */
static int NFAN;
static int ns_used[M_NNS];

static const char *path_of(const char *name)
{
    static char buf[4][400];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, 400, "%s/%s", dir, name);
    return p;
}

static uint64_t clock_fn(void *data)
{
    (void)data;
    return wall;
}

static void plain_exec(int r, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(REP[r].db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail("r%d: SQL failed: %s\n  %.300s", r, err ? err : "?", sql);
}

static knit_t *open_replica(const char *file)
{
    knit_options_t o = {0};
    knit_t *k = NULL;
    o.clock = clock_fn;
    o.clock_data = &clk;
    int rc = knit_open(path_of(file), &o, &k);
    if (rc)
        fail("knit_open(%s): %s", file, knit_strerror(rc));
    return k;
}

static sqlite3 *open_plain(const char *file)
{
    sqlite3 *db = NULL;
    if (sqlite3_open(path_of(file), &db) != SQLITE_OK)
        fail("sqlite3_open(%s) failed", file);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void set_ns(int r, int ns)
{
    int rc = knit_set_namespace(REP[r].k, NSNAME[ns]);
    if (rc)
        fail("r%d: knit_set_namespace(%s): %s (%s)", r, NSNAME[ns], knit_strerror(rc),
             knit_errmsg(REP[r].k));
    REP[r].wns = ns;
}

static int alter_any[M_MAXT]; /* some replica has the added column */

/* ---------------------------------------------------------------------- */
/* App triggers ("trig")                                                    */

/* Table 0 is the source: an AFTER INSERT trigger writes the tracked audit
** table under 'ins:' || key (INSERT OR REPLACE, as ARCHITECTURE.md says)
** and bumps a counter in an untracked table; insert, update and delete
** triggers keep an FTS5 index of column 0.  The model predicts the audit
** rows (one per source key ever inserted on any device, by the app or by
** knit's apply), each device's counter, and checks the index against the
** table. */
#define AUDIT "audit log"
#define COUNTER "app counter"
#define FTS "src fts"
static int AUD[M_NKEYS]; /* source key k was inserted somewhere */

static void app_triggers(int r)
{
    mtab_t *x = &T[0];
    char *sql = sqlite3_mprintf(
        "CREATE TRIGGER \"app ins\" AFTER INSERT ON \"%w\" BEGIN"
        " INSERT OR REPLACE INTO \"%w\"(id, src, note) VALUES ('ins:' || NEW.\"%w\", NEW.\"%w\","
        " 'inserted');"
        " INSERT INTO \"%w\"(name, n) VALUES ('src', 1) ON CONFLICT(name) DO UPDATE SET n = n + 1;"
        " DELETE FROM \"%w\" WHERE id = NEW.\"%w\";"
        " INSERT INTO \"%w\"(id, body) VALUES (NEW.\"%w\", NEW.\"%w\"); END;"
        "CREATE TRIGGER \"app upd\" AFTER UPDATE ON \"%w\" BEGIN"
        " DELETE FROM \"%w\" WHERE id = OLD.\"%w\";"
        " INSERT INTO \"%w\"(id, body) VALUES (NEW.\"%w\", NEW.\"%w\"); END;"
        "CREATE TRIGGER \"app del\" AFTER DELETE ON \"%w\" BEGIN"
        " DELETE FROM \"%w\" WHERE id = OLD.\"%w\"; END;",
        x->name, AUDIT, x->pk[0], x->pk[0], COUNTER, FTS, x->pk[0], FTS, x->pk[0], x->c[0].name,
        x->name, FTS, x->pk[0], FTS, x->pk[0], x->c[0].name, x->name, FTS, x->pk[0]);
    plain_exec(r, sql);
    sqlite3_free(sql);
}

static void app_tables(int r)
{
    char *sql = sqlite3_mprintf("CREATE TABLE \"%w\"(id TEXT PRIMARY KEY, src, note);"
                                "CREATE TABLE \"%w\"(name TEXT PRIMARY KEY, n INTEGER);"
                                "CREATE VIRTUAL TABLE \"%w\" USING fts5(id UNINDEXED, body);",
                                AUDIT, COUNTER, FTS);
    plain_exec(r, sql);
    sqlite3_free(sql);
    app_triggers(r);
    int rc = knit_track(REP[r].k, AUDIT, NULL);
    if (rc)
        fail("r%d: knit_track(%s): %s (%s)", r, AUDIT, knit_strerror(rc), knit_errmsg(REP[r].k));
}

/* A new, empty device with the app's current schema. */
static int rep_fresh(void)
{
    if (NREP >= M_MAXR)
        return -1;
    int r = NREP++;
    rep_t *p = &REP[r];
    memset(p, 0, sizeof *p);
    snprintf(p->file, sizeof p->file, "r%d.db", r);
    p->k = open_replica(p->file);
    p->db = open_plain(p->file);
    p->alive = 1;
    knit_site_t s;
    knit_site(p->k, &s);
    memcpy(p->site, s.b, 16);
    if (F & F_MIGRATE) {
        /* A new install runs the newest app version any device runs. */
        int v = 0;
        for (int q = 0; q < r; q++)
            if (REP[q].alive && REP[q].ver > v)
                v = REP[q].ver;
        p->ver = v;
        for (int t = 0; t < NT; t++)
            alter_any[t] = v;
    }
    for (int t = 0; t < NT; t++) {
        if (T[t].born > p->ver)
            continue;
        char *sql = ddl(t, alter_any[t], 0);
        plain_exec(r, sql);
        sqlite3_free(sql);
        char *spec = track_spec(t, alter_any[t]);
        int rc = knit_track(p->k, T[t].name, spec);
        if (rc)
            fail("r%d: knit_track(table %d, \"%.60s...\" (%zu bytes), spec \"%.60s\"): %s (%s)", r,
                 t, T[t].name, strlen(T[t].name), spec, knit_strerror(rc), knit_errmsg(p->k));
        sqlite3_free(spec);
        p->alt[t] = alter_any[t];
    }
    if (F & F_MIGRATE)
        for (int t = 0; t < NT; t++)
            p->alt[t] = p->ver;
    if (F & F_TRIG)
        app_tables(r);
    set_ns(r, 0);
    tr("r%d: new device, site %02x%02x", r, p->site[0], p->site[1]);
    return r;
}

/* The model's next stamp of replica r (model.h note 1). */
static uint64_t tick(int r)
{
    uint64_t h = wall << 16;
    if (h <= REP[r].hlc)
        h = REP[r].hlc + 1;
    REP[r].hlc = h;
    return h;
}

/* The commit time a capture trigger logs, computed as it does. */
static uint64_t write_time(int r)
{
    sqlite3_stmt *st = NULL;
    uint64_t at = 0;
    /* The trigger logs julianday(); the stamp rounds it to the nearest ms. */
    if (sqlite3_prepare_v2(REP[r].db, "SELECT julianday()", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        double ms = (sqlite3_column_double(st, 0) - 2440587.5) * 86400000.0;
        at = (uint64_t)(ms + 0.5);
    }
    sqlite3_finalize(st);
    return at;
}

/* SQLite's 'now' is the test's wall clock too: a VFS over the fault VFS
** that answers the time from `wall` (Julian day number in ms). */
#define JD_UNIX_EPOCH_MS INT64_C(210866760000000)
static sqlite3_vfs time_vfs;

static int tv_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    *out = (sqlite3_int64)wall + JD_UNIX_EPOCH_MS;
    return SQLITE_OK;
}

static int tv_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    *out = (double)((sqlite3_int64)wall + JD_UNIX_EPOCH_MS) / 86400000.0;
    return SQLITE_OK;
}

static void time_vfs_install(void)
{
    fault_vfs_install();
    time_vfs = fault_vfs; /* every fv_* call goes to the real VFS beneath */
    time_vfs.zName = "knit-model-time";
    time_vfs.xCurrentTime = tv_time;
    time_vfs.xCurrentTimeInt64 = tv_time64;
    sqlite3_vfs_register(&time_vfs, 1);
}

static void advance_clock(void)
{
    if (!(F & F_TIES) || !CHANCE(3))
        wall += 1 + (uint64_t)RND(3);
}

/* ---------------------------------------------------------------------- */
/* Fault injection                                                          */

static int arm_faults(void)
{
    int armed = 0;
    if ((F & F_FAULT) && CHANCE(5)) {
        fault_arm(1 + RND(12), 0);
        armed |= 1;
    }
    if ((F & F_OOM) && CHANCE(5)) {
        knit__alloc_fail_at(1 + RND(300), 0);
        armed |= 2;
    }
    return armed;
}

static void disarm_faults(void)
{
    fault_arm(0, 0);
    knit__alloc_fail_at(0, 0);
}

static int faults_off;  /* the final sync runs without faults */
static int verify_each; /* KNIT_MODEL_VERIFY: knit_verify after every apply and stamp */

static void verify_problem(void *data, const char *table, const char *pk, const char *msg)
{
    fprintf(stderr, "  verify r%d: %.80s %s: %s\n", *(int *)data, table ? table : "-",
            pk ? pk : "-", msg);
}

static void check_verify(int r, const char *after)
{
    int rr = r;
    int n = knit_verify(REP[r].k, verify_problem, &rr);
    if (n != 0)
        fail("r%d: knit_verify found %d problem(s) after %s", r, n, after);
}

/* After an injected failure: the error is clean and the replica consistent. */
static void check_clean_failure(int r, int rc, const char *what)
{
    if (rc != KNIT_EIO && rc != KNIT_ENOMEM && rc != KNIT_EDB)
        fail("r%d: %s failed under an injected fault with %s (%s); want EIO, ENOMEM or EDB", r,
             what, knit_err_name(rc), knit_errmsg(REP[r].k));
    check_verify(r, what);
}

/* ---------------------------------------------------------------------- */
/* Local writes                                                             */

static int col_here(int r, int t, int c)
{
    return T[t].c[c].later <= REP[r].alt[t];
}

static int tab_here(int r, int t)
{
    return T[t].born <= REP[r].ver;
}

/* Column c is under the constraint a rebuild added, on replica r. */
static int col_strict(int r, int t, int c)
{
    return T[t].c[c].strict && T[t].c[c].strict_ver <= REP[r].ver;
}

static int col_notnull(int r, int t, int c)
{
    return T[t].c[c].notnull || (col_strict(r, t, c) && T[t].c[c].strict == 1);
}

/* A value the stricter constraint of column c refuses. */
static int is_bad(const mcol_t *col, const mval_t *v)
{
    if (col->strict == 1)
        return v->t == SQLITE_NULL;
    return col->strict == 2 && v->t == SQLITE_TEXT && v->n == 3 && !memcmp(v->p, "bad", 3);
}

/* Reads the row of key k in table t on replica r: columns c[0..ncols) that
** exist there (others are left NULL).  Returns 1 if present. */
static int row_read(int r, int t, int k, mval_t *out)
{
    mtab_t *x = &T[t];
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "SELECT 1");
    for (int c = 0; c < x->ncols; c++)
        if (col_here(r, t, c))
            sqlite3_str_appendf(s, ", \"%w\"", x->c[c].name);
    sqlite3_str_appendf(s, " FROM \"%w\" WHERE ", x->name);
    for (int j = 0; j < x->npk; j++)
        sqlite3_str_appendf(s, "%s\"%w\" = ?%d", j ? " AND " : "", x->pk[j], j + 1);
    char *sql = sqlite3_str_finish(s);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(REP[r].db, sql, -1, &st, NULL) != SQLITE_OK)
        fail("r%d: %s\n  %.300s", r, sqlite3_errmsg(REP[r].db), sql);
    sqlite3_free(sql);
    for (int j = 0; j < x->npk; j++)
        mval_bind(st, j + 1, &x->key[k][j]);
    int present = sqlite3_step(st) == SQLITE_ROW;
    for (int c = 0, i = 1; c < x->ncols; c++) {
        memset(&out[c], 0, offsetof(mval_t, p));
        out[c].t = SQLITE_NULL;
        if (present && col_here(r, t, c))
            mval_col(st, i++, &out[c]);
    }
    sqlite3_finalize(st);
    return present;
}

/* Replica r holds a row of key k of table t set aside as refused.  The app
** does not write such a row there: the row's life on that device is not the
** one the model learned from the batches it received (the model knows no
** metadata), so neither would be its write.  What a write there does is
** tested in test_apply.c (refused_later_life_*). */
static int key_refused(int r, int t, int k);

static int key_blocked(int r, int t, int k)
{
    return key_refused(r, t, k);
}

static int key_refused(int r, int t, int k)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    for (int j = 0; j < T[t].npk; j++) {
        char *lit = mval_lit(&T[t].key[k][j]);
        sqlite3_str_appendf(s, "%s%s", j ? ", " : "", lit);
        sqlite3_free(lit);
    }
    char *key = sqlite3_str_finish(s);
    sqlite3_stmt *st = NULL;
    int found = 0;
    if (sqlite3_prepare_v2(REP[r].db,
                           "SELECT 1 FROM _knit_aside WHERE kind = 'refused' AND tbl = ?1 AND"
                           " key = ?2",
                           -1, &st, NULL) != SQLITE_OK)
        fail("r%d: reading _knit_aside: %s", r, sqlite3_errmsg(REP[r].db));
    sqlite3_bind_text(st, 1, T[t].name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    sqlite3_free(key);
    return found;
}

/* Elements of an OR-set column value (a JSON array) as a mask. */
static unsigned set_elems(int r, const mval_t *v)
{
    unsigned m = 0;
    if (v->t == SQLITE_NULL)
        return 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(REP[r].db, "SELECT type, value FROM json_each(?1)", -1, &st, NULL))
        fail("json_each: %s", sqlite3_errmsg(REP[r].db));
    mval_bind(st, 1, v);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *type = (const char *)sqlite3_column_text(st, 0);
        int found = -1;
        for (int e = 0; e < NELEM && found < 0; e++) {
            if (ELEM[e].is_int && type && !strcmp(type, "integer") &&
                sqlite3_column_int64(st, 1) == ELEM[e].i)
                found = e;
            if (!ELEM[e].is_int && type && !strcmp(type, "text") &&
                !strcmp((const char *)sqlite3_column_text(st, 1), ELEM[e].s))
                found = e;
        }
        if (found < 0)
            fail("r%d: OR-set value %.*s holds an element outside the pool", r, v->n, v->p);
        m |= 1u << found;
    }
    sqlite3_finalize(st);
    return m;
}

/* A JSON array for the elements of mask, in random order with a random
** duplicate (the app need not write canonical arrays). */
static void set_json(unsigned mask, mval_t *v)
{
    int order[NELEM], n = 0;
    for (int e = 0; e < NELEM; e++)
        if (mask >> e & 1)
            order[n++] = e;
    for (int i = n - 1; i > 0; i--) {
        int j = RND(i + 1), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    memset(v, 0, offsetof(mval_t, p));
    v->t = SQLITE_TEXT;
    size_t off = 0;
    v->p[off++] = '[';
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf((char *)v->p + off, M_VMAX - off, "%s%s", i ? "," : "",
                                ELEM[order[i]].json);
    if (n && CHANCE(4))
        off += (size_t)snprintf((char *)v->p + off, M_VMAX - off, ",%s", ELEM[order[0]].json);
    v->p[off++] = ']';
    v->n = (int)off;
}

/* A value for column c written on replica r.  A device that does not have
** a constraint a later version adds writes what that constraint refuses
** (NULL, 'bad') one time in three; one that has it never does. */
static void gen_cell(int r, int t, int c, mval_t *v)
{
    mcol_t col = T[t].c[c];
    if (col.strict) {
        if (col_strict(r, t, c)) {
            col.notnull |= col.strict == 1;
        } else if (CHANCE(3)) {
            memset(v, 0, offsetof(mval_t, p));
            v->t = col.strict == 1 ? SQLITE_NULL : SQLITE_TEXT;
            if (col.strict == 2) {
                v->n = 3;
                memcpy(v->p, "bad", 3);
            }
            return;
        }
    }
    if (col.orset) {
        if (CHANCE(6) && !col.notnull) {
            memset(v, 0, offsetof(mval_t, p));
            v->t = SQLITE_NULL;
        } else {
            set_json((unsigned)RND(1 << NELEM) & (unsigned)RND(1 << NELEM), v);
        }
    } else {
        gen_value(&col, v);
    }
}

/* One touched key and what the model needs of it. */
typedef struct touch_s {
    int t, k;         /* table, key */
    int replace;      /* written by an INSERT (all columns), not an UPDATE */
    int move;         /* the new key of an UPDATE of the key */
    int before;       /* present before */
    mval_t b[M_MAXC]; /* values before */
    int after;        /* present after the commit */
    mval_t a[M_MAXC]; /* values after the commit, before the stamp */
} touch_t;

/* Runs one statement with bound values; fails the case if SQLite refuses
** (the generator only writes valid rows). */
static void run_stmt(int r, const char *sql, const mval_t *const *vals, int nvals)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(REP[r].db, sql, -1, &st, NULL) != SQLITE_OK)
        fail("r%d: prepare: %s\n  %.400s", r, sqlite3_errmsg(REP[r].db), sql);
    for (int i = 0; i < nvals; i++)
        mval_bind(st, i + 1, vals[i]);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        fail("r%d: write refused: %s\n  %.400s", r, sqlite3_errmsg(REP[r].db), sql);
    sqlite3_finalize(st);
}

static void where_key(sqlite3_str *s, int t, int *param)
{
    for (int j = 0; j < T[t].npk; j++)
        sqlite3_str_appendf(s, "%s\"%w\" = ?%d", j ? " AND " : "", T[t].pk[j], (*param)++);
}

/* Writes a random statement for key k of table t on replica r; records
** into tc[*ntc] (and one more for a key change). */
static void write_key(int r, int t, int k, touch_t *tc, int *ntc, int *used)
{
    mtab_t *x = &T[t];
    touch_t *me = &tc[(*ntc)++];
    me->t = t;
    me->k = k;
    me->replace = 0;
    me->move = 0;
    me->before = row_read(r, t, k, me->b);
    mval_t vals[M_MAXC];
    const mval_t *bind[M_MAXC * 2 + M_MAXPK * 2];
    int nb = 0, param = 1;
    char desc[200];
    sqlite3_str *s = sqlite3_str_new(NULL);
    int op = me->before ? RND(6) : RND(3) + 10;
    if (op == 4 && !(F & F_KEYUPD))
        op = 0;
    if (op == 5 && !(F & F_ORSET))
        op = 3;
    if (op == 10 || op == 11 || op == 12 || op == 2) {
        /* INSERT / INSERT OR REPLACE / upsert / REPLACE of a present row */
        int ins = op == 10 ? 0 : op == 11 || op == 2 ? 1 : 2;
        sqlite3_str_appendf(s, "INSERT %sINTO \"%w\"(", ins == 1 ? "OR REPLACE " : "", x->name);
        for (int j = 0; j < x->npk; j++) {
            sqlite3_str_appendf(s, "%s\"%w\"", j ? ", " : "", x->pk[j]);
            bind[nb++] = &x->key[k][j];
        }
        int given[M_MAXC] = {0};
        for (int c = 0; c < x->ncols; c++) {
            if (!col_here(r, t, c))
                continue;
            given[c] =
                col_notnull(r, t, c) && !x->c[c].dflt[0] ? 1 : !(F & F_DEFAULT) || !CHANCE(3);
            if (!given[c])
                continue;
            gen_cell(r, t, c, &vals[c]);
            sqlite3_str_appendf(s, ", \"%w\"", x->c[c].name);
            bind[nb++] = &vals[c];
        }
        sqlite3_str_appendf(s, ") VALUES (");
        for (int i = 0; i < nb; i++)
            sqlite3_str_appendf(s, "%s?%d", i ? ", " : "", i + 1);
        sqlite3_str_appendf(s, ")");
        if (ins == 2) {
            sqlite3_str_appendf(s, " ON CONFLICT(");
            for (int j = 0; j < x->npk; j++)
                sqlite3_str_appendf(s, "%s\"%w\"", j ? ", " : "", x->pk[j]);
            sqlite3_str_appendf(s, ") DO UPDATE SET ");
            int n = 0;
            for (int c = 0; c < x->ncols; c++)
                if (given[c])
                    sqlite3_str_appendf(s, "%s\"%w\" = excluded.\"%w\"", n++ ? ", " : "",
                                        x->c[c].name, x->c[c].name);
            if (!n)
                sqlite3_str_appendf(s, "\"%w\" = excluded.\"%w\"", x->pk[0], x->pk[0]);
        }
        me->replace = ins != 2 || !me->before;
        snprintf(desc, sizeof desc, "%s", ins == 0 ? "INSERT" : ins == 1 ? "REPLACE" : "UPSERT");
    } else if (op == 3) {
        sqlite3_str_appendf(s, "DELETE FROM \"%w\" WHERE ", x->name);
        where_key(s, t, &param);
        for (int j = 0; j < x->npk; j++)
            bind[nb++] = &x->key[k][j];
        snprintf(desc, sizeof desc, "DELETE");
    } else if (op == 4) {
        /* Key change to an absent key of the same namespace. */
        int to = -1;
        for (int tries = 0; tries < 8 && to < 0; tries++) {
            int cand = RND(M_NKEYS);
            mval_t tmp[M_MAXC];
            if (cand == k || x->ns[cand] != x->ns[k] || used[t * M_NKEYS + cand] ||
                key_blocked(r, t, cand))
                continue;
            if (!row_read(r, t, cand, tmp))
                to = cand;
        }
        if (to < 0) {
            sqlite3_str_appendf(s, "DELETE FROM \"%w\" WHERE ", x->name);
            where_key(s, t, &param);
            for (int j = 0; j < x->npk; j++)
                bind[nb++] = &x->key[k][j];
            snprintf(desc, sizeof desc, "DELETE");
        } else {
            used[t * M_NKEYS + to] = 1;
            touch_t *o = &tc[(*ntc)++];
            o->t = t;
            o->k = to;
            o->replace = 1;
            o->move = 1;
            o->before = 0;
            sqlite3_str_appendf(s, "UPDATE \"%w\" SET ", x->name);
            for (int j = 0; j < x->npk; j++) {
                sqlite3_str_appendf(s, "%s\"%w\" = ?%d", j ? ", " : "", x->pk[j], param++);
                bind[nb++] = &x->key[to][j];
            }
            sqlite3_str_appendf(s, " WHERE ");
            where_key(s, t, &param);
            for (int j = 0; j < x->npk; j++)
                bind[nb++] = &x->key[k][j];
            snprintf(desc, sizeof desc, "MOVE to k%d", to);
        }
    } else {
        /* UPDATE of one to three columns (op 5: an OR-set edit) */
        sqlite3_str_appendf(s, "UPDATE \"%w\" SET ", x->name);
        int n = 0;
        for (int c = 0; c < x->ncols; c++) {
            if (!col_here(r, t, c))
                continue;
            int pick = op == 5 ? x->c[c].orset && CHANCE(2) : CHANCE(2);
            if (!pick)
                continue;
            if (op == 5 && x->c[c].orset) {
                unsigned cur = set_elems(r, &me->b[c]);
                cur ^= 1u << RND(NELEM);
                if (CHANCE(3))
                    cur ^= 1u << RND(NELEM);
                set_json(cur, &vals[c]);
            } else {
                gen_cell(r, t, c, &vals[c]);
            }
            sqlite3_str_appendf(s, "%s\"%w\" = ?%d", n++ ? ", " : "", x->c[c].name, param++);
            bind[nb++] = &vals[c];
        }
        if (!n) {
            sqlite3_str_appendf(s, "\"%w\" = \"%w\"", x->pk[0], x->pk[0]);
        }
        sqlite3_str_appendf(s, " WHERE ");
        where_key(s, t, &param);
        for (int j = 0; j < x->npk; j++)
            bind[nb++] = &x->key[k][j];
        snprintf(desc, sizeof desc, "%s %d col(s)", op == 5 ? "SET-EDIT" : "UPDATE", n);
    }
    char *sql = sqlite3_str_finish(s);
    run_stmt(r, sql, bind, nb);
    sqlite3_free(sql);
    tr("r%d: %s t%d k%d%s", r, desc, t, k, me->before ? "" : " (absent)");
}

/* Records what one stamped write did, for one key (model.h notes 2-4).
** Returns 1 if the key's write was captured (a log row). */
static int model_record(int r, const touch_t *tc, int *need_hlc)
{
    rep_t *p = &REP[r];
    mtab_t *x = &T[tc->t];
    int t = tc->t, k = tc->k;
    const mval_t *a = tc->a;
    int after = tc->after;
    uint64_t *cl = &p->cl[t][k];
    int logged = 0;
    if (!tc->before && !after)
        return 0;
    if (tc->before && !after) {
        /* delete: liveness of the next even life */
        if (!(*cl & 1))
            fail("r%d: t%d k%d was present while its known causal length %llu is even", r, t, k,
                 (unsigned long long)*cl);
        *cl += 1;
        if (*cl > M.maxcl[t][k])
            M.maxcl[t][k] = *cl;
        *need_hlc = 1;
        return 1;
    }
    int insert = !tc->before || tc->replace;
    if (!tc->before && !(*cl & 1))
        *cl += 1; /* an insert of an absent row starts the next odd life */
    else if (tc->before && !(*cl & 1))
        fail("r%d: t%d k%d was present while its known causal length %llu is even", r, t, k,
             (unsigned long long)*cl);
    if (*cl > M.maxcl[t][k])
        M.maxcl[t][k] = *cl;
    for (int c = 0; c < x->ncols; c++) {
        if (!col_here(r, t, c))
            continue;
        int changed = !tc->before || !mval_eq(&tc->b[c], &a[c]);
        if (changed || insert || getenv("KNIT_MODEL_DEBUG")) {
            char v1[80], v2[80];
            mval_str(&tc->b[c], v1, sizeof v1);
            mval_str(&a[c], v2, sizeof v2);
            tr("r%d:     t%d k%d col %d: %s -> %s", r, t, k, c, tc->before ? v1 : "(absent)", v2);
        }
        if (insert || changed)
            logged = 1;
        if (x->c[c].orset) {
            unsigned bm = tc->before ? set_elems(r, &tc->b[c]) : 0;
            unsigned am = set_elems(r, &a[c]);
            for (int e = 0; e < NELEM; e++) {
                if ((am >> e & 1) && !(bm >> e & 1)) {
                    int id = model_add(&M, t, k, c, e, *cl);
                    if (id >= 0)
                        p->know[t][k][c][id / 64] |= UINT64_C(1) << (id % 64);
                } else if (!(am >> e & 1) && (bm >> e & 1)) {
                    model_rem(&M, t, k, c, e, *cl, p->know[t][k][c]);
                }
            }
        } else if (insert || changed) {
            mwrite_t w;
            memset(&w, 0, offsetof(mwrite_t, v));
            w.cl = *cl;
            w.rep = r;
            memcpy(w.site, p->site, 16);
            w.v = a[c];
            w.hlc = 0; /* filled in by the caller once the stamp is known */
            model_lww(&M, t, k, c, &w);
        }
    }
    if (logged)
        *need_hlc = 1;
    return logged;
}

/* Marks the LWW writes recorded since the given counts with stamp hlc. */
static void fill_hlc(int counts[M_MAXT][M_NKEYS][M_MAXC], uint64_t hlc)
{
    for (int t = 0; t < NT; t++)
        for (int k = 0; k < M_NKEYS; k++)
            for (int c = 0; c < T[t].ncols; c++) {
                mcell_t *x = &M.cell[t][k][c];
                for (int i = counts[t][k][c]; i < x->nw; i++)
                    x->w[i].hlc = hlc;
            }
}

/* The same for key k of table t only. */
static void fill_hlc_key(int counts[M_MAXT][M_NKEYS][M_MAXC], int t, int k, uint64_t hlc)
{
    for (int c = 0; c < T[t].ncols; c++) {
        mcell_t *x = &M.cell[t][k][c];
        for (int i = counts[t][k][c]; i < x->nw; i++)
            x->w[i].hlc = hlc;
    }
}

static void snapshot_counts(int counts[M_MAXT][M_NKEYS][M_MAXC])
{
    for (int t = 0; t < M_MAXT; t++)
        for (int k = 0; k < M_NKEYS; k++)
            for (int c = 0; c < M_MAXC; c++)
                counts[t][k][c] = M.cell[t][k][c].nw;
}

/* Stamps replica r, retrying after injected faults; returns rows stamped. */
static int stamp(int r)
{
    for (int attempt = 0;; attempt++) {
        int armed = attempt == 0 && !faults_off ? arm_faults() : 0;
        int rc = knit_stamp(REP[r].k);
        disarm_faults();
        if (rc >= 0) {
            if (verify_each)
                check_verify(r, "a stamp");
            return rc;
        }
        if (!armed || attempt > 3)
            fail("r%d: knit_stamp: %s (%s)", r, knit_err_name(rc), knit_errmsg(REP[r].k));
        tr("r%d:   stamp failed under fault: %s", r, knit_err_name(rc));
        check_clean_failure(r, rc, "a failed stamp");
    }
}

static void commit_record(int r, touch_t *tc, int ntc);

/* The newest stamp among the cells replica r holds for key k of table t, 0
** when it holds no metadata for the row: the stamp r gives its next write
** of that row beats it (stamp.c design note 1).  Read from knit's own
** metadata, as the write itself saw it, before the stamp. */
static uint64_t row_newest(int r, int t, int k)
{
    mtab_t *x = &T[t];
    sqlite3_stmt *st = NULL;
    uint64_t newest = 0;
    int id = -1;
    if (sqlite3_prepare_v2(REP[r].db, "SELECT id FROM _knit_tables WHERE name = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        fail("r%d: reading _knit_tables: %s", r, sqlite3_errmsg(REP[r].db));
    sqlite3_bind_text(st, 1, x->name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        id = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (id < 0)
        return 0;
    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_str_appendf(q, "SELECT cells FROM _knit_rows_%d WHERE ", id);
    for (int j = 0; j < x->npk; j++)
        sqlite3_str_appendf(q, "%sk%d = ?%d", j ? " AND " : "", j, j + 1);
    char *sql = sqlite3_str_finish(q);
    if (sqlite3_prepare_v2(REP[r].db, sql, -1, &st, NULL) != SQLITE_OK)
        fail("r%d: %s", r, sqlite3_errmsg(REP[r].db));
    sqlite3_free(sql);
    for (int j = 0; j < x->npk; j++)
        mval_bind(st, j + 1, &x->key[k][j]);
    if (sqlite3_step(st) == SQLITE_ROW) {
        const uint8_t *p = sqlite3_column_blob(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0), used;
        uint64_t count = 0;
        kcell_t cells[KNIT_MAX_COLS + 1];
        if (knit_varint_get(p, n, &count, &used) || count > KNIT_MAX_COLS + 1 ||
            knit__cells_decode(p, n, (uint32_t)count, cells))
            fail("r%d: t%d k%d: cells blob does not decode", r, t, k);
        for (uint64_t i = 0; i < count; i++)
            if (cells[i].hlc > newest)
                newest = cells[i].hlc;
    }
    sqlite3_finalize(st);
    return newest;
}

/* A transaction of one to three writes on distinct keys of one namespace,
** then a stamp. */
static void write_group(int r)
{
    int ns = (F & F_NS2) ? RND(2) : 0;
    touch_t tc[8];
    int ntc = 0, used[M_MAXT * M_NKEYS] = {0};
    int n = 1 + RND(3);
    if (REP[r].wns != ns)
        set_ns(r, ns);
    ns_used[ns] = 1;
    plain_exec(r, "BEGIN");
    for (int i = 0; i < n; i++) {
        int t = RND(NT), k = RND(M_NKEYS);
        if (T[t].ns[k] != ns || used[t * M_NKEYS + k] || !tab_here(r, t) || key_blocked(r, t, k))
            continue;
        used[t * M_NKEYS + k] = 1;
        write_key(r, t, k, tc, &ntc, used);
    }
    commit_record(r, tc, ntc);
}

/* Commits the app's open transaction on r, stamps it and records in the
** model what it wrote (the touched keys in tc). */
static void commit_record(int r, touch_t *tc, int ntc)
{
    int counts[M_MAXT][M_NKEYS][M_MAXC];
    plain_exec(r, "COMMIT");
    /* The stamp of a write is min(tick, at << 16), raised just above the
    ** newest cell its row held (never beyond the tick): at is the commit's
    ** wall time as the capture trigger logs it (stamp.c design note 1).
    ** Sometimes the stamp comes a few milliseconds after the commit (a
    ** write made while no agent ran). */
    uint64_t at = write_time(r), seen[M_NKEYS + 8]; /* ntc <= 8 or M_NKEYS */
    for (int i = 0; i < ntc; i++)
        seen[i] = row_newest(r, tc[i].t, tc[i].k);
    for (int i = 0; i < ntc; i++)
        tc[i].after = row_read(r, tc[i].t, tc[i].k, tc[i].a);
    if (CHANCE(4))
        wall += 1 + (uint64_t)RND(5);
    advance_clock();
    int rows = stamp(r);
    snapshot_counts(counts);
    int need = 0, logged = 0;
    for (int i = 0; i < ntc; i++)
        logged |= model_record(r, &tc[i], &need);
    if ((rows > 0) != (logged > 0))
        fail("r%d: knit_stamp stamped %d rows; the writes %s captured", r, rows,
             logged ? "should have been" : "should not have been");
    if (need) {
        uint64_t t = tick(r);
        uint64_t h = at << 16 > 1 ? at << 16 : 1;
        if (h > t)
            h = t;
        fill_hlc(counts, h);
        for (int i = 0; i < ntc; i++) {
            uint64_t floor_hlc = seen[i] < t ? seen[i] + 1 : t;
            if (h > 1 && h < floor_hlc) {
                fill_hlc_key(counts, tc[i].t, tc[i].k, floor_hlc);
                tr("r%d:   t%d k%d raised above its row's newest cell: hlc %llu.%llu", r, tc[i].t,
                   tc[i].k, (unsigned long long)(floor_hlc >> 16),
                   (unsigned long long)(floor_hlc & 0xffff));
            }
        }
        tr("r%d:   stamp %d row(s) written at %llu: hlc %llu.%llu (tick %llu.%llu)", r, rows,
           (unsigned long long)at, (unsigned long long)(h >> 16), (unsigned long long)(h & 0xffff),
           (unsigned long long)(t >> 16), (unsigned long long)(t & 0xffff));
    }
    if (F & F_TRIG)
        for (int i = 0; i < ntc; i++)
            if (tc[i].t == 0 && tc[i].replace && !tc[i].move && tc[i].after) {
                /* the app's INSERT fired the source's insert trigger */
                REP[r].cnt++;
                AUD[tc[i].k] = 1;
            }
    if (F & F_TRIG)
        for (int k = 0; k < M_NKEYS; k++)
            REP[r].scl[k] = REP[r].cl[0][k];
    if ((F & F_TRIG) && getenv("KNIT_MODEL_DEBUG"))
        tr("r%d:   counter %ld, model %ld", r, app_counter(r), REP[r].cnt);
}

/* ---------------------------------------------------------------------- */
/* Batches and the model's knowledge                                        */

static int table_of(const char *name)
{
    for (int t = 0; t < NT; t++)
        if (strcmp(T[t].name, name) == 0)
            return t;
    return -1;
}

static int col_of(int t, const char *name)
{
    for (int c = 0; c < T[t].ncols; c++)
        if (strcmp(T[t].c[c].name, name) == 0)
            return c;
    return -1;
}

static int kv_eq(const knit_value_t *a, const mval_t *b)
{
    switch (a->type) {
    case KNIT_INTEGER:
        return b->t == SQLITE_INTEGER && a->u.i == b->i;
    case KNIT_REAL:
        return b->t == SQLITE_FLOAT && a->u.r == b->r;
    case KNIT_TEXT:
        return b->t == SQLITE_TEXT && (int)a->u.b.n == b->n && !memcmp(a->u.b.p, b->p, a->u.b.n);
    case KNIT_BLOB:
        return b->t == SQLITE_BLOB && (int)a->u.b.n == b->n &&
               (!b->n || !memcmp(a->u.b.p, b->p, a->u.b.n));
    default:
        return b->t == SQLITE_NULL;
    }
}

static int key_of(int t, const knit_value_t *pk)
{
    for (int k = 0; k < M_NKEYS; k++) {
        int eq = 1;
        for (int j = 0; j < T[t].npk && eq; j++)
            eq = kv_eq(&pk[j], &T[t].key[k][j]);
        if (eq)
            return k;
    }
    return -1;
}

/* Resolves change c of b to (t, k, col): col -1 is the liveness. */
static void change_cell(const knit_batch_t *b, const knit_change_t *c, int *t, int *k, int *col)
{
    const knit_batch_table_t *bt = &b->tables[c->table];
    *t = table_of(bt->name);
    if (*t < 0 && (F & F_TRIG) && strcmp(bt->name, AUDIT) == 0)
        return; /* the audit table: outside the LWW model (see app_triggers) */
    if (*t < 0)
        fail("a batch names table %.60s, which the schema does not have", bt->name);
    if ((int)bt->npk != T[*t].npk)
        fail("a batch gives table %d %u key columns", *t, bt->npk);
    *k = key_of(*t, c->pk);
    if (*k < 0)
        fail("a batch holds a key of table %d outside the key space", *t);
    *col = c->col ? col_of(*t, bt->cols[c->col - 1]) : -1;
    if (c->col && *col < 0)
        fail("a batch names column %.60s of table %d, which the schema does not have",
             bt->cols[c->col - 1], *t);
}

/* Copies what src knew of the OR-set cells in b into dst. */
static void know_copy_cells(know_t dst, const know_t src, const knit_batch_t *b)
{
    for (size_t i = 0; i < b->nchanges; i++) {
        int t, k, c;
        change_cell(b, &b->changes[i], &t, &k, &c);
        if (t >= 0 && c >= 0 && T[t].c[c].orset)
            memcpy(dst[t][k][c], src[t][k][c], sizeof dst[t][k][c]);
    }
}

static void know_or_cells(know_t dst, const know_t src, const knit_batch_t *b)
{
    for (size_t i = 0; i < b->nchanges; i++) {
        int t, k, c;
        change_cell(b, &b->changes[i], &t, &k, &c);
        if (t >= 0 && c >= 0 && T[t].c[c].orset)
            for (int w = 0; w < M_KW; w++)
                dst[t][k][c][w] |= src[t][k][c][w];
    }
}

/* Replica r applied b, which carried what `src` knew (model notes 1, 2, 4). */
static void learn(int r, const knit_batch_t *b, const know_t src)
{
    rep_t *p = &REP[r];
    for (size_t i = 0; i < b->nchanges; i++) {
        const knit_change_t *ch = &b->changes[i];
        int t, k, c;
        if (ch->hlc > p->hlc)
            p->hlc = ch->hlc;
        change_cell(b, ch, &t, &k, &c);
        if (t < 0)
            continue;
        if (c >= 0 && !col_here(r, t, c)) {
            /* waits for the column; applied, with its life, when it comes */
            if (ch->cl > p->wcl[t][k][c])
                p->wcl[t][k][c] = ch->cl;
            continue;
        }
        if (ch->cl > p->cl[t][k])
            p->cl[t][k] = ch->cl;
        if (c >= 0 && T[t].c[c].orset)
            for (int w = 0; w < M_KW; w++)
                p->know[t][k][c][w] |= src[t][k][c][w];
    }
}

/* Column c of table t arrived on r (knit_track after ADD COLUMN): the
** cells that waited for it apply, and a row they name in a later life than
** r knew moves to that life (a row r did not have appears). */
static void learn_waiting(int r, int t, int c)
{
    rep_t *p = &REP[r];
    for (int k = 0; k < M_NKEYS; k++) {
        if (p->wcl[t][k][c] > p->cl[t][k])
            p->cl[t][k] = p->wcl[t][k][c];
        p->wcl[t][k][c] = 0;
    }
}

/* Every change of b, in the trace (KNIT_MODEL_DEBUG). */
static void trace_batch(const knit_batch_t *b)
{
    for (size_t u = 0; u < b->ntxns; u++)
        for (size_t i = b->txns[u].first; i < b->txns[u].first + b->txns[u].count; i++) {
            const knit_change_t *ch = &b->changes[i];
            const knit_batch_table_t *bt = &b->tables[ch->table];
            int t = table_of(bt->name), k = t >= 0 ? key_of(t, ch->pk) : -1;
            char v[80] = "";
            if (t >= 0) {
                mval_t mv;
                memset(&mv, 0, offsetof(mval_t, p));
                mv.t = ch->value.type == KNIT_INTEGER ? SQLITE_INTEGER
                       : ch->value.type == KNIT_REAL  ? SQLITE_FLOAT
                       : ch->value.type == KNIT_TEXT  ? SQLITE_TEXT
                       : ch->value.type == KNIT_BLOB  ? SQLITE_BLOB
                                                      : SQLITE_NULL;
                if (mv.t == SQLITE_INTEGER)
                    mv.i = ch->value.u.i;
                else if (mv.t == SQLITE_FLOAT)
                    mv.r = ch->value.u.r;
                else if (mv.t == SQLITE_TEXT || mv.t == SQLITE_BLOB) {
                    mv.n = (int)(ch->value.u.b.n < M_VMAX ? ch->value.u.b.n : M_VMAX);
                    if (mv.n)
                        memcpy(mv.p, ch->value.u.b.p, (size_t)mv.n);
                }
                mval_str(&mv, v, sizeof v);
            }
            tr("      unit v%llu: %s%.30s k%d %s%.30s cl %llu hlc %llu.%llu = %s",
               (unsigned long long)b->txns[u].version, t >= 0 ? "t" : "", t >= 0 ? "" : bt->name, k,
               ch->col ? "col " : "liveness", ch->col ? bt->cols[ch->col - 1] : "",
               (unsigned long long)ch->cl, (unsigned long long)(ch->hlc >> 16),
               (unsigned long long)(ch->hlc & 0xffff), v);
        }
}

static void batch_summary(const knit_batch_t *b, char *buf, size_t n)
{
    snprintf(buf, n, "%zu change(s) in %zu unit(s)", b->nchanges, b->ntxns);
}

/* Applies b on replica r (at cursor seq of ns, or plain when ns < 0),
** retrying after injected faults.  A failure without one is permanent. */
static void observe_before(int r);
static void observe_after(int r, const char *what);

static void apply_on(int r, const knit_batch_t *b, int ns, uint64_t seq, const char *what)
{
    observe_before(r);
    for (int attempt = 0;; attempt++) {
        knit_apply_stats_t st;
        int armed = attempt == 0 && !faults_off ? arm_faults() : 0;
        int rc = ns >= 0 ? knit_apply_at(REP[r].k, b, NSNAME[ns], seq, &st)
                         : knit_apply(REP[r].k, b, &st);
        disarm_faults();
        if (rc == 0) {
            if (verify_each)
                check_verify(r, what);
            return;
        }
        if (!armed || attempt > 3) {
            char sum[80];
            batch_summary(b, sum, sizeof sum);
            fail("r%d: knit_apply%s of %s (%s) failed: %s (%s)", r, ns >= 0 ? "_at" : "", what, sum,
                 knit_err_name(rc), knit_errmsg(REP[r].k));
        }
        tr("r%d:   apply failed under fault: %s", r, knit_err_name(rc));
        check_clean_failure(r, rc, "a failed apply");
    }
}

/* The changes of b in namespace name, as a new batch with the same units. */
static knit_batch_t *batch_for_ns(const knit_batch_t *b, const char *name)
{
    knit_batch_t *o;
    uint32_t idx, want = UINT32_MAX;
    CHECK_OK(knit_batch_new(&o));
    for (size_t i = 0; i < b->nns; i++)
        if (strcmp(b->ns[i], name) == 0)
            want = (uint32_t)i;
    CHECK_OK(knit_batch_ns(o, name, &idx));
    for (size_t i = 0; i < b->nsites; i++)
        CHECK_OK(knit_batch_site(o, &b->sites[i], &idx));
    for (size_t i = 0; i < b->ntables; i++) {
        const knit_batch_table_t *t = &b->tables[i];
        CHECK_OK(knit_batch_table(o, t->name, t->npk, t->ncols, (const char *const *)t->cols,
                                  t->orset, &idx));
    }
    for (size_t u = 0; u < b->ntxns; u++) {
        const knit_txn_t *x = &b->txns[u];
        int begun = 0;
        for (size_t i = x->first; i < x->first + x->count; i++) {
            knit_change_t c = b->changes[i];
            if (c.ns != want)
                continue;
            if (!begun)
                CHECK_OK(knit_batch_begin(o, x->version));
            begun = 1;
            c.ns = 0;
            CHECK_OK(knit_batch_add(o, &c));
        }
    }
    return o;
}

static void page_drop(page_t *pg)
{
    knit_batch_free(pg->b);
    pg->b = NULL;
}

static void page_keep(page_t *ring, int *n, knit_batch_t *b, int ns, uint64_t from, uint64_t to,
                      const know_t know)
{
    page_t *pg = &ring[*n % MAXPAGES];
    page_drop(pg);
    pg->b = b;
    pg->ns = ns;
    pg->from = from;
    pg->to = to;
    memset(pg->know, 0, sizeof pg->know);
    know_copy_cells(pg->know, know, b);
    (*n)++;
}

static size_t pick_max(void)
{
    static const size_t sizes[] = {0, 1, 2, 3, 5, 8, 20};
    return sizes[RND(7)];
}

/* ---------------------------------------------------------------------- */
/* Sync                                                                     */

static knit_batch_t *read_changes(int r, uint64_t since, int local_only, size_t maxc)
{
    knit_since_opts_t o = {0};
    o.local_only = local_only;
    o.max_changes = maxc;
    for (int attempt = 0;; attempt++) {
        knit_batch_t *b = NULL;
        int armed = attempt == 0 && !faults_off && (F & F_OOM) && CHANCE(5);
        if (armed)
            knit__alloc_fail_at(1 + RND(300), 0);
        int rc = knit_changes_since(REP[r].k, since, &o, &b);
        disarm_faults();
        if (rc == 0)
            return b;
        if (!armed || attempt > 3)
            fail("r%d: knit_changes_since(%llu): %s (%s)", r, (unsigned long long)since,
                 knit_err_name(rc), knit_errmsg(REP[r].k));
        tr("r%d:   changes_since failed under fault: %s", r, knit_err_name(rc));
        check_clean_failure(r, rc, "a failed changes_since");
    }
}

/* Pushes r's unacknowledged changes to the relay in pages, one relay group
** per page (one apply per namespace), acknowledging after the commit. */
static int push(int r)
{
    int pushed = 0;
    for (int iter = 0; iter < 200; iter++) {
        uint64_t acked;
        CHECK_OK(knit_acked(REP[r].k, &acked));
        size_t maxc = pick_max();
        knit_batch_t *b = read_changes(r, acked, 1, maxc);
        if (!b->ntxns) {
            knit_batch_free(b);
            return pushed;
        }
        uint64_t last = b->txns[b->ntxns - 1].version;
        knit_relay_applied_t res[M_NNS];
        int ok = 1;
        memset(res, 0, sizeof res);
        CHECK_OK(knit_relay_store_begin(S));
        for (size_t i = 0; i < b->nns; i++) {
            int ns = strcmp(b->ns[i], NSNAME[0]) == 0   ? 0
                     : strcmp(b->ns[i], NSNAME[1]) == 0 ? 1
                                                        : -1;
            if (ns < 0)
                fail("r%d: a local change is in namespace \"%s\"", r, b->ns[i]);
            knit_batch_t *sub = batch_for_ns(b, NSNAME[ns]);
            for (int attempt = 0;; attempt++) {
                int armed = attempt == 0 && !faults_off && (F & F_OOM) && CHANCE(5);
                if (armed)
                    knit__alloc_fail_at(1 + RND(300), 0);
                int rc = knit_relay_store_apply(S, NSNAME[ns], sub, &res[ns]);
                disarm_faults();
                if (rc == 0)
                    break;
                if (!armed || attempt > 3)
                    fail("r%d: the relay refused a push to %s: %s (%s)", r, NSNAME[ns],
                         knit_err_name(rc), knit_relay_store_errmsg(S));
            }
            knit_batch_free(sub);
        }
        int armed = !faults_off && (F & F_FAULT) && CHANCE(8);
        if (armed)
            fault_arm(1 + RND(4), 0);
        int rc = knit_relay_store_commit(S);
        disarm_faults();
        if (rc) {
            if (!armed)
                fail("relay commit: %s (%s)", knit_err_name(rc), knit_relay_store_errmsg(S));
            knit_relay_store_rollback(S);
            ok = 0;
        }
        char sum[80];
        batch_summary(b, sum, sizeof sum);
        tr("r%d: push since %llu: %s, %s", r, (unsigned long long)acked, sum,
           ok ? "committed" : "commit failed (injected)");
        if (ok)
            know_or_cells(RKNOW, REP[r].know, b);
        for (int ns = 0; ns < M_NNS; ns++) {
            /* a fan-out holds the relay's state after this push */
            if (ok && res[ns].last_seq && (F & F_DUP)) {
                page_keep(FAN, &NFAN, res[ns].fanout, ns, res[ns].first_seq - 1, res[ns].last_seq,
                          RKNOW);
                res[ns].fanout = NULL;
            }
            knit_batch_free(res[ns].fanout);
        }
        if (!ok) {
            knit_batch_free(b);
            continue;
        }
        knit_batch_free(b);
        pushed++;
        if ((F & F_DUP) && !faults_off && CHANCE(12)) {
            tr("r%d:   ACK lost", r);
            return pushed;
        }
        CHECK_OK(knit_ack(REP[r].k, last));
    }
    fail("r%d: push did not finish in 200 pages", r);
}

/* Catch-up of r on ns from its cursor, in pages. */
static void pull(int r, int ns)
{
    rep_t *p = &REP[r];
    for (int iter = 0; iter < 500; iter++) {
        uint64_t cur;
        CHECK_OK(knit_cursor(p->k, NSNAME[ns], &cur));
        if (cur != p->cursor[ns])
            fail("r%d: cursor of %s is %llu, the model says %llu", r, NSNAME[ns],
                 (unsigned long long)cur, (unsigned long long)p->cursor[ns]);
        knit_batch_t *b = NULL;
        uint64_t reached = 0;
        int more = 0;
        size_t maxc = pick_max();
        int rc = knit_relay_store_catch_up(S, NSNAME[ns], cur, maxc, &b, &reached, &more);
        if (rc)
            fail("relay catch-up of %s after %llu: %s (%s)", NSNAME[ns], (unsigned long long)cur,
                 knit_err_name(rc), knit_relay_store_errmsg(S));
        if (!b->nchanges && reached == cur) {
            knit_batch_free(b);
            return;
        }
        char sum[80], what[120];
        batch_summary(b, sum, sizeof sum);
        snprintf(what, sizeof what, "page %s (%llu, %llu]", NSNAME[ns], (unsigned long long)cur,
                 (unsigned long long)reached);
        tr("r%d: pull %s: %s%s", r, what, sum, more ? ", more" : "");
        if (getenv("KNIT_MODEL_DEBUG"))
            trace_batch(b);
        apply_on(r, b, ns, reached, what);
        learn(r, b, RKNOW);
        observe_after(r, what);
        p->cursor[ns] = reached;
        if (F & F_MIGRATE) {
            long refused, waiting;
            aside_counts(r, &refused, &waiting);
            ST.refused_seen += refused > 0;
            ST.waiting_seen += waiting > 0;
            if (refused > 0 || waiting > 0)
                tr("r%d:   now %ld refused row(s), %ld waiting change(s)", r, refused, waiting);
        }
        if ((F & F_DUP) && CHANCE(3))
            page_keep(p->pages, &p->npages, b, ns, cur, reached, RKNOW);
        else
            knit_batch_free(b);
        if (!more)
            return;
    }
    fail("r%d: catch-up of %s did not end in 500 pages", r, NSNAME[ns]);
}

/* Reads a page at r's cursor and holds it without applying (delayed). */
static void peek(int r, int ns)
{
    rep_t *p = &REP[r];
    knit_batch_t *b = NULL;
    uint64_t reached = 0;
    int more = 0;
    CHECK_OK(
        knit_relay_store_catch_up(S, NSNAME[ns], p->cursor[ns], pick_max(), &b, &reached, &more));
    tr("r%d: hold page %s (%llu, %llu], %zu change(s)", r, NSNAME[ns],
       (unsigned long long)p->cursor[ns], (unsigned long long)reached, b->nchanges);
    page_keep(p->pages, &p->npages, b, ns, p->cursor[ns], reached, RKNOW);
}

/* Applies a held page or a fan-out to r, if its cursor chain allows. */
static void redeliver(int r, page_t *pg, const char *kind)
{
    rep_t *p = &REP[r];
    if (!pg->b || pg->from > p->cursor[pg->ns])
        return;
    uint64_t to = pg->to > p->cursor[pg->ns] ? pg->to : p->cursor[pg->ns];
    char what[120];
    snprintf(what, sizeof what, "%s %s (%llu, %llu], cursor %llu", kind, NSNAME[pg->ns],
             (unsigned long long)pg->from, (unsigned long long)pg->to,
             (unsigned long long)p->cursor[pg->ns]);
    tr("r%d: deliver %s: %zu change(s)", r, what, pg->b->nchanges);
    apply_on(r, pg->b, pg->ns, to, what);
    learn(r, pg->b, pg->know);
    observe_after(r, what);
    p->cursor[pg->ns] = to;
}

/* Raw batch from r to q, not through the relay. */
static void direct(int r, int q)
{
    uint64_t since = CHANCE(4) ? 0 : REP[r].sent[q];
    knit_batch_t *b = read_changes(r, since, 0, pick_max());
    char what[80];
    snprintf(what, sizeof what, "raw batch from r%d since %llu", r, (unsigned long long)since);
    tr("r%d: %s: %zu change(s)", q, what, b->nchanges);
    if (b->ntxns) {
        apply_on(q, b, -1, 0, what);
        learn(q, b, REP[r].know);
        observe_after(q, what);
        if (b->txns[b->ntxns - 1].version > REP[r].sent[q])
            REP[r].sent[q] = b->txns[b->ntxns - 1].version;
        REP[r].sent_direct = 1;
    }
    knit_batch_free(b);
}

/* ---------------------------------------------------------------------- */
/* Devices: copies, joiners, schema upgrades                               */

static void rep_close(int r)
{
    knit_close(REP[r].k);
    sqlite3_close(REP[r].db);
    REP[r].k = NULL;
    REP[r].db = NULL;
}

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(path_of(from), "rb"), *b = fopen(path_of(to), "wb");
    char buf[65536];
    size_t n;
    if (!a || !b)
        fail("copy %s -> %s: %s", from, to, strerror(errno));
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        if (fwrite(buf, 1, n, b) != n)
            fail("copy %s: short write", to);
    fclose(a);
    if (fclose(b) != 0)
        fail("copy %s: %s", to, strerror(errno));
}

/* Copies r's file into a new device; the original keeps running or
** retires. */
static void copy_device(int r)
{
    if (NREP >= M_MAXR)
        return;
    int q = NREP++;
    rep_t *p = &REP[r], *c = &REP[q];
    int how = RND(3);
    char file[32];
    snprintf(file, sizeof file, "r%d.db", q);
    if (how == 0) {
        rep_close(r);
        copy_file(p->file, file);
        char wal[48], wal2[48];
        snprintf(wal, sizeof wal, "%s-wal", p->file);
        snprintf(wal2, sizeof wal2, "%s-wal", file);
        struct stat sb;
        if (stat(path_of(wal), &sb) == 0)
            copy_file(wal, wal2);
    } else if (how == 1) {
        char *sql = sqlite3_mprintf("VACUUM INTO %Q", path_of(file));
        plain_exec(r, sql);
        sqlite3_free(sql);
    } else {
        sqlite3 *dst = NULL;
        if (sqlite3_open(path_of(file), &dst) != SQLITE_OK)
            fail("open backup target");
        sqlite3_backup *bk = sqlite3_backup_init(dst, "main", p->db, "main");
        if (!bk || sqlite3_backup_step(bk, -1) != SQLITE_DONE)
            fail("backup of r%d: %s", r, sqlite3_errmsg(dst));
        sqlite3_backup_finish(bk);
        sqlite3_close(dst);
    }
    *c = *p; /* the model state travels with the file */
    memset(c->pages, 0, sizeof c->pages);
    c->npages = 0;
    c->sent_direct = 0;
    snprintf(c->file, sizeof c->file, "%s", file);
    c->k = open_replica(c->file);
    c->db = open_plain(c->file);
    c->alive = 1;
    knit_site_t s;
    knit_site(c->k, &s);
    memcpy(c->site, s.b, 16);
    if (memcmp(c->site, p->site, 16) == 0)
        fail("r%d, a copy of r%d (by %s), kept the original's site id", q, r,
             how == 0   ? "file copy"
             : how == 1 ? "VACUUM INTO"
                        : "backup API");
    {
        char ns[64] = "";
        knit_namespace(c->k, ns, sizeof ns);
        c->wns = strcmp(ns, NSNAME[1]) == 0;
    }
    int retire = !p->sent_direct && CHANCE(2);
    tr("r%d: copy of r%d by %s, site %02x%02x; r%d %s", q, r,
       how == 0   ? "file copy"
       : how == 1 ? "VACUUM INTO"
                  : "backup API",
       c->site[0], c->site[1], r, retire ? "retires" : "keeps running");
    if (retire) {
        if (how != 0)
            rep_close(r);
        p->alive = 0;
        for (int i = 0; i < MAXPAGES; i++)
            page_drop(&p->pages[i]);
    } else if (how == 0) {
        p->k = open_replica(p->file);
        p->db = open_plain(p->file);
    }
}

/* ALTER TABLE ADD COLUMN and knit_track again on r (model: backfill). */
static void upgrade(int r, int t)
{
    rep_t *p = &REP[r];
    mtab_t *x = &T[t];
    mcol_t *col = &x->c[x->ncols - 1];
    if (!x->has_later || p->alt[t])
        return;
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "ALTER TABLE \"%w\" ADD COLUMN \"%w\" %s", x->name, col->name,
                        col->decl);
    if (col->notnull)
        sqlite3_str_appendf(s, " NOT NULL");
    sqlite3_str_appendf(s, " DEFAULT %s", col->dflt);
    char *sql = sqlite3_str_finish(s);
    plain_exec(r, sql);
    sqlite3_free(sql);
    advance_clock();
    char *spec = track_spec(t, 1);
    int rc = knit_track(p->k, x->name, spec);
    sqlite3_free(spec);
    if (rc)
        fail("r%d: knit_track after ALTER TABLE of table %d: %s (%s)", r, t, knit_strerror(rc),
             knit_errmsg(p->k));
    p->alt[t] = 1;
    alter_any[t] = 1;
    learn_waiting(r, t, x->ncols - 1);
    /* Every present row was backfilled with its current value. */
    int n = 0;
    int counts[M_MAXT][M_NKEYS][M_MAXC];
    snapshot_counts(counts);
    for (int k = 0; k < M_NKEYS; k++) {
        mval_t a[M_MAXC];
        if (!row_read(r, t, k, a))
            continue;
        mwrite_t w;
        memset(&w, 0, offsetof(mwrite_t, v));
        w.cl = p->cl[t][k];
        w.rep = r;
        memcpy(w.site, p->site, 16);
        w.v = a[x->ncols - 1];
        model_lww(&M, t, k, x->ncols - 1, &w);
        n++;
    }
    {
        sqlite3_stmt *st = NULL;
        char *q = sqlite3_mprintf("SELECT count(*) FROM \"%w\"", x->name);
        int rows = 0;
        if (sqlite3_prepare_v2(p->db, q, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            rows = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        sqlite3_free(q);
        /* Backfilled cells hold a default nobody wrote: they take the
        ** lowest stamp, HLC 1, so any real write beats them (track.c design
        ** note 1); the replica's clock still ticks for the fold. */
        if (rows)
            tick(r);
        fill_hlc(counts, 1);
    }
    tr("r%d: ALTER TABLE t%d ADD COLUMN, knit_track: %d row(s) backfilled", r, t, n);
}

/* ---------------------------------------------------------------------- */
/* App versions ("migrate") and app triggers ("trig")                       */

static int obs_pres[M_NKEYS]; /* source keys present before an apply */

/* Notes which source rows r holds before knit writes into it. */
static void observe_before(int r)
{
    if (!(F & F_TRIG))
        return;
    for (int k = 0; k < M_NKEYS; k++) {
        mval_t tmp[M_MAXC];
        obs_pres[k] = row_read(r, 0, k, tmp);
    }
}

/* A source row knit's write made present fired the insert trigger on r:
** the counter counts it, and its audit row exists.  That audit row is a
** local write of r stamped in the apply, unless the same batch brought the
** origin's copy after it (then the copies merged there); which one is not
** observable, so the clock moves on a millisecond and the next stamp of r
** is predicted from it alone. */
static void observe_after(int r, const char *what)
{
    if (!(F & F_TRIG))
        return;
    int n = 0;
    for (int k = 0; k < M_NKEYS; k++) {
        mval_t tmp[M_MAXC];
        int now = row_read(r, 0, k, tmp);
        int refused = key_refused(r, 0, k);
        /* knit writes a row that went live to live in a later life as a
        ** DELETE and an INSERT (apply.c user_flush): the trigger fires */
        int relife = obs_pres[k] && now && !refused && REP[r].cl[0][k] != REP[r].scl[k];
        if ((!obs_pres[k] && now) || relife) {
            n++;
            AUD[k] = 1;
        }
        if (!refused)
            REP[r].scl[k] = REP[r].cl[0][k];
        if (getenv("KNIT_MODEL_DEBUG") && (obs_pres[k] || now))
            tr("r%d:   source k%d %s -> %s", r, k, obs_pres[k] ? "present" : "absent",
               now ? "present" : "absent");
    }
    if (n) {
        ST.fired++;
        REP[r].cnt += n;
        wall += 1;
        tr("r%d:   %s made %d source row(s) present: app triggers fired", r, what, n);
    }
    if (getenv("KNIT_MODEL_DEBUG"))
        tr("r%d:   counter %ld, model %ld", r, app_counter(r), REP[r].cnt);
}

/* The counter the insert trigger keeps on r. */
static long app_counter(int r)
{
    sqlite3_stmt *st = NULL;
    char *sql =
        sqlite3_mprintf("SELECT coalesce((SELECT n FROM \"%w\" WHERE name = 'src'), 0)", COUNTER);
    long n = -1;
    if (sqlite3_prepare_v2(REP[r].db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_free(sql);
    return n;
}

static void set_ver(int r, int v)
{
    REP[r].ver = v;
    for (int t = 0; t < NT; t++)
        REP[r].alt[t] = v;
}

static void track_at(int r, int t, const char *what)
{
    char *spec = track_spec(t, REP[r].ver);
    observe_before(r);
    int rc = knit_track(REP[r].k, T[t].name, spec);
    sqlite3_free(spec);
    if (rc)
        fail("r%d: knit_track of table %d after %s: %s (%s)", r, t, what, knit_strerror(rc),
             knit_errmsg(REP[r].k));
    observe_after(r, "knit_track");
}

/* ALTER TABLE ADD COLUMN, then knit_track: the backfill is a default
** nobody wrote (HLC 1); waiting cells of the column apply. */
static void mig_addcol(int r, int s)
{
    rep_t *p = &REP[r];
    int t = MIG[s].t, c = MIG[s].c;
    mtab_t *x = &T[t];
    mcol_t *col = &x->c[c];
    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_str_appendf(q, "ALTER TABLE \"%w\" ADD COLUMN \"%w\" %s", x->name, col->name,
                        col->decl);
    if (col->notnull)
        sqlite3_str_appendf(q, " NOT NULL");
    if (col->dflt[0])
        sqlite3_str_appendf(q, " DEFAULT %s", col->dflt);
    char *sql = sqlite3_str_finish(q);
    plain_exec(r, sql);
    sqlite3_free(sql);
    set_ver(r, s + 1);
    /* What the backfill stamps: the default, in every row there is. */
    int present[M_NKEYS];
    mval_t dv[M_NKEYS];
    for (int k = 0; k < M_NKEYS; k++) {
        mval_t a[M_MAXC];
        present[k] = row_read(r, t, k, a);
        dv[k] = a[c];
    }
    advance_clock();
    track_at(r, t, "ALTER TABLE ADD COLUMN");
    learn_waiting(r, t, c);
    int n = 0;
    int counts[M_MAXT][M_NKEYS][M_MAXC];
    snapshot_counts(counts);
    for (int k = 0; k < M_NKEYS; k++) {
        if (!present[k])
            continue;
        mwrite_t w;
        memset(&w, 0, offsetof(mwrite_t, v));
        w.cl = p->cl[t][k];
        w.rep = r;
        memcpy(w.site, p->site, 16);
        w.v = dv[k];
        model_lww(&M, t, k, c, &w);
        n++;
    }
    if (n)
        tick(r);
    fill_hlc(counts, 1);
    ST.backfilled += n;
    tr("r%d: %s: %d row(s) backfilled", r, "ADD COLUMN", n);
}

/* Before a rebuild adds NOT NULL or CHECK, the app makes its own rows
** valid with an UPDATE: a real, captured write. */
static void mig_fixup(int r, int t, int c)
{
    touch_t tc[M_NKEYS];
    int ntc = 0;
    mtab_t *x = &T[t];
    plain_exec(r, "BEGIN");
    for (int k = 0; k < M_NKEYS; k++) {
        touch_t *me = &tc[ntc];
        memset(me, 0, offsetof(touch_t, b));
        me->t = t;
        me->k = k;
        if (!(me->before = row_read(r, t, k, me->b)) || !is_bad(&x->c[c], &me->b[c]))
            continue;
        ntc++;
        ST.fixed++;
        sqlite3_str *q = sqlite3_str_new(NULL);
        int param = 1;
        sqlite3_str_appendf(q, "UPDATE \"%w\" SET \"%w\" = 7 WHERE ", x->name, x->c[c].name);
        where_key(q, t, &param);
        char *sql = sqlite3_str_finish(q);
        const mval_t *bind[M_MAXPK];
        for (int j = 0; j < x->npk; j++)
            bind[j] = &x->key[k][j];
        run_stmt(r, sql, bind, x->npk);
        sqlite3_free(sql);
        tr("r%d: FIX t%d k%d col %d before the rebuild", r, t, k, c);
    }
    commit_record(r, tc, ntc);
}

/* CREATE new, INSERT ... SELECT, DROP, RENAME, keeping the key and every
** tracked column, maybe with a stricter column; then a stamp, which
** repairs capture and must find nothing to log. */
static void mig_rebuild(int r, int s)
{
    int t = MIG[s].t, c = MIG[s].c;
    mtab_t *x = &T[t];
    if (c >= 0)
        mig_fixup(r, t, c);
    char *tmp = sqlite3_mprintf("%s new", x->name);
    sqlite3_str *q = sqlite3_str_new(NULL);
    char *create = ddl_named(t, s + 1, 0, tmp);
    sqlite3_str_appendf(q, "BEGIN; %s; INSERT INTO \"%w\"(", create, tmp);
    sqlite3_free(create);
    for (int pass = 0; pass < 2; pass++) {
        for (int j = 0; j < x->npk; j++)
            sqlite3_str_appendf(q, "%s\"%w\"", j ? ", " : "", x->pk[j]);
        for (int cc = 0; cc < x->ncols; cc++)
            if (col_here(r, t, cc))
                sqlite3_str_appendf(q, ", \"%w\"", x->c[cc].name);
        sqlite3_str_appendf(q, pass ? " FROM \"%w\"; " : ") SELECT ", x->name);
    }
    sqlite3_str_appendf(q, "DROP TABLE \"%w\"; ALTER TABLE \"%w\" RENAME TO \"%w\"; ", x->name, tmp,
                        x->name);
    char *sql = sqlite3_str_finish(q);
    plain_exec(r, sql);
    sqlite3_free(sql);
    sqlite3_free(tmp);
    if ((F & F_TRIG) && t == 0)
        app_triggers(r); /* the DROP took the app's triggers with it */
    plain_exec(r, "COMMIT");
    set_ver(r, s + 1);
    /* The repair may fail under a fault: capture stays missing (knit_verify
    ** says so, rightly) until a stamp succeeds. */
    int rows;
    for (int attempt = 0;; attempt++) {
        int armed = attempt == 0 && !faults_off ? arm_faults() : 0;
        rows = knit_stamp(REP[r].k);
        disarm_faults();
        if (rows >= 0)
            break;
        if (!armed || attempt > 3)
            fail("r%d: knit_stamp after a rebuild: %s (%s)", r, knit_err_name(rows),
                 knit_errmsg(REP[r].k));
        if (rows != KNIT_EIO && rows != KNIT_ENOMEM && rows != KNIT_EDB)
            fail("r%d: the repair stamp failed under an injected fault with %s (%s)", r,
                 knit_err_name(rows), knit_errmsg(REP[r].k));
        tr("r%d:   repair stamp failed under fault: %s", r, knit_err_name(rows));
    }
    check_verify(r, "the repair of a rebuild");
    if (rows != 0)
        fail("r%d: the stamp after a rebuild of t%d that kept every row stamped %d row(s)", r, t,
             rows);
    tr("r%d: rebuild of t%d done, capture repaired", r, t);
}

static void mig_newtable(int r, int s)
{
    int t = MIG[s].t;
    set_ver(r, s + 1);
    char *sql = ddl(t, s + 1, 0);
    plain_exec(r, sql);
    sqlite3_free(sql);
    track_at(r, t, "CREATE TABLE");
}

static void aside_counts(int r, long *refused, long *waiting);

/* Upgrades r to app version target, step by step.  A step that adds a
** constraint waits while r holds refused rows (the app's fix-up could not
** see them); returns 0 if r stopped short. */
static int mig_upgrade(int r, int target)
{
    rep_t *p = &REP[r];
    while (p->ver < target) {
        int s = p->ver;
        if (MIG[s].kind == MG_REBUILD && MIG[s].c >= 0) {
            long refused, waiting;
            aside_counts(r, &refused, &waiting);
            if (refused > 0) {
                ST.held++;
                tr("r%d: upgrade to v%d waits: %ld refused row(s)", r, s + 1, refused);
                return 0;
            }
        }
        char buf[200];
        tr("r%d: upgrade %s", r, mig_str(s, buf, sizeof buf));
        ST.steps[MIG[s].kind]++;
        ST.strict += MIG[s].kind == MG_REBUILD && MIG[s].c >= 0;
        if (MIG[s].kind == MG_ADDCOL)
            mig_addcol(r, s);
        else if (MIG[s].kind == MG_REBUILD)
            mig_rebuild(r, s);
        else
            mig_newtable(r, s);
        if (verify_each)
            check_verify(r, "an upgrade");
    }
    return 1;
}

/* ---------------------------------------------------------------------- */
/* Final checks                                                             */

static char *dump_sql(int t, const char *where)
{
    mtab_t *x = &T[t];
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "SELECT ");
    for (int j = 0; j < x->npk; j++)
        sqlite3_str_appendf(s, "%s\"%w\"", j ? ", " : "", x->pk[j]);
    for (int c = 0; c < x->ncols; c++) {
        if (x->c[c].orset)
            sqlite3_str_appendf(s,
                                ", (SELECT group_concat(q, ',') FROM (SELECT quote(value) AS q"
                                " FROM json_each(\"%w\") ORDER BY type, value))",
                                x->c[c].name);
        else
            sqlite3_str_appendf(s, ", \"%w\"", x->c[c].name);
    }
    sqlite3_str_appendf(s, " FROM \"%w\"%s%s ORDER BY ", x->name, where ? " WHERE " : "",
                        where ? where : "");
    for (int j = 0; j < x->npk; j++)
        sqlite3_str_appendf(s, "%s\"%w\"", j ? ", " : "", x->pk[j]);
    return sqlite3_str_finish(s);
}

static char *key_where(int t, int k)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    for (int j = 0; j < T[t].npk; j++) {
        char *lit = mval_lit(&T[t].key[k][j]);
        sqlite3_str_appendf(s, "%s\"%w\" IS %s", j ? " AND " : "", T[t].pk[j], lit);
        sqlite3_free(lit);
    }
    return sqlite3_str_finish(s);
}

/* Builds the model's expected tables in a fresh in-memory database. */
static sqlite3 *model_db(void)
{
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK);
    for (int t = 0; t < NT; t++) {
        mtab_t *x = &T[t];
        char *sql = ddl(t, V_ALL, 1);
        char *err = NULL;
        if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
            fail("model db: %s\n  %.300s", err, sql);
        sqlite3_free(sql);
        for (int k = 0; k < M_NKEYS; k++) {
            if (!(M.maxcl[t][k] & 1))
                continue;
            sqlite3_str *s = sqlite3_str_new(NULL);
            const mval_t *bind[M_MAXC + M_MAXPK];
            mval_t sets[M_MAXC];
            int nb = 0;
            sqlite3_str_appendf(s, "INSERT INTO \"%w\"(", x->name);
            for (int j = 0; j < x->npk; j++) {
                sqlite3_str_appendf(s, "%s\"%w\"", j ? ", " : "", x->pk[j]);
                bind[nb++] = &x->key[k][j];
            }
            for (int c = 0; c < x->ncols; c++) {
                if (x->c[c].orset) {
                    unsigned m = model_set(&M, t, k, c);
                    memset(&sets[c], 0, offsetof(mval_t, p));
                    sets[c].t = SQLITE_TEXT;
                    size_t off = 0;
                    sets[c].p[off++] = '[';
                    for (int e = 0, n = 0; e < NELEM; e++)
                        if (m >> e & 1)
                            off += (size_t)snprintf((char *)sets[c].p + off, M_VMAX - off, "%s%s",
                                                    n++ ? "," : "", ELEM[e].json);
                    sets[c].p[off++] = ']';
                    sets[c].n = (int)off;
                    bind[nb++] = &sets[c];
                } else {
                    const mwrite_t *w = model_winner(&M, t, k, c);
                    if (!w)
                        continue;
                    bind[nb++] = &w->v;
                }
                sqlite3_str_appendf(s, ", \"%w\"", x->c[c].name);
            }
            sqlite3_str_appendf(s, ") VALUES (");
            for (int i = 0; i < nb; i++)
                sqlite3_str_appendf(s, "%s?%d", i ? ", " : "", i + 1);
            sqlite3_str_appendf(s, ")");
            sql = sqlite3_str_finish(s);
            sqlite3_stmt *st = NULL;
            if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
                fail("model db: %s", sqlite3_errmsg(db));
            for (int i = 0; i < nb; i++)
                mval_bind(st, i + 1, bind[i]);
            if (sqlite3_step(st) != SQLITE_DONE)
                fail("model db insert: %s", sqlite3_errmsg(db));
            sqlite3_finalize(st);
            sqlite3_free(sql);
        }
    }
    return db;
}

/* Prints the model's history of one key. */
static void explain(int t, int k)
{
    mtab_t *x = &T[t];
    fprintf(stderr, "  model of t%d k%d: final causal length %llu (%s)\n", t, k,
            (unsigned long long)M.maxcl[t][k], M.maxcl[t][k] & 1 ? "live" : "deleted");
    for (int c = 0; c < x->ncols; c++) {
        const mcell_t *cell = &M.cell[t][k][c];
        fprintf(stderr, "    column %d (%.40s%s%s%s)\n", c, x->c[c].name,
                strlen(x->c[c].name) > 40 ? "..." : "", x->c[c].orset ? ", OR-set" : "",
                x->c[c].later ? ", added later" : "");
        for (int i = 0; i < cell->nw; i++) {
            char v[80];
            mval_str(&cell->w[i].v, v, sizeof v);
            fprintf(stderr, "      write by r%d life %llu hlc %llu.%llu site %02x%02x: %s\n",
                    cell->w[i].rep, (unsigned long long)cell->w[i].cl,
                    (unsigned long long)(cell->w[i].hlc >> 16),
                    (unsigned long long)(cell->w[i].hlc & 0xffff), cell->w[i].site[0],
                    cell->w[i].site[1], v);
        }
        for (int i = 0; i < cell->nadd; i++)
            fprintf(stderr, "      add #%d %s life %llu\n", i, ELEM[cell->add[i].elem].json,
                    (unsigned long long)cell->add[i].cl);
        for (int i = 0; i < cell->nrem; i++) {
            fprintf(stderr, "      remove %s life %llu, saw adds:", ELEM[cell->rem[i].elem].json,
                    (unsigned long long)cell->rem[i].cl);
            for (int a = 0; a < cell->nadd; a++)
                if (cell->rem[i].obs[a / 64] >> (a % 64) & 1)
                    fprintf(stderr, " #%d", a);
            fprintf(stderr, "\n");
        }
    }
}

static void aside_counts(int r, long *refused, long *waiting)
{
    *refused = *waiting = -1;
    if (knit_aside_count) {
        size_t a = 0, b = 0;
        int rc = knit_aside_count(REP[r].k, &a, &b);
        if (rc)
            fail("r%d: knit_aside_count: %s (%s)", r, knit_err_name(rc), knit_errmsg(REP[r].k));
        *refused = (long)a;
        *waiting = (long)b;
        return;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(REP[r].db,
                           "SELECT (SELECT count(*) FROM (SELECT DISTINCT tbl, key FROM _knit_aside"
                           " WHERE kind = 'refused')),"
                           " (SELECT count(*) FROM _knit_aside WHERE kind = 'waiting')",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        *refused = sqlite3_column_int64(st, 0);
        *waiting = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
}

static void print_aside(int r)
{
    char *d = rt_dump_db(REP[r].db, "SELECT tbl, key, col, cl, kind, reason FROM _knit_aside"
                                    " ORDER BY id LIMIT 20");
    fprintf(stderr, "  r%d _knit_aside:\n%s", r, d);
    sqlite3_free(d);
}

/* The audit rows, the counter and the FTS index on r ("trig"). */
static void check_app(int r)
{
    rep_t *p = &REP[r];
    mtab_t *x = &T[0];
    sqlite3 *adb = NULL;
    CHECK(sqlite3_open(":memory:", &adb) == SQLITE_OK);
    char *sql = sqlite3_mprintf("CREATE TABLE \"%w\"(id TEXT PRIMARY KEY, src, note)", AUDIT);
    CHECK(sqlite3_exec(adb, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_free(sql);
    for (int k = 0; k < M_NKEYS; k++) {
        if (!AUD[k])
            continue;
        char *lit = mval_lit(&x->key[k][0]);
        sql = sqlite3_mprintf("INSERT INTO \"%w\" VALUES ('ins:' || %s, %s, 'inserted')", AUDIT,
                              lit, lit);
        CHECK(sqlite3_exec(adb, sql, NULL, NULL, NULL) == SQLITE_OK);
        sqlite3_free(sql);
        sqlite3_free(lit);
    }
    sql =
        sqlite3_mprintf("SELECT quote(id), quote(src), quote(note) FROM \"%w\" ORDER BY id", AUDIT);
    char *got = rt_dump_db(p->db, sql), *want = rt_dump_db(adb, sql);
    if (strcmp(got, want) != 0)
        fail("r%d: the audit table is not one row per source key ever inserted:\nreplica:\n%s"
             "model:\n%s",
             r, got, want);
    sqlite3_free(got);
    sqlite3_free(want);
    sqlite3_free(sql);
    sqlite3_close(adb);
    long n = app_counter(r);
    if (n != p->cnt)
        fail("r%d: the insert trigger's counter is %ld; the model counted %ld inserts on this "
             "device",
             r, n, p->cnt);
    char *q1 = sqlite3_mprintf("SELECT quote(id), quote(body) FROM \"%w\" ORDER BY 1, 2", FTS);
    char *q2 = sqlite3_mprintf("SELECT quote(\"%w\"), quote(\"%w\") FROM \"%w\" ORDER BY 1, 2",
                               x->pk[0], x->c[0].name, x->name);
    got = rt_dump_db(p->db, q1);
    want = rt_dump_db(p->db, q2);
    if (strcmp(got, want) != 0)
        fail("r%d: the FTS index does not match its table:\nindex:\n%stable:\n%s", r, got, want);
    sqlite3_free(got);
    sqlite3_free(want);
    sqlite3_free(q1);
    sqlite3_free(q2);
    sql =
        sqlite3_mprintf("INSERT INTO \"%w\"(\"%w\", rank) VALUES ('integrity-check', 1)", FTS, FTS);
    char *err = NULL;
    if (sqlite3_exec(p->db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail("r%d: FTS integrity-check: %s", r, err ? err : "?");
    sqlite3_free(sql);
}

static void final_checks(void)
{
    int first = -1;
    sqlite3 *mdb = model_db();
    for (int r = 0; r < NREP; r++) {
        if (!REP[r].alive)
            continue;
        rep_t *p = &REP[r];
        if ((F & F_MIGRATE) && p->ver != NMIG)
            fail("r%d runs v%d after the final sync, not v%d", r, p->ver, NMIG);
        check_verify(r, "the final sync");
        long refused, waiting;
        aside_counts(r, &refused, &waiting);
        if (refused > 0 || waiting > 0) {
            print_aside(r);
            fail("r%d: %ld row(s) refused and %ld change(s) waiting after every cell arrived "
                 "(all replicas have the same constraints and columns)",
                 r, refused, waiting);
        }
        for (int ns = 0; ns < M_NNS; ns++) {
            if (!ns_used[ns])
                continue;
            uint64_t head, cur;
            CHECK_OK(knit_relay_store_seq(S, NSNAME[ns], &head));
            CHECK_OK(knit_cursor(p->k, NSNAME[ns], &cur));
            if (cur != head)
                fail("r%d: namespace %s is stuck: cursor %llu, relay head %llu", r, NSNAME[ns],
                     (unsigned long long)cur, (unsigned long long)head);
        }
        for (int t = 0; t < NT; t++) {
            for (int k = 0; k < M_NKEYS; k++) {
                char *w = key_where(t, k), *sql = dump_sql(t, w);
                char *got = rt_dump_db(p->db, sql), *want = rt_dump_db(mdb, sql);
                if (strcmp(got, want) != 0) {
                    fprintf(stderr, "r%d, table %d, key %d:\n  replica: %s  model:   %s", r, t, k,
                            got[0] ? got : "(absent)\n", want[0] ? want : "(absent)\n");
                    explain(t, k);
                    fail("r%d: t%d k%d differs from the model after the final sync", r, t, k);
                }
                sqlite3_free(got);
                sqlite3_free(want);
                sqlite3_free(w);
                sqlite3_free(sql);
            }
            char *sql = dump_sql(t, NULL);
            char *got = rt_dump_db(p->db, sql), *want = rt_dump_db(mdb, sql);
            if (strcmp(got, want) != 0)
                fail("r%d: table %d differs from the model:\nreplica:\n%smodel:\n%s", r, t, got,
                     want);
            sqlite3_free(got);
            sqlite3_free(want);
            sqlite3_free(sql);
        }
        if (F & F_TRIG)
            check_app(r);
        for (int ns = 0; ns < M_NNS; ns++) {
            if (!ns_used[ns])
                continue;
            knit_digest_t d, rd, fd;
            char h1[65], h2[65];
            CHECK_OK(knit_digest(p->k, NSNAME[ns], &d));
            CHECK_OK(knit_relay_store_digest(S, NSNAME[ns], &rd));
            if (!knit_digest_equal(&d, &rd)) {
                knit_digest_hex(&d, h1);
                knit_digest_hex(&rd, h2);
                fail("r%d: digest of %s is %.16s..., the relay's %.16s...", r, NSNAME[ns], h1, h2);
            }
            if (first >= 0) {
                CHECK_OK(knit_digest(REP[first].k, NSNAME[ns], &fd));
                if (!knit_digest_equal(&d, &fd))
                    fail("r%d and r%d: digests of %s differ", r, first, NSNAME[ns]);
            }
        }
        if (first < 0)
            first = r;
    }
    sqlite3_close(mdb);
}

/* Pushes and pulls until nothing moves. */
static void settle(void)
{
    for (int round = 0; round < 8; round++) {
        int pushed = 0;
        for (int r = 0; r < NREP; r++)
            if (REP[r].alive)
                pushed += push(r);
        for (int r = 0; r < NREP; r++)
            if (REP[r].alive)
                for (int ns = 0; ns < M_NNS; ns++)
                    if (ns_used[ns])
                        pull(r, ns);
        if (!pushed && round > 0)
            return;
    }
    fail("the final sync did not settle in 8 rounds (replicas keep pushing)");
}

static void final_sync(void)
{
    faults_off = 1;
    for (int r = 0; r < NREP; r++)
        if (REP[r].alive)
            for (int t = 0; t < NT; t++)
                upgrade(r, t);
    if (F & F_MIGRATE) {
        /* Every device upgrades to the last version, in random order, with
        ** a full sync before each round (a stricter step waits for the
        ** rows it refuses to be made valid by their writers' upgrades). */
        int done = 0;
        for (int round = 0; round < 2 * M_MAXMIG + 2 && !done; round++) {
            tr("final sync: upgrade round %d", round);
            settle();
            int order[M_MAXR], n = 0;
            for (int r = 0; r < NREP; r++)
                if (REP[r].alive)
                    order[n++] = r;
            for (int i = n - 1; i > 0; i--) {
                int j = RND(i + 1), tmp = order[i];
                order[i] = order[j];
                order[j] = tmp;
            }
            done = 1;
            for (int i = 0; i < n; i++)
                done &= mig_upgrade(order[i], NMIG);
        }
        if (!done)
            fail("devices could not all reach v%d: refused rows keep a stricter step waiting",
                 NMIG);
    }
    tr("final sync");
    settle();
    if (F & (F_MIGRATE | F_TRIG)) {
        /* Everyone runs the last version: a retry on each, then sync. */
        for (int r = 0; r < NREP; r++) {
            if (!REP[r].alive)
                continue;
            long refused, waiting;
            aside_counts(r, &refused, &waiting);
            if (refused || waiting)
                tr("r%d: %ld refused row(s), %ld waiting change(s) before knit_aside_retry", r,
                   refused, waiting);
            ST.retry_left += refused + waiting;
            knit_apply_stats_t st;
            observe_before(r);
            int rc = knit_aside_retry(REP[r].k, &st);
            if (rc)
                fail("r%d: knit_aside_retry: %s (%s)", r, knit_err_name(rc), knit_errmsg(REP[r].k));
            observe_after(r, "knit_aside_retry");
        }
        tr("final sync after retries");
        settle();
    }
}

/* ---------------------------------------------------------------------- */
/* One case                                                                 */

static int pick_alive(void)
{
    int n = 0, alive[M_MAXR];
    for (int r = 0; r < NREP; r++)
        if (REP[r].alive)
            alive[n++] = r;
    return n ? alive[RND(n)] : -1;
}

static void run_case(void)
{
    const char *base = getenv("KNIT_MODEL_DIR");
    struct stat sb;
    if (!base)
        base = stat("/dev/shm", &sb) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/knit-model-XXXXXX", base);
    if (!mkdtemp(dir))
        fail("mkdtemp(%s): %s", dir, strerror(errno));
    memset(&M, 0, sizeof M);
    memset(RKNOW, 0, sizeof RKNOW);
    memset(alter_any, 0, sizeof alter_any);
    memset(AUD, 0, sizeof AUD);
    memset(ns_used, 0, sizeof ns_used);
    ns_used[0] = 1;
    NREP = 0;
    NFAN = 0;
    memset(FAN, 0, sizeof FAN);
    faults_off = 0;
    ntrace = 0;
    wall = 1700000000000ULL + (uint64_t)RND(1000000);
    gen_schema();
    {
        char fs[400];
        features_str(F, fs, sizeof fs);
        tr("case %ld seed %" PRIu64 " features %s: %d table(s)", case_no, case_seed, fs, NT);
        for (int t = 0; t < NT; t++) {
            char *sql = ddl(t, 1, 0);
            tr("  t%d: %.200s%s", t, sql, strlen(sql) > 200 ? "..." : "");
            sqlite3_free(sql);
        }
        for (int s = 0; s < NMIG; s++) {
            char buf[200];
            tr("  %s", mig_str(s, buf, sizeof buf));
        }
    }
    if (knit_relay_store_open(path_of("relay.db"), 0, &S) != 0)
        fail("relay store open failed");
    int nrep = 3 + RND(3);
    for (int i = 0; i < nrep; i++)
        rep_fresh();
    int steps = 30 + RND(60);
    for (int step = 0; step < steps; step++) {
        int r = pick_alive();
        int a = RND(100);
        if (a < 45) {
            write_group(r);
        } else if (a < 58) {
            push(r);
        } else if (a < 71) {
            pull(r, (F & F_NS2) ? RND(2) : 0);
        } else if (a < 76 && (F & F_DUP)) {
            if (CHANCE(2) && REP[r].npages)
                redeliver(r, &REP[r].pages[RND(MAXPAGES)], "held page");
            else if (CHANCE(2) && NFAN)
                redeliver(r, &FAN[RND(MAXPAGES)], "fan-out");
            else
                peek(r, (F & F_NS2) ? RND(2) : 0);
        } else if (a < 81 && (F & F_DIRECT)) {
            int q = pick_alive();
            if (q != r)
                direct(r, q);
        } else if (a < 84 && (F & F_COPY)) {
            copy_device(r);
        } else if (a < 86 && (F & F_JOIN)) {
            int q = rep_fresh();
            if (q >= 0)
                pull(q, 0);
        } else if (a < 90 && (F & F_ALTER)) {
            upgrade(r, RND(NT));
        } else if (a < 95 && (F & F_MIGRATE)) {
            if (REP[r].ver < NMIG)
                mig_upgrade(r, REP[r].ver + 1 + RND(NMIG - REP[r].ver));
        } else {
            write_group(r);
        }
    }
    final_sync();
    final_checks();
    for (int r = 0; r < NREP; r++) {
        if (REP[r].alive)
            rep_close(r);
        for (int i = 0; i < MAXPAGES; i++)
            page_drop(&REP[r].pages[i]);
    }
    for (int i = 0; i < MAXPAGES; i++)
        page_drop(&FAN[i]);
    knit_relay_store_close(S);
    S = NULL;
    model_free(&M);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    dir[0] = 0;
}

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void run(const char *name, unsigned features, long default_cases)
{
    static int installed;
    if (!installed) {
        time_vfs_install();
        atexit(case_report);
        signal(SIGSEGV, on_signal);
        signal(SIGABRT, on_signal);
        signal(SIGBUS, on_signal);
        installed = 1;
    }
    uint64_t seed = knit_test_seed();
    const char *e = getenv("KNIT_CASES");
    long cases = e ? atol(e) : knit_test_cases(default_cases);
    const char *se = getenv("KNIT_MODEL_SECONDS");
    double limit = se ? atof(se) : 0, t0 = now_s();
    char fs[400];
    case_name = name;
    verify_each = getenv("KNIT_MODEL_VERIFY") != NULL;
    F = parse_features(features);
    if ((F & F_TRIG) && (F & F_NS2)) {
        /* An audit row an apply makes is a local write in the receiver's
        ** current namespace, which need not be the source row's. */
        fprintf(stderr, "note: trig turns ns2 off\n");
        F &= ~F_NS2;
    }
    features_str(F, fs, sizeof fs);
    fprintf(stderr, "model %s: %ld case(s), features %s\n", name, cases, fs);
    long n;
    for (n = 0; n < cases; n++) {
        case_no = n;
        case_seed = seed + (uint64_t)n;
        knit_test_case_seed(case_seed);
        R.s = case_seed;
        in_case = 1;
        run_case();
        in_case = 0;
        if (limit > 0 && now_s() - t0 > limit) {
            n++;
            break;
        }
        if ((n + 1) % 1000 == 0)
            fprintf(stderr, "  %ld cases, %.1f s\n", n + 1, now_s() - t0);
    }
    double dt = now_s() - t0;
    fprintf(stderr, "model %s: %ld case(s) passed in %.2f s (%.1f ms/case)\n", name, n, dt,
            n ? dt * 1000 / (double)n : 0.0);
    if (F & (F_MIGRATE | F_TRIG))
        fprintf(stderr,
                "  upgrade steps: %ld ADD COLUMN, %ld rebuild (%ld stricter, %ld row(s) fixed "
                "first), %ld new table; %ld row(s) backfilled; pulls leaving refused rows %ld, "
                "waiting changes %ld; upgrades held %ld; applies firing triggers %ld; set aside "
                "before the final retry %ld\n",
                ST.steps[MG_ADDCOL], ST.steps[MG_REBUILD], ST.strict, ST.fixed,
                ST.steps[MG_NEWTABLE], ST.backfilled, ST.refused_seen, ST.waiting_seen, ST.held,
                ST.fired, ST.retry_left);
}

/* Each CTest case turns on one group of features over the basic model, so
** a defect shows under the name of what it needs; "all" mixes them. */
static void case_basic(void)
{
    run("basic", 0, 200);
}
static void case_orset(void)
{
    run("orset", F_ORSET, 200);
}
static void case_constraints(void)
{
    run("constraints", F_NOTNULL | F_CHECK | F_DEFAULT | F_LONGVAL, 200);
}
static void case_keys(void)
{
    run("keys", F_KEYS | F_KEYUPD, 200);
}
static void case_idents(void)
{
    run("idents", F_IDENT | F_LONGID, 150);
}
static void case_alter(void)
{
    run("alter", F_ALTER | F_DEFAULT, 150);
}
static void case_copy(void)
{
    run("copy", F_COPY, 150);
}
static void case_join(void)
{
    run("join", F_JOIN | F_DUP, 150);
}
static void case_delivery(void)
{
    run("delivery", F_DUP | F_DIRECT | F_ORSET, 200);
}
static void case_faults(void)
{
    run("faults", F_FAULT | F_OOM, 150);
}
static void case_ns(void)
{
    run("ns", F_NS2 | F_TIES, 200);
}
static void case_all(void)
{
    run("all", F_ALL, 150);
}
/* Devices upgrading through random migrations; app triggers; both. */
static void case_migrations(void)
{
    run("migrations",
        F_MIGRATE | F_DEFAULT | F_NOTNULL | F_CHECK | F_KEYS | F_DUP | F_COPY | F_JOIN, 150);
}
static void case_triggers(void)
{
    run("triggers", F_TRIG | F_DEFAULT | F_KEYUPD | F_DUP | F_DIRECT | F_COPY | F_JOIN, 150);
}
/* Devices upgrading through random migrations while app triggers (audit,
** counter, FTS5) fire on applied rows: both features together. */
static void case_upgrades(void)
{
    run("upgrades",
        F_MIGRATE | F_ORSET | F_DEFAULT | F_NOTNULL | F_KEYS | F_KEYUPD | F_DUP | F_IDENT |
            F_FAULT | F_TRIG,
        150);
}
static void case_long(void)
{
    run("long", F_ALL, 200000);
}

KNIT_TESTS({"basic", case_basic}, {"orset", case_orset}, {"constraints", case_constraints},
           {"keys", case_keys}, {"idents", case_idents}, {"alter", case_alter}, {"copy", case_copy},
           {"join", case_join}, {"delivery", case_delivery}, {"faults", case_faults},
           {"ns", case_ns}, {"all", case_all}, {"long", case_long}, {"migrations", case_migrations},
           {"triggers", case_triggers}, {"upgrades", case_upgrades})
