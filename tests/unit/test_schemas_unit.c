/*
** test_schemas_unit.c: schema versions on the wire, without processes: the
** schema value and its fingerprint (runtime/schema.h), HELLO's schema field
** in the codec (round trip, absent, malformed and oversize refused), the
** client engine putting it in HELLO, and the relay store's devices table
** (record, list, move on, upgrade of a schema 2 store).
*/
#include "test.h"

#include <sqlite3.h>

#include "alloc.h"
#include "codec.h"
#include "proto_client.h"
#include "relay_store.h"
#include "schema.h"

/* ---------------------------------------------------------------------- */
/* A small CBOR writer for hand-made (hostile) messages                     */

typedef struct cb_s {
    uint8_t *p; /* bytes */
    size_t n;   /* used */
    size_t cap; /* allocated */
} cb_t;

static void cb_byte(cb_t *c, uint8_t b)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        c->p = realloc(c->p, c->cap);
        CHECK(c->p != NULL);
    }
    c->p[c->n++] = b;
}

static void cb_head(cb_t *c, unsigned major, uint64_t v)
{
    uint8_t m = (uint8_t)(major << 5);
    if (v < 24) {
        cb_byte(c, m | (uint8_t)v);
    } else if (v < 256) {
        cb_byte(c, m | 24), cb_byte(c, (uint8_t)v);
    } else if (v < 65536) {
        cb_byte(c, m | 25), cb_byte(c, (uint8_t)(v >> 8)), cb_byte(c, (uint8_t)v);
    } else {
        cb_byte(c, m | 26);
        for (int i = 3; i >= 0; i--)
            cb_byte(c, (uint8_t)(v >> (8 * i)));
    }
}

static void cb_str(cb_t *c, unsigned major, const void *p, size_t n)
{
    cb_head(c, major, n);
    for (size_t i = 0; i < n; i++)
        cb_byte(c, ((const uint8_t *)p)[i]);
}

#define cb_uint(c, v) cb_head(c, 0, v)
#define cb_text(c, s) cb_str(c, 3, s, strlen(s))
#define cb_bin(c, p, n) cb_str(c, 2, p, n)
#define cb_array(c, n) cb_head(c, 4, n)
#define cb_map(c, n) cb_head(c, 5, n)

/* HELLO's fixed part with `extra` more map pairs to come (key 8...). */
static void hello_head(cb_t *c, size_t extra)
{
    static const uint8_t site[16] = {1, 2, 3};
    cb_map(c, 5 + extra);
    cb_uint(c, 0), cb_uint(c, KNIT_MSG_HELLO);
    cb_uint(c, 1), cb_uint(c, 1);
    cb_uint(c, 2), cb_uint(c, 1);
    cb_uint(c, 3), cb_bin(c, site, 16);
    cb_uint(c, 4), cb_map(c, 2), cb_uint(c, 1), cb_uint(c, KNIT_CRED_JWT), cb_uint(c, 4),
        cb_text(c, "tok");
}

static int decode(const cb_t *c, const char **why)
{
    knit_msg_t m;
    int rc = knit_msg_decode(c->p, c->n, NULL, &m, why);
    if (rc == 0)
        knit_msg_free(&m);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* A sample schema                                                          */

static const char *const notes_keys[] = {"id"};
static const char *const pairs_keys[] = {"b", "a"}; /* key order is kept */

/* notes(id; title, extra?, tags orset) and pairs(b, a; v), deliberately out
** of canonical order. */
static knit_schema_t *sample(int with_extra)
{
    knit_schema_col_t notes_cols[3] = {{"title", 0}, {"tags", 1}, {"extra", 0}};
    knit_schema_col_t pairs_cols[1] = {{"v", 0}};
    knit_schema_table_t t[2] = {
        {"pairs", pairs_keys, 2, pairs_cols, 1},
        {"notes", notes_keys, 1, notes_cols, with_extra ? 3 : 2},
    };
    knit_schema_t in = {t, 2, {0}}, *out = NULL;
    CHECK_OK(knit__schema_pack(&in, &out));
    return out;
}

static void encode_hello(const knit_schema_t *sc, knit_buf_t *buf)
{
    knit_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_HELLO;
    m.u.hello.min_version = m.u.hello.max_version = 1;
    m.u.hello.cred.kind = KNIT_CRED_JWT;
    m.u.hello.cred.token = "tok";
    m.u.hello.schema = sc;
    CHECK_OK(knit_msg_encode(&m, NULL, buf));
}

/* ---------------------------------------------------------------------- */

/* Packing sorts into canonical form; the fingerprint ignores the order the
** columns were added in, and changes with any column or kind. */
static void fingerprint_canonical(void)
{
    knit_schema_t *a = sample(1), *b = sample(0), *c;
    char hex[KNIT_SCHEMA_FP_HEX];
    CHECK_STR(a->tables[0].name, "notes");
    CHECK_STR(a->tables[0].cols[0].name, "extra");
    CHECK_STR(a->tables[0].cols[2].name, "title");
    CHECK_EQ_INT(a->tables[0].cols[1].orset, 1);
    CHECK_STR(a->tables[1].keys[0], "b");
    CHECK_OK(knit__schema_check(a, NULL));
    CHECK(memcmp(a->fp, b->fp, KNIT_SCHEMA_FP_LEN) != 0);
    /* Same columns in another order: same fingerprint. */
    {
        knit_schema_col_t cols[3] = {{"extra", 0}, {"title", 0}, {"tags", 1}};
        knit_schema_col_t pc[1] = {{"v", 0}};
        knit_schema_table_t t[2] = {{"notes", notes_keys, 1, cols, 3},
                                    {"pairs", pairs_keys, 2, pc, 1}};
        knit_schema_t in = {t, 2, {0}};
        CHECK_OK(knit__schema_pack(&in, &c));
        CHECK(memcmp(a->fp, c->fp, KNIT_SCHEMA_FP_LEN) == 0);
        knit__schema_free(c);
        cols[2].orset = 0; /* another kind: another schema */
        CHECK_OK(knit__schema_pack(&in, &c));
        CHECK(memcmp(a->fp, c->fp, KNIT_SCHEMA_FP_LEN) != 0);
        knit__schema_free(c);
        cols[1].name = "extra"; /* a column twice */
        CHECK_EQ_INT(knit__schema_pack(&in, &c), KNIT_EINVAL);
        cols[1].name = "id"; /* a key that is also a column */
        CHECK_EQ_INT(knit__schema_pack(&in, &c), KNIT_EINVAL);
    }
    knit__schema_fp_hex(a->fp, hex);
    CHECK_EQ_INT((int)strlen(hex), 16);
    knit__schema_free(a);
    knit__schema_free(b);
    knit__schema_free(NULL);
}

/* HELLO key 8 round trip; absent stays absent. */
static void hello_schema_roundtrip(void)
{
    knit_schema_t *a = sample(1);
    knit_buf_t buf = {0};
    knit_msg_t d;
    const char *why = NULL;
    encode_hello(a, &buf);
    CHECK_OK(knit_msg_decode(buf.p + 4, buf.len - 4, NULL, &d, &why));
    const knit_schema_t *s = d.u.hello.schema;
    CHECK(s != NULL);
    CHECK(memcmp(s->fp, a->fp, KNIT_SCHEMA_FP_LEN) == 0);
    CHECK_EQ_INT((int)s->ntables, 2);
    for (size_t i = 0; i < 2; i++) {
        CHECK_STR(s->tables[i].name, a->tables[i].name);
        CHECK_EQ_INT((int)s->tables[i].nkeys, (int)a->tables[i].nkeys);
        CHECK_EQ_INT((int)s->tables[i].ncols, (int)a->tables[i].ncols);
        for (uint32_t k = 0; k < s->tables[i].nkeys; k++)
            CHECK_STR(s->tables[i].keys[k], a->tables[i].keys[k]);
        for (uint32_t c = 0; c < s->tables[i].ncols; c++) {
            CHECK_STR(s->tables[i].cols[c].name, a->tables[i].cols[c].name);
            CHECK_EQ_INT(s->tables[i].cols[c].orset, a->tables[i].cols[c].orset);
        }
    }
    knit_msg_free(&d);
    knit_buf_free(&buf);

    /* No schema (an older client): decodes with NULL. */
    encode_hello(NULL, &buf);
    CHECK_OK(knit_msg_decode(buf.p + 4, buf.len - 4, NULL, &d, NULL));
    CHECK(d.u.hello.schema == NULL);
    knit_msg_free(&d);
    knit_buf_free(&buf);

    /* An empty schema (nothing tracked) is a schema too. */
    {
        knit_schema_t in = {NULL, 0, {0}}, *e = NULL;
        CHECK_OK(knit__schema_pack(&in, &e));
        encode_hello(e, &buf);
        CHECK_OK(knit_msg_decode(buf.p + 4, buf.len - 4, NULL, &d, NULL));
        CHECK(d.u.hello.schema && d.u.hello.schema->ntables == 0);
        knit_msg_free(&d);
        knit_buf_free(&buf);
        knit__schema_free(e);
    }
    knit__schema_free(a);
}

/* The encoder refuses what the decoder would: a wrong fingerprint, a
** schema not in canonical order. */
static void hello_schema_encoder_refuses(void)
{
    knit_schema_t *a = sample(1);
    knit_schema_t bad = *a;
    knit_schema_table_t swapped[2] = {a->tables[1], a->tables[0]};
    knit_msg_t m;
    knit_buf_t buf = {0};
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_HELLO;
    m.u.hello.min_version = m.u.hello.max_version = 1;
    m.u.hello.cred.kind = KNIT_CRED_JWT;
    m.u.hello.cred.token = "tok";
    m.u.hello.schema = &bad;
    bad.fp[0] ^= 1;
    CHECK_EQ_INT(knit_msg_encode(&m, NULL, &buf), KNIT_EINVAL);
    bad = *a;
    bad.tables = swapped;
    CHECK_EQ_INT(knit_msg_encode(&m, NULL, &buf), KNIT_EINVAL);
    CHECK(buf.len == 0);
    knit_buf_free(&buf);
    knit__schema_free(a);
}

/* Finds needle in the frame; its offset. */
static size_t find(const knit_buf_t *b, const void *needle, size_t n)
{
    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->p + i, needle, n) == 0)
            return i;
    CHECK(!"needle not found");
    return 0;
}

/* Malformed schemas are refused with EPROTO and a reason naming it. */
static void hello_schema_malformed(void)
{
    knit_schema_t *a = sample(1);
    knit_buf_t buf = {0};
    knit_msg_t d;
    const char *why = NULL;
    size_t at;

    /* A flipped fingerprint byte. */
    encode_hello(a, &buf);
    at = find(&buf, a->fp, KNIT_SCHEMA_FP_LEN);
    buf.p[at] ^= 0x55;
    CHECK_EQ_INT(knit_msg_decode(buf.p + 4, buf.len - 4, NULL, &d, &why), KNIT_EPROTO);
    CHECK(strstr(why, "fingerprint does not match") != NULL);
    knit_buf_free(&buf);

    /* Tables out of order ("notes" renamed "zotes", before "pairs"). */
    encode_hello(a, &buf);
    at = find(&buf, "notes", 5);
    buf.p[at] = 'z';
    CHECK_EQ_INT(knit_msg_decode(buf.p + 4, buf.len - 4, NULL, &d, &why), KNIT_EPROTO);
    CHECK(strstr(why, "ascending") != NULL);
    knit_buf_free(&buf);

    /* An unknown column kind: pairs' one kind byte (04 41 00) becomes 2. */
    encode_hello(a, &buf);
    at = find(&buf, "\x04\x41\x00", 3);
    buf.p[at + 2] = 2;
    CHECK_EQ_INT(knit_msg_decode(buf.p + 4, buf.len - 4, NULL, &d, &why), KNIT_EPROTO);
    CHECK(strstr(why, "kind") != NULL);
    knit_buf_free(&buf);

    /* Hand-made: wrong types and missing fields. */
    {
        cb_t c = {0};
        static const uint8_t fp7[7] = {0};
        hello_head(&c, 1);
        cb_uint(&c, 8), cb_array(&c, 0);
        CHECK_EQ_INT(decode(&c, &why), KNIT_EPROTO);
        CHECK(strstr(why, "schema is not a map") != NULL);

        c.n = 0;
        hello_head(&c, 1);
        cb_uint(&c, 8), cb_map(&c, 1), cb_uint(&c, 2), cb_array(&c, 0);
        CHECK_EQ_INT(decode(&c, &why), KNIT_EPROTO);
        CHECK(strstr(why, "lacks a required field") != NULL);

        c.n = 0;
        hello_head(&c, 1);
        cb_uint(&c, 8), cb_map(&c, 2), cb_uint(&c, 1), cb_bin(&c, fp7, 7), cb_uint(&c, 2),
            cb_array(&c, 0);
        CHECK_EQ_INT(decode(&c, &why), KNIT_EPROTO);
        CHECK(strstr(why, "not 8 bytes") != NULL);

        /* A table without key columns. */
        c.n = 0;
        hello_head(&c, 1);
        cb_uint(&c, 8), cb_map(&c, 2), cb_uint(&c, 1), cb_bin(&c, a->fp, 8), cb_uint(&c, 2),
            cb_array(&c, 1);
        cb_map(&c, 4), cb_uint(&c, 1), cb_text(&c, "t"), cb_uint(&c, 2), cb_array(&c, 0),
            cb_uint(&c, 3), cb_array(&c, 0), cb_uint(&c, 4), cb_bin(&c, "", 0);
        CHECK_EQ_INT(decode(&c, &why), KNIT_EPROTO);
        CHECK(strstr(why, "no key column") != NULL);

        /* Kinds that do not match the columns. */
        c.n = 0;
        hello_head(&c, 1);
        cb_uint(&c, 8), cb_map(&c, 2), cb_uint(&c, 1), cb_bin(&c, a->fp, 8), cb_uint(&c, 2),
            cb_array(&c, 1);
        cb_map(&c, 4), cb_uint(&c, 1), cb_text(&c, "t"), cb_uint(&c, 2), cb_array(&c, 1),
            cb_text(&c, "id"), cb_uint(&c, 3), cb_array(&c, 1), cb_text(&c, "v"), cb_uint(&c, 4),
            cb_bin(&c, "\0\0", 2);
        CHECK_EQ_INT(decode(&c, &why), KNIT_EPROTO);
        CHECK(strstr(why, "kinds do not match") != NULL);

        /* Unknown keys inside the schema are skipped (forward compatible);
        ** here the only problem left is the fingerprint. */
        c.n = 0;
        hello_head(&c, 1);
        cb_uint(&c, 8), cb_map(&c, 3), cb_uint(&c, 1), cb_bin(&c, a->fp, 8), cb_uint(&c, 2),
            cb_array(&c, 0), cb_uint(&c, 9), cb_text(&c, "later");
        CHECK_EQ_INT(decode(&c, &why), KNIT_EPROTO);
        CHECK(strstr(why, "fingerprint does not match") != NULL);
        {
            knit_schema_t in = {NULL, 0, {0}}, *e = NULL;
            CHECK_OK(knit__schema_pack(&in, &e));
            c.n = 0;
            hello_head(&c, 1);
            cb_uint(&c, 8), cb_map(&c, 3), cb_uint(&c, 1), cb_bin(&c, e->fp, 8), cb_uint(&c, 2),
                cb_array(&c, 0), cb_uint(&c, 9), cb_text(&c, "later");
            CHECK_OK(decode(&c, &why));
            knit__schema_free(e);
        }
        free(c.p);
    }
    knit__schema_free(a);
}

/* Every count and name from the network is bounded: ETOOBIG past the
** bound, before anything that size is allocated. */
static void hello_schema_oversize(void)
{
    static const uint8_t fp[8] = {0};
    const char *why = NULL;
    cb_t c = {0};
    char name[KNIT_SCHEMA_MAX_NAME + 2];

    /* More than KNIT_SCHEMA_MAX_TABLES tables. */
    hello_head(&c, 1);
    cb_uint(&c, 8), cb_map(&c, 2), cb_uint(&c, 1), cb_bin(&c, fp, 8), cb_uint(&c, 2),
        cb_array(&c, KNIT_SCHEMA_MAX_TABLES + 1);
    for (int i = 0; i < KNIT_SCHEMA_MAX_TABLES + 1; i++)
        cb_map(&c, 0);
    CHECK_EQ_INT(decode(&c, &why), KNIT_ETOOBIG);
    CHECK(strstr(why, "tables") != NULL);

    /* More than KNIT_SCHEMA_MAX_COLS columns in one table. */
    c.n = 0;
    hello_head(&c, 1);
    cb_uint(&c, 8), cb_map(&c, 2), cb_uint(&c, 1), cb_bin(&c, fp, 8), cb_uint(&c, 2),
        cb_array(&c, 1);
    cb_map(&c, 4), cb_uint(&c, 1), cb_text(&c, "t"), cb_uint(&c, 2), cb_array(&c, 1),
        cb_text(&c, "id"), cb_uint(&c, 3), cb_array(&c, KNIT_SCHEMA_MAX_COLS);
    for (int i = 0; i < KNIT_SCHEMA_MAX_COLS; i++)
        cb_text(&c, "c");
    CHECK_EQ_INT(decode(&c, &why), KNIT_ETOOBIG);
    CHECK(strstr(why, "too many columns") != NULL);

    /* A name longer than KNIT_SCHEMA_MAX_NAME bytes. */
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    c.n = 0;
    hello_head(&c, 1);
    cb_uint(&c, 8), cb_map(&c, 2), cb_uint(&c, 1), cb_bin(&c, fp, 8), cb_uint(&c, 2),
        cb_array(&c, 1);
    cb_map(&c, 1), cb_uint(&c, 1), cb_text(&c, name);
    CHECK_EQ_INT(decode(&c, &why), KNIT_ETOOBIG);
    CHECK(strstr(why, "longer than") != NULL);

    /* A table count beyond what the message holds is never believed. */
    c.n = 0;
    hello_head(&c, 1);
    cb_uint(&c, 8), cb_map(&c, 2), cb_uint(&c, 1), cb_bin(&c, fp, 8), cb_uint(&c, 2),
        cb_array(&c, 1000);
    CHECK_EQ_INT(decode(&c, &why), KNIT_EPROTO);
    free(c.p);

    /* The encoder keeps the same bounds. */
    {
        knit_schema_table_t *t = calloc(KNIT_SCHEMA_MAX_TABLES + 1, sizeof *t);
        char(*names)[8] = calloc(KNIT_SCHEMA_MAX_TABLES + 1, 8);
        knit_schema_t in, *out = NULL;
        CHECK(t && names);
        for (int i = 0; i < KNIT_SCHEMA_MAX_TABLES + 1; i++) {
            snprintf(names[i], 8, "t%05d", i);
            t[i].name = names[i];
            t[i].keys = notes_keys;
            t[i].nkeys = 1;
        }
        in.tables = t;
        in.ntables = KNIT_SCHEMA_MAX_TABLES + 1;
        CHECK_EQ_INT(knit__schema_pack(&in, &out), KNIT_ETOOBIG);
        CHECK_EQ_INT(knit__schema_check(&in, &why), KNIT_ETOOBIG);
        free(t);
        free(names);
    }
}

/* ---------------------------------------------------------------------- */
/* The client engine puts the glue's schema in HELLO                        */

typedef struct cio_s {
    const knit_schema_t *schema; /* what io.schema answers */
    int calls;                   /* io.schema calls */
} cio_t;

static int io_schema(void *data, const knit_schema_t **out)
{
    cio_t *x = data;
    x->calls++;
    *out = x->schema;
    return 0;
}

static int io_cursor(void *data, const char *ns, uint64_t *seq)
{
    (void)data, (void)ns;
    *seq = 0;
    return 0;
}

static const knit_schema_t *hello_of(knit_client_t *c, knit_msg_t *d)
{
    knit_buf_t out = {0};
    knit_client_take_output(c, &out);
    CHECK(out.len > 4);
    CHECK_OK(knit_msg_decode(out.p + 4, out.len - 4, NULL, d, NULL));
    CHECK_EQ_INT(d->type, KNIT_MSG_HELLO);
    knit_buf_free(&out);
    return d->u.hello.schema;
}

static void client_sends_schema(void)
{
    knit_client_config_t cfg;
    knit_client_io_t io;
    knit_client_t *c = NULL;
    cio_t x = {NULL, 0};
    knit_schema_t *a = sample(1);
    knit_msg_t d;
    memset(&cfg, 0, sizeof cfg);
    memset(&io, 0, sizeof io);
    cfg.cred.kind = KNIT_CRED_JWT;
    cfg.cred.token = "tok";
    io.cursor = io_cursor;
    io.schema = io_schema;
    io.data = &x;
    x.schema = a;
    CHECK_OK(knit_client_new(&cfg, &io, &c));
    CHECK_OK(knit_client_start(c, 0));
    CHECK(knit_client_want_connect(c, 0));
    CHECK_OK(knit_client_connected(c, 0));
    const knit_schema_t *s = hello_of(c, &d);
    CHECK(s != NULL && memcmp(s->fp, a->fp, 8) == 0);
    knit_msg_free(&d);
    CHECK_EQ_INT(x.calls, 1);
    /* The next connection asks again (a migration shows); a schema too big
    ** for a HELLO is left out and the HELLO still goes. */
    knit_client_lost(c, 1, KNIT_ECLOSED, NULL);
    {
        enum { N = 300 };
        knit_schema_col_t *cols = calloc(N, sizeof *cols);
        char(*names)[300] = calloc(N, 300);
        knit_schema_table_t t = {"big", notes_keys, 1, cols, N};
        knit_schema_t in = {&t, 1, {0}}, *big = NULL;
        for (int i = 0; i < N; i++) {
            memset(names[i], 'c', 290);
            snprintf(names[i] + 290, 10, "%05d", i);
            cols[i].name = names[i];
        }
        CHECK_OK(knit__schema_pack(&in, &big));
        x.schema = big;
        uint64_t now = 100000;
        CHECK(knit_client_want_connect(c, now));
        CHECK_OK(knit_client_connected(c, now));
        CHECK(hello_of(c, &d) == NULL);
        knit_msg_free(&d);
        CHECK_EQ_INT(x.calls, 2);
        knit__schema_free(big);
        free(cols);
        free(names);
    }
    knit_client_free(c);
    knit__schema_free(a);
}

/* ---------------------------------------------------------------------- */
/* The relay store's devices                                                */

static char g_dir[256];

static void tmp_cleanup(void)
{
    char cmd[300];
    if (!g_dir[0] || getenv("KNIT_KEEP_TMP"))
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
}

static void tmp_store(char *path, size_t n, const char *name)
{
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "/tmp/knit-schemas-XXXXXX");
        CHECK(mkdtemp(g_dir) != NULL);
        atexit(tmp_cleanup);
    }
    snprintf(path, n, "%s/%s", g_dir, name);
    unlink(path);
}

typedef struct seen_s {
    int n;           /* fingerprints listed (reported ones) */
    int unreported;  /* devices without a schema */
    char fps[4][17]; /* their hex */
    size_t ndev[4];  /* devices of each */
    int extra[4];    /* the schema has notes.extra */
} seen_t;

static int on_schema(void *data, const knit_relay_schema_info_t *in)
{
    seen_t *s = data;
    if (!in->reported) {
        s->unreported += (int)in->ndevices;
        return 0;
    }
    CHECK(s->n < 4);
    knit__schema_fp_hex(in->schema->fp, s->fps[s->n]);
    s->ndev[s->n] = in->ndevices;
    for (size_t i = 0; i < in->schema->ntables; i++)
        for (uint32_t c = 0; c < in->schema->tables[i].ncols; c++)
            s->extra[s->n] |= strcmp(in->schema->tables[i].cols[c].name, "extra") == 0;
    /* Stored and listed in canonical order, keys in key order. */
    CHECK_OK(knit__schema_check(in->schema, NULL));
    {
        uint8_t fp[8];
        knit__schema_fingerprint(in->schema, fp);
        CHECK(memcmp(fp, in->schema->fp, 8) == 0);
    }
    s->n++;
    return 0;
}

static void store_devices(void)
{
    char path[512];
    knit_relay_store_t *s = NULL;
    knit_schema_t *a = sample(1), *b = sample(0);
    knit_site_t sa = {{1}}, sb = {{2}}, sc = {{3}};
    seen_t seen;
    sqlite3 *db;
    tmp_store(path, sizeof path, "devices.db");
    CHECK_OK(knit_relay_store_open(path, 0, &s));
    CHECK_OK(knit_relay_store_device_seen(s, "user:alice", &sa, a, "knit/1", 1000));
    CHECK_OK(knit_relay_store_device_seen(s, "user:alice", &sb, b, NULL, 2000));
    CHECK_OK(knit_relay_store_device_seen(s, "user:bob", &sc, NULL, "old", 3000));
    memset(&seen, 0, sizeof seen);
    CHECK_OK(knit_relay_store_list_schemas(s, on_schema, &seen));
    CHECK_EQ_INT(seen.n, 2);
    CHECK_EQ_INT(seen.unreported, 1);
    CHECK_EQ_INT(seen.extra[0], 1); /* a first seen first */
    CHECK_EQ_INT(seen.extra[1], 0);
    /* b migrates: one fingerprint for both, b's old one forgotten. */
    CHECK_OK(knit_relay_store_device_seen(s, "user:alice", &sb, a, NULL, 5000));
    memset(&seen, 0, sizeof seen);
    CHECK_OK(knit_relay_store_list_schemas(s, on_schema, &seen));
    CHECK_EQ_INT(seen.n, 1);
    CHECK_EQ_INT((int)seen.ndev[0], 2);
    knit_relay_store_close(s);
    db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    {
        sqlite3_stmt *st = NULL;
        CHECK(sqlite3_prepare_v2(db,
                                 "SELECT (SELECT count(*) FROM schema_fp),"
                                 " (SELECT count(DISTINCT fp) FROM schema_col),"
                                 " (SELECT user_version FROM pragma_user_version)",
                                 -1, &st, NULL) == SQLITE_OK);
        CHECK(sqlite3_step(st) == SQLITE_ROW);
        CHECK_EQ_INT(sqlite3_column_int(st, 0), 1);
        CHECK_EQ_INT(sqlite3_column_int(st, 1), 1);
        CHECK_EQ_INT(sqlite3_column_int(st, 2), 4);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    /* Read-only: listed, never written. */
    CHECK_OK(knit_relay_store_open(path, KNIT_RELAY_STORE_READONLY, &s));
    CHECK_EQ_INT(knit_relay_store_device_seen(s, "user:x", &sa, a, NULL, 1), KNIT_EREADONLY);
    memset(&seen, 0, sizeof seen);
    CHECK_OK(knit_relay_store_list_schemas(s, on_schema, &seen));
    CHECK_EQ_INT(seen.n, 1);
    knit_relay_store_close(s);
    knit__schema_free(a);
    knit__schema_free(b);
}

/* A schema 2 store (before devices) opens read-only as it is, and is
** upgraded in place when the relay opens it; its cells are kept. */
static void store_upgrade_v2(void)
{
    char path[512];
    knit_relay_store_t *s = NULL;
    knit_schema_t *a = sample(1);
    knit_site_t sa = {{1}};
    seen_t seen;
    sqlite3 *db = NULL;
    tmp_store(path, sizeof path, "v2.db");
    CHECK_OK(knit_relay_store_open(path, 0, &s));
    knit_relay_store_close(s);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "DROP TABLE device; DROP TABLE schema_col; DROP TABLE schema_fp;"
                       " DROP TABLE ident_id; DROP TABLE ident; DROP TABLE membership;"
                       " INSERT INTO ns(name, seq) VALUES('user:kept', 7);"
                       " PRAGMA user_version=2",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK_OK(knit_relay_store_open(path, KNIT_RELAY_STORE_READONLY, &s));
    memset(&seen, 0, sizeof seen);
    CHECK_OK(knit_relay_store_list_schemas(s, on_schema, &seen));
    CHECK_EQ_INT(seen.n, 0);
    knit_relay_store_close(s);
    CHECK_OK(knit_relay_store_open(path, 0, &s));
    {
        uint64_t seq = 0;
        CHECK_OK(knit_relay_store_seq(s, "user:kept", &seq));
        CHECK_EQ_INT((int)seq, 7);
    }
    CHECK_OK(knit_relay_store_device_seen(s, "user:alice", &sa, a, NULL, 1000));
    memset(&seen, 0, sizeof seen);
    CHECK_OK(knit_relay_store_list_schemas(s, on_schema, &seen));
    CHECK_EQ_INT(seen.n, 1);
    knit_relay_store_close(s);
    knit__schema_free(a);
}

KNIT_TESTS(T(fingerprint_canonical), T(hello_schema_roundtrip), T(hello_schema_encoder_refuses),
           T(hello_schema_malformed), T(hello_schema_oversize), T(client_sends_schema),
           T(store_devices), T(store_upgrade_v2))
