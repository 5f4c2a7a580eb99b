/*
** bench_map.c: the map workload peers are compared on, knit against plain
** SQLite in the same run.
**
**   1. Replica A: 100,000 writes to 10,000 keys (each key 10 times; values
**      21-character text) through plain SQL on the app's own connection, in
**      100 transactions of 1,000, stamping after each.  Plain SQLite does
**      the same upserts on an untracked table in another file.
**   2. An empty replica B receives A's state (knit_changes_since +
**      knit_apply); plain SQLite upserts the same 10,000 rows.
**   3. The PUSH that carries A's state, in bytes per key, against key and
**      value as a CBOR pair.
**   4. A and B each make 50,000 conflicting writes, then exchange deltas;
**      their digests must agree.
**   5. File bytes of metadata per row.
**
** Usage: bench_map [ROUNDS] (default 3; each time figure is the median).
** Instruction counts come from callgrind, one phase at a time:
**   valgrind --tool=callgrind --collect-atstart=no \
**       --toggle-collect=bench_phase_stamp bench_map 1
** (or bench_phase_commit, bench_phase_apply_state, bench_phase_plain_upsert,
** bench_phase_plain_apply_state); divide Ir by the writes or changes printed:
** the commit and stamp phases run 200,000 writes in all (100,000 on A,
** then 50,000 on each), the plain upsert phase 100,000, the state apply
** 20,000 changes.
*/
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "knit.h"

#define KEYS 10000
#define WRITES 100000
#define TXN 1000
#define CONFLICT 50000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#ifdef __GNUC__
__attribute__((noreturn))
#endif
static void
die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_map: %s: %s\n", what, msg ? msg : "");
    exit(1);
}

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        die(sql, err);
}

static sqlite3 *open_plain(const char *path)
{
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die("open", sqlite3_errmsg(db));
    exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL");
    sqlite3_busy_timeout(db, 5000);
    return db;
}

#define NS "user:bench"

/* A replica writing the account namespace NS, as a signed-in app does. */
static knit_t *open_knit(const char *path)
{
    knit_t *k;
    if (knit_open(path, NULL, &k) != 0)
        die("knit_open", path);
    if (knit_set_namespace(k, NS) != 0)
        die("knit_set_namespace", knit_errmsg(k));
    return k;
}

static long long file_size(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 ? (long long)sb.st_size : 0;
}

static const char *SCHEMA = "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)";
static const char *UPSERT =
    "INSERT INTO kv(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v";

static void key_of(int i, char *buf, size_t n)
{
    snprintf(buf, n, "key-%05d", (int)((unsigned)(i * 7919) % KEYS));
}

/* A 21-character value, different per write and per writer. */
static void value_of(int i, int who, char *buf, size_t n)
{
    snprintf(buf, n, "w%d-value-%010d", who, i);
}

/* Writes [from, from + n) as upserts in one transaction. */
static void write_txn(sqlite3 *db, sqlite3_stmt *st, int from, int n, int who)
{
    exec(db, "BEGIN");
    for (int i = from; i < from + n; i++) {
        char k[32], v[32];
        key_of(i, k, sizeof k);
        value_of(i, who, v, sizeof v);
        sqlite3_bind_text(st, 1, k, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, v, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
            die("upsert", sqlite3_errmsg(db));
        sqlite3_reset(st);
    }
    exec(db, "COMMIT");
}

/* The phases callgrind toggles on (see the top); noinline keeps them. */
#define PHASE __attribute__((noinline))

PHASE void bench_phase_plain_upsert(sqlite3 *db, int from, int n, int who)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, UPSERT, -1, &st, NULL) != SQLITE_OK)
        die("prepare", sqlite3_errmsg(db));
    for (int t = from; t < from + n; t += TXN)
        write_txn(db, st, t, TXN, who);
    sqlite3_finalize(st);
}

PHASE void bench_phase_commit(sqlite3 *db, sqlite3_stmt *st, int from, int who)
{
    write_txn(db, st, from, TXN, who);
}

PHASE void bench_phase_stamp(knit_t *k)
{
    if (knit_stamp(k) < 0)
        die("knit_stamp", knit_errmsg(k));
}

/* Writes [from, from + n) on replica k through its app connection db, a
** stamp after each transaction; the seconds spent committing and stamping. */
static void knit_writes(knit_t *k, sqlite3 *db, int from, int n, int who, double *commit,
                        double *stamp)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, UPSERT, -1, &st, NULL) != SQLITE_OK)
        die("prepare", sqlite3_errmsg(db));
    *commit = *stamp = 0;
    for (int t = from; t < from + n; t += TXN) {
        double t0 = now_s();
        bench_phase_commit(db, st, t, who);
        double t1 = now_s();
        bench_phase_stamp(k);
        *commit += t1 - t0;
        *stamp += now_s() - t1;
    }
    sqlite3_finalize(st);
}

PHASE void bench_phase_apply(knit_t *k, const knit_batch_t *b)
{
    knit_apply_stats_t st;
    if (knit_apply(k, b, &st) != 0)
        die("knit_apply", knit_errmsg(k));
}

/* B's first apply, A's whole state, on its own for callgrind. */
PHASE void bench_phase_apply_state(knit_t *k, const knit_batch_t *b)
{
    bench_phase_apply(k, b);
}

/* The plain baseline of an apply: upsert every (key, value) of the batch's
** value cells in one transaction. */
PHASE void bench_phase_plain_apply(sqlite3 *db, const knit_batch_t *b)
{
    sqlite3_stmt *st;
    exec(db, "BEGIN");
    if (sqlite3_prepare_v2(db, UPSERT, -1, &st, NULL) != SQLITE_OK)
        die("prepare", sqlite3_errmsg(db));
    for (size_t i = 0; i < b->nchanges; i++) {
        const knit_change_t *c = &b->changes[i];
        if (c->col == 0)
            continue;
        sqlite3_bind_text(st, 1, (const char *)c->pk[0].u.b.p, (int)c->pk[0].u.b.n, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, (const char *)c->value.u.b.p, (int)c->value.u.b.n, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            die("upsert", sqlite3_errmsg(db));
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    exec(db, "COMMIT");
}

/* The plain baseline of B's first apply, on its own for callgrind. */
PHASE void bench_phase_plain_apply_state(sqlite3 *db, const knit_batch_t *b)
{
    bench_phase_plain_apply(db, b);
}

static knit_batch_t *changes(knit_t *k, uint64_t since)
{
    knit_batch_t *b;
    if (knit_changes_since(k, since, NULL, &b) != 0)
        die("knit_changes_since", knit_errmsg(k));
    return b;
}

/* Bytes of the PUSH that carries b. */
static size_t push_bytes(knit_batch_t *b)
{
    knit_msg_t m;
    knit_buf_t out = {0};
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_PUSH;
    m.u.push.id = 1;
    m.u.push.ns = NS;
    m.u.push.batch = b;
    if (knit_msg_encode(&m, NULL, &out) != 0)
        die("knit_msg_encode", "PUSH");
    size_t n = out.len;
    knit_buf_free(&out);
    return n;
}

/* Key and value as a CBOR array of two text strings: the floor of any
** encoding that carries them. */
static size_t cbor_pair_bytes(void)
{
    size_t n = 0;
    for (int i = 0; i < KEYS; i++) {
        char k[32], v[32];
        key_of(i, k, sizeof k);
        value_of(i, 0, v, sizeof v);
        size_t kl = strlen(k), vl = strlen(v);
        n += 1 + (kl < 24 ? 1 : 2) + kl + (vl < 24 ? 1 : 2) + vl;
    }
    return n / KEYS;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static void unlink_db(const char *p)
{
    char w[600];
    unlink(p);
    snprintf(w, sizeof w, "%s-wal", p);
    unlink(w);
    snprintf(w, sizeof w, "%s-shm", p);
    unlink(w);
}

typedef struct round_s {
    double plain, commit, stamp;       /* phase 1 */
    double apply, plain_apply;         /* phase 2 */
    double exchange, plain_exchange;   /* phase 4 */
    size_t push, push_units, nchanges; /* phase 3: as the client sends it (one unit),
                                          and unit by unit */
    long long meta_bytes, data_bytes;
} round_t;

static void one_round(const char *dir, int r, round_t *o)
{
    char pa[512], pb[512], pp[512], pq[512];
    snprintf(pa, sizeof pa, "%s/a%d.db", dir, r);
    snprintf(pb, sizeof pb, "%s/b%d.db", dir, r);
    snprintf(pp, sizeof pp, "%s/plain%d.db", dir, r);
    snprintf(pq, sizeof pq, "%s/plainb%d.db", dir, r);

    /* 1. Plain SQLite, then A. */
    sqlite3 *plain = open_plain(pp);
    exec(plain, SCHEMA);
    double t0 = now_s();
    bench_phase_plain_upsert(plain, 0, WRITES, 0);
    o->plain = now_s() - t0;

    knit_t *a = open_knit(pa);
    sqlite3 *adb = open_plain(pa);
    exec(adb, SCHEMA);
    if (knit_track(a, "kv", NULL) != 0)
        die("knit_track", knit_errmsg(a));
    knit_writes(a, adb, 0, WRITES, 0, &o->commit, &o->stamp);

    /* 2. B receives A's state. */
    knit_batch_t *state = changes(a, 0);
    o->nchanges = state->nchanges;
    o->push_units = push_bytes(state);
    knit_t *b = open_knit(pb);
    sqlite3 *bdb = open_plain(pb);
    exec(bdb, SCHEMA);
    if (knit_track(b, "kv", NULL) != 0)
        die("knit_track", knit_errmsg(b));
    t0 = now_s();
    bench_phase_apply_state(b, state);
    o->apply = now_s() - t0;
    sqlite3 *plainb = open_plain(pq);
    exec(plainb, SCHEMA);
    t0 = now_s();
    bench_phase_plain_apply_state(plainb, state);
    o->plain_apply = now_s() - t0;
    /* The sync client sends a push's units as one (proto_client.c note 11). */
    if (knit_batch_coalesce(state) != 0)
        die("knit_batch_coalesce", "out of memory");
    o->push = push_bytes(state);
    knit_batch_free(state);

    /* 4. Conflicting writes on both, then the deltas both ways. */
    uint64_t va, vb;
    knit_version(a, &va);
    knit_version(b, &vb);
    double c1, s1;
    knit_writes(a, adb, WRITES, CONFLICT, 1, &c1, &s1);
    knit_writes(b, bdb, WRITES, CONFLICT, 2, &c1, &s1);
    t0 = now_s();
    knit_batch_t *da = changes(a, va), *db = changes(b, vb);
    bench_phase_apply(b, da);
    bench_phase_apply(a, db);
    o->exchange = now_s() - t0;
    t0 = now_s();
    bench_phase_plain_apply(plainb, da);
    bench_phase_plain_apply(plain, db);
    o->plain_exchange = now_s() - t0;
    knit_batch_free(da);
    knit_batch_free(db);
    knit_digest_t ga, gb;
    if (knit_digest(a, NS, &ga) != 0 || knit_digest(b, NS, &gb) != 0)
        die("knit_digest", knit_errmsg(a));
    if (memcmp(&ga, &gb, sizeof ga) != 0)
        die("digests", "A and B differ after the exchange");

    /* 5. Bytes: checkpoint both files, then metadata = the difference. */
    exec(adb, "PRAGMA wal_checkpoint(TRUNCATE)");
    exec(plain, "PRAGMA wal_checkpoint(TRUNCATE)");
    o->meta_bytes = file_size(pa) - file_size(pp);
    o->data_bytes = file_size(pp);

    sqlite3_close(adb);
    sqlite3_close(bdb);
    sqlite3_close(plain);
    sqlite3_close(plainb);
    knit_close(a);
    knit_close(b);
    unlink_db(pa);
    unlink_db(pb);
    unlink_db(pp);
    unlink_db(pq);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 3;
    if (rounds < 1 || rounds > 15)
        die("usage", "bench_map [ROUNDS 1..15]");
    char dir[] = "/tmp/bench_map.XXXXXX";
    if (!mkdtemp(dir))
        die("mkdtemp", dir);
    round_t o[15];
    for (int r = 0; r < rounds; r++)
        one_round(dir, r, &o[r]);
    rmdir(dir);

    double plain[15], total[15], commit[15], apply[15], papply[15], ex[15], pex[15];
    for (int r = 0; r < rounds; r++) {
        plain[r] = o[r].plain;
        total[r] = o[r].commit + o[r].stamp;
        commit[r] = o[r].commit;
        apply[r] = o[r].apply;
        papply[r] = o[r].plain_apply;
        ex[r] = o[r].exchange;
        pex[r] = o[r].plain_exchange;
    }
    double mp = median(plain, rounds), mt = median(total, rounds), mc = median(commit, rounds);
    double ma = median(apply, rounds), mpa = median(papply, rounds);
    double me = median(ex, rounds), mpe = median(pex, rounds);
    printf("bench_map: %d key(s), %d writes in transactions of %d; median of %d round(s)\n", KEYS,
           WRITES, TXN, rounds);
    printf("A's writes, commits + stamps: %.3f s vs plain upserts %.3f s: %.2fx\n", mt, mp,
           mt / mp);
    printf("A's commits alone (capture triggers): %.3f s: %.2fx plain\n", mc, mc / mp);
    printf("B applies A's state (%zu changes): %.3f s vs plain %d-row upsert %.3f s: %.2fx\n",
           o[0].nchanges, ma, KEYS, mpa, ma / mpa);
    printf("PUSH of A's state: %zu bytes, %.1f B per key (key+value as CBOR: %zu B); unit by "
           "unit %zu bytes, %.1f B per key\n",
           o[0].push, (double)o[0].push / KEYS, cbor_pair_bytes(), o[0].push_units,
           (double)o[0].push_units / KEYS);
    printf("%d conflicting writes each, deltas both ways: %.3f s vs plain %.3f s: %.2fx\n",
           CONFLICT, me, mpe, me / mpe);
    printf("file bytes of metadata per row: %.1f B (data file %lld B, %.1f B per row)\n",
           (double)o[0].meta_bytes / KEYS, o[0].data_bytes, (double)o[0].data_bytes / KEYS);
    return 0;
}
