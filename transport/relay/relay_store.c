/*
** relay_store.c: the relay's embedded SQLite store (API in relay_store.h).
**
** Everything the relay must not forget lives here: per namespace its
** sequence and the latest winning state of every cell, and the registered
** anonymous credentials.  All I/O goes through SQLite.
**
** Design notes
**   1. Acknowledged means durable.  The store runs in WAL mode with
**      synchronous=FULL: every commit fsyncs the WAL before it returns, so a
**      group knit_relay_store_commit() reported as committed survives a
**      crash or a power cut.  (synchronous=NORMAL in WAL mode only syncs at
**      checkpoints: a power cut may roll back the last commits, which would
**      lose acknowledged pushes.)  Group commit pays that fsync once for all
**      the pushes staged in the group.
**   2. A namespace's sequence only grows, and it grows inside the same
**      transaction that writes the cells stamped with it, so a sequence a
**      reader has seen always names committed cells, and a rolled-back group
**      leaves no gap that a reader could have seen.  An apply counts the
**      sequences it hands out in memory and writes the namespace's row once,
**      at the end of the push and inside its savepoint: an UPDATE per unit
**      cost about a fifth of the relay's instructions.
**   3. Each pushed unit in which some change won takes exactly one sequence;
**      a unit in which nothing won takes none (a push replayed after a lost
**      ACK changes nothing, takes no sequence and produces no fan-out).
**   4. Every cell holds its latest winning state and the sequence of the
**      unit that last changed it, so catch-up (cells with seq > cursor, by
**      the (ns, seq) index) sends each changed cell once.
**   5. A row's liveness cell carries its causal length.  A column change of
**      a life older than the row's causal length is dead on arrival; when
**      the causal length advances, column cells of older lives are deleted.
**   6. Each push applies inside a savepoint: a refused or failed push
**      leaves the group exactly as it was before the push.
**   7. Names are stored once.  A cell is keyed (ns, tid, pk, cid): tid is
**      the rowid of its table's row in tbl (which belongs to one namespace),
**      cid the rowid of its column's row in col, or 0 for the row's
**      liveness cell.  Column ids start at 1, so a row's liveness cell sorts
**      first among its cells, which the digest relies on.  Ids are given out
**      in first-seen order and rows of tbl and col are never deleted, so a
**      table's columns in id order are its columns in first-seen order.
**      Everything that reads cells maps the ids back to names (ctab_load),
**      and no id ever leaves this file: catch-up batches, fan-out and the
**      claim's merge (a catch-up applied to another namespace) carry names.
**      Writing two B-tree entries per cell (the cell and its (ns, seq) index
**      entry, which repeats the key) is most of the ingest cost, and short
**      integer keys make both cheaper.
**   8. A damaged cell never blocks a namespace.  Catch-up reads cells as
**      hostile input (the file may have been edited, or written by an
**      older relay that stored what no replica can apply): a cell that does
**      not decode, names an unknown table or column, or fails
**      knit_change_check() is skipped, reported through on_damage with its
**      namespace, table, key and column, and counted; every other cell of
**      the page is sent.  PRAGMA quick_check (knit_relay_store_check) finds
**      damage SQLite itself can see, at start.
**   9. Erasure forgets a namespace whole: its cells, its tables and columns
**      (their ids belong to that namespace alone, so no other cell names
**      them) and its sequence, in one transaction.  A namespace written
**      again afterwards starts over at sequence 1; a client whose cursor is
**      beyond that is sent everything (PROTOCOL.md §6.2).  The devices
**      recorded for it and the claims from or into it go too.  The store
**      always runs with secure_delete=FAST (a replaced value is zeroed in
**      its page) and an erase with secure_delete on, so SQLite overwrites
**      the freed space, freelist pages included,
**      and ends with a TRUNCATE checkpoint, so the WAL frames that wrote
**      the cells are gone as well: after an erase, the bytes of its values
**      are in none of the store's files.
**  10. The relay's own site id is made once, from SQLite's CSPRNG, and kept
**      in a key-value table meta(key, value) that is created when it is
**      first written.  A store that has none yet is still a store of the
**      current schema, and a read-only store without one answers
**      KNIT_ENOTFOUND.
**  11. Devices and their schemas (schema 3): each HELLO's device, keyed
**      (principal, site), records the fingerprint of the tracked schema it
**      reported (an empty blob when it reported none: an older client),
**      its agent string and when it was first and last seen.  Each
**      fingerprint's schema is stored once (schema_fp, schema_col) while a
**      device runs it, and dropped when its last device moves on.  A
**      report that changes nothing but the time, within DEVICE_SEEN_MS of
**      the last one written, writes nothing, so a relay restart that
**      reconnects every device costs no fsync per device.  A schema 2 store
**      is upgraded in place at open (the three tables are added); a
**      read-only open of one lists no devices.
**  12. Identity, in meta (no schema change): a sign-in claim seals the
**      anonymous namespace it merges to the account, inside the merge's
**      transaction ("seal" US anon = account), so that a second account's
**      claim is refused (KNIT_EDENIED) and the relay refuses the anonymous
**      credential itself.  A claim recorded before seals existed counts as
**      a seal to the account it went into.  Erasing an account first writes
**      its tombstone ("erased" US ns = ms), durably, then erases: from the
**      tombstone on, the account's tokens are refused, so no session can
**      write the namespace again while it goes.  knit_relay_store_unerase
**      (the provider's user.created) removes it.  Seals outlive erasure:
**      an anonymous id claimed into an erased account stays closed.
**  13. The identity index (schema 4): one row of ident per account, keyed
**      by its namespace, holding the account's primary email (unique,
**      compared trimmed and in lower case), external_id and the profile
**      values last applied; ident_id maps every provider user id (unique)
**      to one account.  knit_relay_store_identify applies the rules inside
**      one write transaction (BEGIN IMMEDIATE, or the caller's group), so a
**      sign-in and a webhook about one person, from any process, see each
**      other's effect whatever the order: id match updates; an email match
**      with another id links that id to the account (nothing is created,
**      the namespace and its data stay); no match creates "user:<id>".  An
**      account's namespace keeps the name of its first id for ever; later
**      ids resolve to it.  Profile values from a webhook apply when its
**      updated_at is not older than the last applied; a sign-in's claims
**      only fill what no webhook has set (tokens may be older than the
**      last webhook).  When an id's account has no email (a sign-in whose
**      token had none made it: provisional) and the id's email names
**      another account, the id and the provisional account's other ids move
**      there and its cells are merged into it (the claim's CRDT union, in
**      the same transaction), except its knit_profile row: the account
**      keeps its own.  Erasing an account forgets its ident rows, ids and
**      memberships (the email is personal data too).
**
** OR-set cells are stored self-contained, with full site ids, in the form
** the state digest needs:
**
**   +---------+-------------------+-------------------------------------+
**   | varint k| k site ids (16 B) | knit_orset_encode, sites 0..k-1     |
**   +---------+-------------------+-------------------------------------+
**
** The k site ids are exactly the sites the set names, strictly increasing
** in byte order, and the set numbers them by position.  That is byte for
** byte knit_orset_canonical() (crdt/orset.h), the form crdt/digest.h hashes,
** so the digest hashes stored OR-set values as they are, and equal states
** are equal bytes (which is how a join that added nothing is detected).
*/
#include "relay_store.h"

#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "entropy.h"
#include "lww.h"
#include "orset.h"
#include "sqlerr.h"
#include "sset.h"
#include "validate.h"

/* Schema versions: 1 named tables and columns in every cell; 2 keys cells
** by integer ids (design note 7); 3 adds devices and their schemas (design
** note 11), upgraded in place from 2; 4 adds the identity index and
** organization memberships (design note 13), upgraded in place from 2 or 3. */
#define SCHEMA_VERSION 4
#define DEVICE_SEEN_MS 60000      /* a device's last_seen is rewritten at most this often */
#define APPLICATION_ID 0x6b6e5253 /* "knRS" */
#define CLAIM_KEY_MAX 1024        /* claims are between principals' namespaces (< 170 bytes) */

/* Cell kinds as stored. */
#define KIND_LIVE 0  /* the row's liveness (column "") */
#define KIND_LWW 1   /* LWW register */
#define KIND_ORSET 2 /* OR-set, stored form above */

/* clang-format off */
static const char SCHEMA[] =
    "CREATE TABLE ns("
    "  id INTEGER PRIMARY KEY,"              /* small id used in other tables */
    "  name TEXT NOT NULL UNIQUE,"           /* e.g. user:alice */
    "  seq INTEGER NOT NULL DEFAULT 0);"     /* last sequence handed out */
    "CREATE TABLE tbl("
    "  id INTEGER PRIMARY KEY,"              /* cell.tid (design note 7) */
    "  ns INTEGER NOT NULL, name TEXT NOT NULL,"
    "  npk INTEGER NOT NULL,"                /* key column count */
    "  UNIQUE(ns, name));"
    "CREATE TABLE col("
    "  id INTEGER PRIMARY KEY,"              /* cell.cid, >= 1, first-seen order */
    "  tbl INTEGER NOT NULL,"                /* tbl.id */
    "  name TEXT NOT NULL,"
    "  kind INTEGER NOT NULL,"               /* KIND_LWW or KIND_ORSET */
    "  UNIQUE(tbl, name));"
    "CREATE TABLE cell("
    "  ns INTEGER NOT NULL,"                 /* ns.id */
    "  tid INTEGER NOT NULL,"                /* tbl.id */
    "  pk BLOB NOT NULL,"                    /* concatenated knit_value encodings */
    "  cid INTEGER NOT NULL,"                /* col.id; 0 = row liveness */
    "  kind INTEGER NOT NULL,"               /* KIND_* */
    "  cl INTEGER NOT NULL,"                 /* causal length of the life */
    "  hlc INTEGER NOT NULL,"                /* winning stamp (uint64 bits) */
    "  site BLOB NOT NULL,"                  /* winning site id, 16 bytes */
    "  value BLOB NOT NULL,"                 /* value encoding / OR-set form */
    "  seq INTEGER NOT NULL,"                /* ns sequence of the last change */
    "  PRIMARY KEY(ns, tid, pk, cid)) WITHOUT ROWID;"
    "CREATE INDEX cell_seq ON cell(ns, seq);"
    "CREATE TABLE anon("
    "  id TEXT PRIMARY KEY,"                 /* client-made anonymous id */
    "  salt BLOB NOT NULL,"                  /* 16 random bytes */
    "  hash BLOB NOT NULL,"                  /* SHA-256, see relay/auth.h */
    "  created INTEGER NOT NULL) WITHOUT ROWID;";

/* Added by schema 3 (design note 11); also the upgrade from 2. */
static const char SCHEMA_V3[] =
    "CREATE TABLE schema_fp("
    "  fp BLOB PRIMARY KEY,"                 /* fingerprint, 8 bytes (runtime/schema.h) */
    "  first_seen INTEGER NOT NULL) WITHOUT ROWID;" /* ms since the epoch */
    "CREATE TABLE schema_col("
    "  fp BLOB NOT NULL,"                    /* schema_fp.fp */
    "  tbl TEXT NOT NULL,"                   /* tracked table */
    "  pos INTEGER NOT NULL,"                /* keys in key order, then columns by name */
    "  name TEXT NOT NULL,"                  /* column */
    "  kind INTEGER NOT NULL,"               /* 0 key, 1 LWW, 2 OR-set */
    "  PRIMARY KEY(fp, tbl, pos)) WITHOUT ROWID;"
    "CREATE TABLE device("
    "  principal TEXT NOT NULL,"             /* anon:<id> / user:<sub> */
    "  site BLOB NOT NULL,"                  /* the replica's site id, 16 bytes */
    "  fp BLOB NOT NULL,"                    /* schema_fp.fp, or X'' when none reported */
    "  agent TEXT NOT NULL,"                 /* HELLO agent, or '' */
    "  first_seen INTEGER NOT NULL,"         /* ms since the epoch */
    "  last_seen INTEGER NOT NULL,"          /* within DEVICE_SEEN_MS */
    "  PRIMARY KEY(principal, site)) WITHOUT ROWID;"
    "CREATE INDEX device_fp ON device(fp);";

/* Added by schema 4 (design note 13); also the upgrade from 3. */
static const char SCHEMA_V4[] =
    "CREATE TABLE ident("
    "  account TEXT PRIMARY KEY,"            /* namespace, user:<first provider id> */
    "  email TEXT UNIQUE,"                   /* primary email, trimmed and lower case, or NULL */
    "  external_id TEXT,"                    /* the provider's external_id, or NULL */
    "  first_name TEXT, last_name TEXT, image_url TEXT," /* profile values last applied */
    "  updated_at INTEGER NOT NULL DEFAULT 0," /* provider's updated_at applied (ms), 0: none */
    "  profiled INTEGER NOT NULL DEFAULT 0,"   /* the knit_profile row was written */
    "  created INTEGER NOT NULL) WITHOUT ROWID;" /* ms since the epoch */
    "CREATE TABLE ident_id("
    "  id TEXT PRIMARY KEY,"                 /* provider's user id (token sub, data.id) */
    "  account TEXT NOT NULL,"               /* ident.account */
    "  linked INTEGER NOT NULL) WITHOUT ROWID;" /* when it was linked (ms) */
    "CREATE INDEX ident_id_account ON ident_id(account);"
    "CREATE TABLE membership("
    "  org TEXT NOT NULL,"                   /* the provider's organization id */
    "  user_id TEXT NOT NULL,"               /* the provider's user id */
    "  account TEXT NOT NULL,"               /* ident.account it resolved to */
    "  role TEXT NOT NULL,"                  /* e.g. org:admin, '' when none */
    "  present INTEGER NOT NULL,"            /* 1 member, 0 removed (kept against reordering) */
    "  updated INTEGER NOT NULL,"            /* the event's updated_at (ms) */
    "  PRIMARY KEY(org, user_id)) WITHOUT ROWID;"
    "CREATE INDEX membership_account ON membership(account);";
/* clang-format on */

/* Prepared statements, by index. */
enum {
    S_NS_GET,
    S_NS_INS,
    S_NS_SEQ,
    S_TBL_GET,
    S_TBL_INS,
    S_TBL_BY_ID,
    S_COL_GET,
    S_COL_INS,
    S_CELL_GET,
    S_CELL_PUT,
    S_CELL_LWW,
    S_CELL_LIVE,
    S_CELL_PRUNE,
    S_CATCH,
    S_DIGEST,
    S_COLS,
    S_LIST,
    S_ANON_GET,
    S_ANON_PUT,
    S_ANON_LIST,
    S_ERASE_CELLS,
    S_ERASE_COLS,
    S_ERASE_TBLS,
    S_ERASE_NS,
    S_META_GET,
    S_META_PUT,
    S_DEV_GET,
    S_DEV_PUT,
    S_FP_PUT,
    S_FP_COL_PUT,
    S_FP_DROP_COLS,
    S_FP_DROP,
    S_FP_LIST,
    S_FP_COLS,
    S_FP_DEVICES,
    S_ID_GET,
    S_ID_PUT,
    S_ID_MOVE,
    S_IDENT_GET,
    S_IDENT_BY_EMAIL,
    S_IDENT_INS,
    S_IDENT_PUT,
    S_IDENT_DROP,
    S_TRACKS,
    S_MEMBER_GET,
    S_MEMBER_PUT,
    S_MEMBER_LIST,
    S_COUNT
};

static const char *const SQL[S_COUNT] = {
    [S_NS_GET] = "SELECT id, seq FROM ns WHERE name = ?1",
    [S_NS_INS] = "INSERT INTO ns(name, seq) VALUES(?1, 0)",
    [S_NS_SEQ] = "UPDATE ns SET seq = ?2 WHERE id = ?1",
    [S_TBL_GET] = "SELECT id, npk FROM tbl WHERE ns = ?1 AND name = ?2",
    [S_TBL_INS] = "INSERT INTO tbl(ns, name, npk) VALUES(?1, ?2, ?3)",
    [S_TBL_BY_ID] = "SELECT name, npk FROM tbl WHERE id = ?1 AND ns = ?2",
    [S_COL_GET] = "SELECT id, kind FROM col WHERE tbl = ?1 AND name = ?2",
    [S_COL_INS] = "INSERT INTO col(tbl, name, kind) VALUES(?1, ?2, ?3)",
    [S_CELL_GET] = "SELECT kind, cl, hlc, site, value FROM cell"
                   " WHERE ns = ?1 AND tid = ?2 AND pk = ?3 AND cid = ?4",
    [S_CELL_PUT] = "INSERT OR REPLACE INTO cell(ns, tid, pk, cid, kind, cl, hlc, site, value, seq)"
                   " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    /* Merge of one LWW cell in one statement: the stored cell is replaced
    ** only by a larger (cl, hlc, site).  cl and hlc are stored as the int64
    ** of their uint64 bits; both stay below 2^63 (an HLC reaches it in the
    ** year 6429), so SQL's signed order is their order.  Sites are 16-byte
    ** BLOBs, which SQL compares as memcmp does, so the order is exactly
    ** knit_stamp_cmp's. */
    [S_CELL_LWW] =
        "INSERT INTO cell(ns, tid, pk, cid, kind, cl, hlc, site, value, seq)"
        " VALUES(?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9)"
        " ON CONFLICT(ns, tid, pk, cid) DO UPDATE SET cl = excluded.cl,"
        " hlc = excluded.hlc, site = excluded.site, value = excluded.value,"
        " seq = excluded.seq"
        " WHERE kind = 1 AND (excluded.cl, excluded.hlc, excluded.site) > (cl, hlc, site)",
    /* The same for a row's liveness cell (column id 0). */
    [S_CELL_LIVE] =
        "INSERT INTO cell(ns, tid, pk, cid, kind, cl, hlc, site, value, seq)"
        " VALUES(?1, ?2, ?3, 0, 0, ?4, ?5, ?6, X'00', ?7)"
        " ON CONFLICT(ns, tid, pk, cid) DO UPDATE SET cl = excluded.cl,"
        " hlc = excluded.hlc, site = excluded.site, seq = excluded.seq"
        " WHERE kind = 0 AND (excluded.cl, excluded.hlc, excluded.site) > (cl, hlc, site)",
    [S_CELL_PRUNE] = "DELETE FROM cell WHERE ns = ?1 AND tid = ?2 AND pk = ?3"
                     " AND cid > 0 AND cl < ?4",
    /* Both scans follow an index (cell_seq, whose entries end with the
    ** cell key, and the key itself), so neither sorts. */
    [S_CATCH] = "SELECT tid, pk, cid, kind, cl, hlc, site, value, seq FROM cell"
                " WHERE ns = ?1 AND seq > ?2 ORDER BY seq, tid, pk, cid",
    [S_DIGEST] = "SELECT tid, pk, cid, kind, cl, hlc, site, value FROM cell"
                 " WHERE ns = ?1 ORDER BY tid, pk, cid",
    [S_COLS] = "SELECT id, name, kind FROM col WHERE tbl = ?1 ORDER BY id",
    [S_LIST] = "SELECT name, seq,"
               " (SELECT count(*) FROM cell WHERE cell.ns = ns.id AND cid = 0),"
               " (SELECT count(*) FROM cell WHERE cell.ns = ns.id)"
               " FROM ns ORDER BY name",
    [S_ANON_GET] = "SELECT salt, hash FROM anon WHERE id = ?1",
    [S_ANON_PUT] = "INSERT INTO anon(id, salt, hash, created) VALUES(?1, ?2, ?3, ?4)",
    [S_ANON_LIST] = "SELECT id, created FROM anon ORDER BY id",
    /* Erasure of one namespace (design note 9), in this order. */
    [S_ERASE_CELLS] = "DELETE FROM cell WHERE ns = ?1",
    [S_ERASE_COLS] = "DELETE FROM col WHERE tbl IN (SELECT id FROM tbl WHERE ns = ?1)",
    [S_ERASE_TBLS] = "DELETE FROM tbl WHERE ns = ?1",
    [S_ERASE_NS] = "DELETE FROM ns WHERE id = ?1",
    /* The meta table (design note 10) is made when first written. */
    [S_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [S_META_PUT] = "INSERT INTO meta(key, value) VALUES(?1, ?2)",
    /* Devices and schemas (design note 11). */
    [S_DEV_GET] = "SELECT fp, agent, last_seen FROM device WHERE principal = ?1 AND site = ?2",
    [S_DEV_PUT] = "INSERT INTO device(principal, site, fp, agent, first_seen, last_seen)"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(principal, site) DO UPDATE"
                  " SET fp = excluded.fp, agent = excluded.agent, last_seen = excluded.last_seen",
    [S_FP_PUT] = "INSERT OR IGNORE INTO schema_fp(fp, first_seen) VALUES(?1, ?2)",
    [S_FP_COL_PUT] = "INSERT INTO schema_col(fp, tbl, pos, name, kind) VALUES(?1, ?2, ?3, ?4, ?5)",
    [S_FP_DROP_COLS] = "DELETE FROM schema_col WHERE fp = ?1"
                       " AND NOT EXISTS (SELECT 1 FROM device WHERE fp = ?1)",
    [S_FP_DROP] = "DELETE FROM schema_fp WHERE fp = ?1"
                  " AND NOT EXISTS (SELECT 1 FROM device WHERE fp = ?1)",
    [S_FP_LIST] = "SELECT fp, first_seen FROM schema_fp ORDER BY first_seen, fp",
    [S_FP_COLS] = "SELECT tbl, pos, name, kind FROM schema_col WHERE fp = ?1 ORDER BY tbl, pos",
    [S_FP_DEVICES] = "SELECT principal, site, agent, first_seen, last_seen FROM device"
                     " WHERE fp = ?1 ORDER BY principal, site",
    /* The identity index (design note 13). */
    [S_ID_GET] = "SELECT account FROM ident_id WHERE id = ?1",
    [S_ID_PUT] = "INSERT OR REPLACE INTO ident_id(id, account, linked) VALUES(?1, ?2, ?3)",
    [S_ID_MOVE] = "UPDATE ident_id SET account = ?2, linked = ?3 WHERE account = ?1",
    [S_IDENT_GET] = "SELECT email, first_name, last_name, image_url, external_id, updated_at,"
                    " profiled FROM ident WHERE account = ?1",
    [S_IDENT_BY_EMAIL] = "SELECT account FROM ident WHERE email = ?1",
    [S_IDENT_INS] = "INSERT INTO ident(account, created) VALUES(?1, ?2)",
    [S_IDENT_PUT] = "UPDATE ident SET email = ?2, first_name = ?3, last_name = ?4,"
                    " image_url = ?5, external_id = ?6, updated_at = ?7, profiled = ?8"
                    " WHERE account = ?1",
    [S_IDENT_DROP] = "DELETE FROM ident WHERE account = ?1",
    [S_TRACKS] = "SELECT 1 FROM device d JOIN schema_col c ON c.fp = d.fp"
                 " WHERE d.principal = ?1 AND c.tbl = ?2 LIMIT 1",
    [S_MEMBER_GET] =
        "SELECT present, role, updated FROM membership WHERE org = ?1 AND user_id = ?2",
    [S_MEMBER_LIST] = "SELECT org, role, present, updated FROM membership WHERE account = ?1"
                      " ORDER BY org",
    [S_MEMBER_PUT] = "INSERT OR REPLACE INTO membership(org, user_id, account, role, present,"
                     " updated) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
};

struct knit_relay_store_s {
    sqlite3 *db;                    /* the store's connection */
    sqlite3_stmt *st[S_COUNT];      /* prepared lazily, finalized on close */
    int readonly;                   /* opened with KNIT_RELAY_STORE_READONLY */
    int version;                    /* the file's schema version (2: read-only, no devices) */
    int in_group;                   /* a group transaction is open */
    char errmsg[256];               /* last failure's details */
    knit_relay_damage_fn on_damage; /* told about each cell catch-up skips, or NULL */
    void *damage_data;              /* passed to on_damage */
    uint64_t damaged;               /* cells catch-up skipped since open */
};

/* ---------------------------------------------------------------------- */
/* SQLite plumbing                                                          */

static int set_err(knit_relay_store_t *s, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
    return rc;
}

/* Maps an SQLite result code to a KNIT_E* code and records the message. */
static int db_err(knit_relay_store_t *s, int src)
{
    int rc = knit__sqlite_code(src);
    return set_err(s, rc, "sqlite: %s", s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(src));
}

static int exec(knit_relay_store_t *s, const char *sql)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_err(s, rc);
}

/* The statement at index i, reset and with bindings cleared. */
static int stmt(knit_relay_store_t *s, int i, sqlite3_stmt **out)
{
    if (!s->st[i]) {
        int rc = sqlite3_prepare_v3(s->db, SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
        if (rc != SQLITE_OK)
            return db_err(s, rc);
    }
    sqlite3_reset(s->st[i]);
    sqlite3_clear_bindings(s->st[i]);
    *out = s->st[i];
    return 0;
}

/* Steps st once: 1 = a row, 0 = done, or an error (statement reset). */
static int step(knit_relay_store_t *s, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    rc = db_err(s, rc);
    sqlite3_reset(st);
    return rc;
}

static void bind_u64(sqlite3_stmt *st, int i, uint64_t v)
{
    sqlite3_bind_int64(st, i, (sqlite3_int64)v);
}

static uint64_t col_u64(sqlite3_stmt *st, int i)
{
    return (uint64_t)sqlite3_column_int64(st, i);
}

/* ---------------------------------------------------------------------- */
/* Open and close                                                           */

/* Creates the schema in an empty file, or checks an existing one. */
static int check_schema(knit_relay_store_t *s)
{
    sqlite3_stmt *st = NULL;
    int rc, appid = 0, version = 0, ntables = 0;

    if (!s->readonly && (rc = exec(s, "BEGIN IMMEDIATE")) != 0)
        return rc;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT (SELECT application_id FROM pragma_application_id),"
                            " (SELECT user_version FROM pragma_user_version),"
                            " (SELECT count(*) FROM sqlite_schema)",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rc = db_err(s, rc);
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        rc = db_err(s, rc);
        goto out;
    }
    appid = sqlite3_column_int(st, 0);
    version = sqlite3_column_int(st, 1);
    ntables = sqlite3_column_int(st, 2);
    sqlite3_finalize(st);
    st = NULL;
    rc = 0;
    if (appid == 0 && version == 0 && ntables == 0) {
        if (s->readonly) {
            rc = set_err(s, KNIT_ENOTREPLICA, "empty file, not a relay store");
            goto out;
        }
        if ((rc = exec(s, SCHEMA)) != 0 || (rc = exec(s, SCHEMA_V3)) != 0 ||
            (rc = exec(s, SCHEMA_V4)) != 0)
            goto out;
        version = SCHEMA_VERSION;
        char pragmas[128];
        snprintf(pragmas, sizeof pragmas, "PRAGMA application_id=%d; PRAGMA user_version=%d",
                 APPLICATION_ID, SCHEMA_VERSION);
        if ((rc = exec(s, pragmas)) != 0)
            goto out;
    } else if (appid != APPLICATION_ID) {
        rc = set_err(s, KNIT_ENOTREPLICA, "not a knit relay store");
    } else if (version > SCHEMA_VERSION) {
        rc = set_err(s, KNIT_EVERSION, "store schema %d is newer than this relay's (%d)", version,
                     SCHEMA_VERSION);
    } else if (version < 1) {
        rc = set_err(s, KNIT_ECORRUPT, "store schema version %d", version);
    } else if ((version == 2 || version == 3) && s->readonly) {
        rc = 0; /* design notes 11, 13: readable as it is, without what came later */
    } else if (version == 2 || version == 3) {
        /* Design notes 11 and 13: schemas 3 and 4 only add tables. */
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d", SCHEMA_VERSION);
        if ((version > 2 || (rc = exec(s, SCHEMA_V3)) == 0) && (rc = exec(s, SCHEMA_V4)) == 0 &&
            (rc = exec(s, pragma)) == 0)
            version = SCHEMA_VERSION;
    } else if (version < SCHEMA_VERSION) {
        /* No store of schema 1 was ever deployed, so there is no migration
        ** from it: say so rather than misread its cells. */
        rc = set_err(s, KNIT_EVERSION,
                     "store schema %d is older than this relay's (%d) and cannot be upgraded;"
                     " start from a new store (clients push their changes again)",
                     version, SCHEMA_VERSION);
    }
out:
    sqlite3_finalize(st);
    s->version = version;
    if (!s->readonly) {
        if (rc == 0)
            rc = exec(s, "COMMIT");
        else
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

int knit_relay_store_open(const char *path, int flags,
                          knit_relay_store_t **out) /* see relay_store.h */
{
    knit_relay_store_t *s;
    int rc, oflags;

    *out = NULL;
    if (!path || !*path)
        return KNIT_EINVAL;
    s = knit__calloc(1, sizeof *s);
    if (!s)
        return KNIT_ENOMEM;
    s->readonly = (flags & KNIT_RELAY_STORE_READONLY) != 0;
    oflags = s->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    rc = sqlite3_open_v2(path, &s->db, oflags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rc = (rc & 0xff) == SQLITE_CANTOPEN && s->readonly ? KNIT_ENOTFOUND : db_err(s, rc);
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, 5000);
    /* WAL lets sync-inspect read while the relay writes; FULL makes every
    ** commit durable before it returns (design note 1). */
    if (!s->readonly && (rc = exec(s, "PRAGMA journal_mode=WAL")) != 0)
        goto fail;
    /* secure_delete=FAST: a replaced or deleted value's bytes are zeroed in
    ** the pages being written anyway (design note 9), at no extra I/O. */
    if ((rc = exec(s, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;"
                      " PRAGMA secure_delete=FAST")) != 0)
        goto fail;
    if ((rc = check_schema(s)) != 0)
        goto fail;
    s->errmsg[0] = '\0';
    *out = s;
    return 0;
fail:
    knit_relay_store_close(s);
    return rc;
}

void knit_relay_store_close(knit_relay_store_t *s) /* see relay_store.h */
{
    if (!s)
        return;
    if (s->in_group)
        knit_relay_store_rollback(s);
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
    knit__free(s);
}

const char *knit_relay_store_errmsg(knit_relay_store_t *s) /* see relay_store.h */
{
    return s ? s->errmsg : "";
}

void knit_relay_store_on_damage(knit_relay_store_t *s, knit_relay_damage_fn fn,
                                void *data) /* see relay_store.h */
{
    s->on_damage = fn;
    s->damage_data = data;
}

uint64_t knit_relay_store_damaged(const knit_relay_store_t *s) /* see relay_store.h */
{
    return s->damaged;
}

int knit_relay_store_size(knit_relay_store_t *s, int64_t *bytes) /* see relay_store.h */
{
    sqlite3_stmt *st = NULL;
    int rc;
    *bytes = 0;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT page_count * page_size FROM pragma_page_count(), "
                            "pragma_page_size()",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *bytes = sqlite3_column_int64(st, 0);
    rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : db_err(s, rc);
}

int knit_relay_store_check(knit_relay_store_t *s, char *finding, size_t n) /* see relay_store.h */
{
    sqlite3_stmt *st = NULL;
    size_t off = 0;
    int rc, lines = 0, ok = 0;
    if (n)
        finding[0] = '\0';
    rc = sqlite3_prepare_v2(s->db, "PRAGMA quick_check(20)", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rc = db_err(s, rc);
        snprintf(finding, n, "%s", s->errmsg);
        return rc;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *line = (const char *)sqlite3_column_text(st, 0);
        if (!line)
            continue;
        if (lines == 0 && strcmp(line, "ok") == 0) {
            ok = 1;
            continue;
        }
        if (strncmp(line, "*** in database ", 16) == 0)
            continue; /* a heading, not a finding */
        if (lines < 5 && off + 1 < n) {
            int k = snprintf(finding + off, n - off, "%s%s", lines ? "; " : "", line);
            if (k > 0)
                off = off + (size_t)k < n ? off + (size_t)k : n - 1;
        }
        lines++;
    }
    if (rc != SQLITE_DONE) {
        /* quick_check itself failed: that is a finding too. */
        rc = db_err(s, rc);
        sqlite3_finalize(st);
        snprintf(finding, n, "%s", s->errmsg);
        return rc == KNIT_EBUSY || rc == KNIT_ENOMEM || rc == KNIT_EIO ? rc : KNIT_ECORRUPT;
    }
    sqlite3_finalize(st);
    if (lines > 5 && off + 1 < n)
        snprintf(finding + off, n - off, "; and %d more", lines - 5);
    return ok && lines == 0 ? 0 : set_err(s, KNIT_ECORRUPT, "%s", finding);
}

/* ---------------------------------------------------------------------- */
/* Namespaces and table shapes                                              */

/* id and sequence of ns; *id = 0 when absent and create is 0. */
static int ns_lookup(knit_relay_store_t *s, const char *ns, int create, int64_t *id, uint64_t *seq)
{
    sqlite3_stmt *st;
    int rc;

    *id = 0;
    *seq = 0;
    if ((rc = stmt(s, S_NS_GET, &st)) != 0)
        return rc;
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    rc = step(s, st);
    if (rc == 1) {
        *id = sqlite3_column_int64(st, 0);
        *seq = col_u64(st, 1);
        sqlite3_reset(st);
        return 0;
    }
    sqlite3_reset(st);
    if (rc < 0 || !create)
        return rc;
    if ((rc = stmt(s, S_NS_INS, &st)) != 0)
        return rc;
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    rc = step(s, st);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    *id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

/* Stores the namespace's last sequence handed out (design note 2). */
static int ns_set_seq(knit_relay_store_t *s, int64_t nsid, uint64_t seq)
{
    sqlite3_stmt *st;
    int rc;
    if ((rc = stmt(s, S_NS_SEQ, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, nsid);
    bind_u64(st, 2, seq);
    rc = step(s, st);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    return sqlite3_changes(s->db) == 1 ? 0 : set_err(s, KNIT_EDB, "namespace row vanished");
}

/* Records the table's key width, or checks it against the stored one; *tid
** is the table's id (design note 7). */
static int shape_table(knit_relay_store_t *s, int64_t nsid, const knit_batch_table_t *t,
                       int64_t *tid)
{
    sqlite3_stmt *st;
    int rc;
    if (!t->name[0])
        return set_err(s, KNIT_EINVAL, "empty table name");
    if ((rc = stmt(s, S_TBL_GET, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, nsid);
    sqlite3_bind_text(st, 2, t->name, -1, SQLITE_STATIC);
    rc = step(s, st);
    if (rc == 1) {
        int64_t npk = sqlite3_column_int64(st, 1);
        *tid = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (npk != (int64_t)t->npk)
            return set_err(s, KNIT_ESCHEMA, "table %s has %lld key columns, push says %u", t->name,
                           (long long)npk, t->npk);
        if (*tid <= 0)
            return set_err(s, KNIT_ECORRUPT, "table %s has id %lld", t->name, (long long)*tid);
        return 0;
    }
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    if ((rc = stmt(s, S_TBL_INS, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, nsid);
    sqlite3_bind_text(st, 2, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, t->npk);
    rc = step(s, st);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    *tid = sqlite3_last_insert_rowid(s->db);
    return 0;
}

/* Records a column's kind, or checks it against the stored one; *cid is the
** column's id in table tid (design note 7). */
static int shape_column(knit_relay_store_t *s, int64_t tid, const knit_batch_table_t *t, uint32_t c,
                        int64_t *cid)
{
    sqlite3_stmt *st;
    int rc, kind = t->orset[c] ? KIND_ORSET : KIND_LWW;
    if (!t->cols[c][0])
        return set_err(s, KNIT_EINVAL, "table %s: empty column name", t->name);
    if ((rc = stmt(s, S_COL_GET, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, tid);
    sqlite3_bind_text(st, 2, t->cols[c], -1, SQLITE_STATIC);
    rc = step(s, st);
    if (rc == 1) {
        int have = sqlite3_column_int(st, 1);
        *cid = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (have != kind)
            return set_err(s, KNIT_ESCHEMA, "column %s.%s is %s here, the push says %s", t->name,
                           t->cols[c], have == KIND_ORSET ? "an OR-set" : "LWW",
                           kind == KIND_ORSET ? "an OR-set" : "LWW");
        if (*cid <= 0) /* id 0 is the liveness cell's */
            return set_err(s, KNIT_ECORRUPT, "column %s.%s has id %lld", t->name, t->cols[c],
                           (long long)*cid);
        return 0;
    }
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    if ((rc = stmt(s, S_COL_INS, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, tid);
    sqlite3_bind_text(st, 2, t->cols[c], -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, kind);
    rc = step(s, st);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    *cid = sqlite3_last_insert_rowid(s->db);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Apply                                                                    */

int knit_relay_store_begin(knit_relay_store_t *s) /* see relay_store.h */
{
    int rc;
    if (s->readonly)
        return set_err(s, KNIT_EREADONLY, "store opened read-only");
    if (s->in_group)
        return set_err(s, KNIT_EINVAL, "a group is already open");
    if ((rc = exec(s, "BEGIN IMMEDIATE")) != 0)
        return rc;
    s->in_group = 1;
    return 0;
}

int knit_relay_store_commit(knit_relay_store_t *s) /* see relay_store.h */
{
    int rc;
    if (!s->in_group)
        return set_err(s, KNIT_EINVAL, "no group is open");
    rc = exec(s, "COMMIT");
    if (rc != 0) {
        /* A failed COMMIT may leave the transaction open; end it so the
        ** next group starts clean and nothing half-done is ever seen. */
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    }
    s->in_group = 0;
    return rc;
}

void knit_relay_store_rollback(knit_relay_store_t *s) /* see relay_store.h */
{
    if (!s || !s->in_group)
        return;
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->in_group = 0;
}

/* Per-apply state. */
typedef struct apply_s {
    knit_relay_store_t *s;    /* the store */
    const knit_batch_t *push; /* the push */
    int64_t nsid;             /* namespace id */
    knit_batch_t *out;        /* fan-out being built */
    uint32_t out_ns;          /* ns index in out */
    int64_t *out_tab;         /* per push table: its index in out, or -1 */
    int64_t *tid;             /* per push table: its id once shape-checked, else 0 */
    size_t *col_off;          /* per push table: offset into cid */
    int64_t *cid;             /* per push column: its id once shape-checked, else 0 */
    uint64_t seq;             /* the current unit's sequence, 0 = none yet */
    uint8_t *pk;              /* encoding buffer for the current key */
    size_t pk_cap;            /* its size */
    uint8_t *val;             /* encoding buffer for an LWW value */
    size_t val_cap;           /* its size */
    uint64_t last_seq;        /* the namespace's last sequence handed out */
    int64_t rcl_tid;          /* row_cl cache: table id of the row remembered, 0 = none */
    uint8_t *rcl_pk;          /* its key encoding (owned) */
    size_t rcl_pklen;         /* key bytes */
    size_t rcl_cap;           /* rcl_pk's size */
    uint64_t rcl;             /* the row's causal length */
} apply_t;

static int ensure_buf(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    uint8_t *n = knit__realloc(*buf, need);
    if (!n)
        return KNIT_ENOMEM;
    *buf = n;
    *cap = need;
    return 0;
}

static int value_ok(const knit_value_t *v)
{
    switch (v->type) {
    case KNIT_NULL:
    case KNIT_INTEGER:
        return 1;
    case KNIT_REAL:
        return !isnan(v->u.r);
    case KNIT_TEXT:
    case KNIT_BLOB:
        return v->u.b.n == 0 || v->u.b.p != NULL;
    }
    return 0;
}

/* Encodes c's key into A->pk; returns its length via *n. */
static int encode_pk(apply_t *A, const knit_change_t *c, size_t *n)
{
    const knit_batch_table_t *t = &A->push->tables[c->table];
    size_t need = 0, k = 0;
    for (uint32_t i = 0; i < t->npk; i++) {
        if (!value_ok(&c->pk[i]))
            return set_err(A->s, KNIT_EINVAL, "table %s: bad key value", t->name);
        need += knit_value_encoded_size(&c->pk[i]);
    }
    if (ensure_buf(&A->pk, &A->pk_cap, need ? need : 1))
        return KNIT_ENOMEM;
    for (uint32_t i = 0; i < t->npk; i++)
        k += knit_value_encode(&c->pk[i], A->pk + k);
    *n = k;
    return 0;
}

/* The unit's sequence, taken on its first winning change (design note 3);
** the namespace's row is updated once per push (design note 2). */
static int unit_seq(apply_t *A)
{
    if (A->seq)
        return 0;
    A->seq = ++A->last_seq;
    return knit_batch_begin(A->out, A->seq);
}

/* Writes a cell at the unit's sequence. */
static int put_cell(apply_t *A, int64_t tid, size_t pklen, int64_t cid, int kind, uint64_t cl,
                    uint64_t hlc, const knit_site_t *site, const void *val, size_t vlen)
{
    sqlite3_stmt *st;
    int rc;
    if ((rc = stmt(A->s, S_CELL_PUT, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, A->nsid);
    sqlite3_bind_int64(st, 2, tid);
    sqlite3_bind_blob(st, 3, A->pk, (int)pklen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, cid);
    sqlite3_bind_int(st, 5, kind);
    bind_u64(st, 6, cl);
    bind_u64(st, 7, hlc);
    sqlite3_bind_blob(st, 8, site->b, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 9, val, (int)vlen, SQLITE_STATIC);
    bind_u64(st, 10, A->seq);
    rc = step(A->s, st);
    sqlite3_reset(st);
    return rc < 0 ? rc : 0;
}

/* The stored cell, if any. */
typedef struct stored_s {
    int found;      /* 1 if the cell exists */
    int kind;       /* KIND_* */
    knit_lww_t lww; /* cl, hlc, site (value unset) */
    uint8_t *val;   /* value bytes, owned copy */
    size_t vlen;    /* their count */
} stored_t;

static int get_cell(apply_t *A, int64_t tid, size_t pklen, int64_t cid, int want_value,
                    stored_t *out)
{
    sqlite3_stmt *st;
    int rc;
    memset(out, 0, sizeof *out);
    if ((rc = stmt(A->s, S_CELL_GET, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, A->nsid);
    sqlite3_bind_int64(st, 2, tid);
    sqlite3_bind_blob(st, 3, A->pk, (int)pklen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, cid);
    rc = step(A->s, st);
    if (rc == 1) {
        out->found = 1;
        out->kind = sqlite3_column_int(st, 0);
        out->lww.cl = col_u64(st, 1);
        out->lww.hlc = col_u64(st, 2);
        if (sqlite3_column_bytes(st, 3) != 16) {
            sqlite3_reset(st);
            return set_err(A->s, KNIT_ECORRUPT, "stored site id is not 16 bytes");
        }
        memcpy(out->lww.site.b, sqlite3_column_blob(st, 3), 16);
        if (want_value) {
            const void *p = sqlite3_column_blob(st, 4);
            out->vlen = (size_t)sqlite3_column_bytes(st, 4);
            out->val = knit__memdup(p ? p : "", out->vlen ? out->vlen : 1);
            if (!out->val) {
                sqlite3_reset(st);
                return KNIT_ENOMEM;
            }
        }
        rc = 0;
    }
    sqlite3_reset(st);
    return rc < 0 ? rc : 0;
}

/* The fan-out table index for push table t. */
static int out_table(apply_t *A, uint32_t t, uint32_t *idx)
{
    if (A->out_tab[t] < 0) {
        const knit_batch_table_t *bt = &A->push->tables[t];
        uint32_t i;
        int rc = knit_batch_table(A->out, bt->name, bt->npk, bt->ncols,
                                  (const char *const *)bt->cols, bt->orset, &i);
        if (rc)
            return rc;
        A->out_tab[t] = i;
    }
    *idx = (uint32_t)A->out_tab[t];
    return 0;
}

/* Appends a winning change to the fan-out. */
static int emit(apply_t *A, const knit_change_t *c, const knit_value_t *value)
{
    knit_change_t o = *c;
    int rc;
    if ((rc = out_table(A, c->table, &o.table)) != 0)
        return rc;
    if ((rc = knit_batch_site(A->out, &A->push->sites[c->site], &o.site)) != 0)
        return rc;
    o.ns = A->out_ns;
    o.value = *value;
    return knit_batch_add(A->out, &o);
}

/* Remembers cl as the causal length of row (tid, A->pk): changes of one row
** come together, and its later cells then need no liveness lookup. */
static int remember_cl(apply_t *A, int64_t tid, size_t pklen, uint64_t cl)
{
    if (ensure_buf(&A->rcl_pk, &A->rcl_cap, pklen ? pklen : 1)) {
        A->rcl_tid = 0;
        return KNIT_ENOMEM;
    }
    memcpy(A->rcl_pk, A->pk, pklen);
    A->rcl_pklen = pklen;
    A->rcl_tid = tid;
    A->rcl = cl;
    return 0;
}

/* Whether the row_cl cache holds row (tid, A->pk). */
static int remembered(const apply_t *A, int64_t tid, size_t pklen)
{
    return A->rcl_tid == tid && A->rcl_pklen == pklen && memcmp(A->rcl_pk, A->pk, pklen) == 0;
}

/* The row's causal length (0 when it has no liveness cell yet). */
static int row_cl(apply_t *A, int64_t tid, size_t pklen, uint64_t *cl)
{
    stored_t st;
    if (remembered(A, tid, pklen)) {
        *cl = A->rcl;
        return 0;
    }
    int rc = get_cell(A, tid, pklen, 0, 0, &st);
    *cl = st.found ? st.lww.cl : 0;
    return rc ? rc : remember_cl(A, tid, pklen, *cl);
}

/* The ids of c's table and column (shape-checked in apply_all). */
static int64_t change_tid(const apply_t *A, const knit_change_t *c)
{
    return A->tid[c->table];
}

static int64_t change_cid(const apply_t *A, const knit_change_t *c)
{
    return c->col ? A->cid[A->col_off[c->table] + c->col - 1] : 0;
}

static int merge_live(apply_t *A, const knit_change_t *c, size_t pklen, int *won)
{
    int64_t tid = change_tid(A, c);
    knit_value_t null = {KNIT_NULL, {0}};
    sqlite3_stmt *st;
    int rc, known = 0;
    uint64_t old_cl = 0;

    /* The row's causal length before, when already known (row_cl cache). */
    if (remembered(A, tid, pklen)) {
        old_cl = A->rcl;
        known = 1;
    }
    if ((rc = stmt(A->s, S_CELL_LIVE, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, A->nsid);
    sqlite3_bind_int64(st, 2, tid);
    sqlite3_bind_blob(st, 3, A->pk, (int)pklen, SQLITE_STATIC);
    bind_u64(st, 4, c->cl);
    bind_u64(st, 5, c->hlc);
    sqlite3_bind_blob(st, 6, A->push->sites[c->site].b, 16, SQLITE_STATIC);
    bind_u64(st, 7, A->seq ? A->seq : A->last_seq + 1); /* see merge_lww */
    rc = step(A->s, st);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    if (sqlite3_changes(A->s->db) == 0)
        return 0;
    if ((rc = unit_seq(A)) != 0)
        return rc;
    if (!known || c->cl > old_cl) {
        /* Design note 5: cells of older lives can never win again. */
        if ((rc = stmt(A->s, S_CELL_PRUNE, &st)) != 0)
            return rc;
        sqlite3_bind_int64(st, 1, A->nsid);
        sqlite3_bind_int64(st, 2, tid);
        sqlite3_bind_blob(st, 3, A->pk, (int)pklen, SQLITE_STATIC);
        bind_u64(st, 4, c->cl);
        rc = step(A->s, st);
        sqlite3_reset(st);
        if (rc < 0)
            return rc;
    }
    if ((rc = remember_cl(A, tid, pklen, c->cl)) != 0)
        return rc;
    *won = 1;
    return emit(A, c, &null);
}

static int merge_lww(apply_t *A, const knit_change_t *c, size_t pklen, int *won)
{
    int64_t tid = change_tid(A, c);
    const knit_site_t *site = &A->push->sites[c->site];
    sqlite3_stmt *st;
    uint64_t rcl;
    size_t vlen;
    int rc;

    if ((rc = row_cl(A, tid, pklen, &rcl)) != 0)
        return rc;
    if (c->cl < rcl)
        return 0; /* a write of an earlier life: dead */
    vlen = knit_value_encoded_size(&c->value);
    if (ensure_buf(&A->val, &A->val_cap, vlen))
        return KNIT_ENOMEM;
    knit_value_encode(&c->value, A->val);
    /* One guarded upsert reads, compares and writes.  It is bound with the
    ** sequence this unit takes if anything in it wins; that number is
    ** only claimed (unit_seq) once the cell did win. */
    if ((rc = stmt(A->s, S_CELL_LWW, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, A->nsid);
    sqlite3_bind_int64(st, 2, tid);
    sqlite3_bind_blob(st, 3, A->pk, (int)pklen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, change_cid(A, c));
    bind_u64(st, 5, c->cl);
    bind_u64(st, 6, c->hlc);
    sqlite3_bind_blob(st, 7, site->b, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 8, A->val, (int)vlen, SQLITE_STATIC);
    bind_u64(st, 9, A->seq ? A->seq : A->last_seq + 1);
    rc = step(A->s, st);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    if (sqlite3_changes(A->s->db) == 0)
        return 0; /* the stored cell is as new or newer (or not an LWW cell) */
    if ((rc = unit_seq(A)) != 0)
        return rc;
    *won = 1;
    return emit(A, c, &c->value);
}

static int merge_orset(apply_t *A, const knit_change_t *c, size_t pklen, int *won)
{
    const knit_batch_table_t *t = &A->push->tables[c->table];
    const char *col = t->cols[c->col - 1];
    int64_t tid = change_tid(A, c), cid = change_cid(A, c);
    knit_sset_t in, cur;
    stored_t st = {0};
    uint64_t rcl, hlc = c->hlc;
    knit_site_t site = A->push->sites[c->site];
    uint8_t *enc = NULL, *wire = NULL;
    size_t nenc = 0, nwire = 0;
    knit_sset_t *win = &in;
    int rc;

    knit__sset_init(&in);
    knit__sset_init(&cur);
    if ((rc = row_cl(A, tid, pklen, &rcl)) != 0)
        return rc;
    if (c->cl < rcl)
        return 0;
    rc = knit_orset_decode(c->value.u.b.p, c->value.u.b.n, &in.set);
    if (rc) {
        rc = rc == KNIT_ENOMEM
                 ? rc
                 : set_err(A->s, KNIT_ECORRUPT, "%s.%s: bad OR-set state", t->name, col);
        goto out;
    }
    if ((rc = knit__sset_canon(&in, A->push->sites, A->push->nsites)) != 0) {
        if (rc == KNIT_ECORRUPT)
            set_err(A->s, rc, "%s.%s: OR-set names an unknown or duplicate site", t->name, col);
        goto out;
    }
    if ((rc = get_cell(A, tid, pklen, cid, 1, &st)) != 0)
        goto out;
    if (st.found && st.kind != KIND_ORSET) {
        rc = set_err(A->s, KNIT_ECORRUPT, "cell %s.%s has kind %d", t->name, col, st.kind);
        goto out;
    }
    if (st.found && c->cl < st.lww.cl)
        goto out; /* an older life */
    if (st.found && c->cl == st.lww.cl) {
        if ((rc = knit__sset_decode(&cur, st.val, st.vlen)) != 0) {
            if (rc == KNIT_ECORRUPT)
                set_err(A->s, rc, "stored OR-set %s.%s is corrupt", t->name, col);
            goto out;
        }
        if ((rc = knit__sset_join(&cur, &in)) != 0)
            goto out;
        win = &cur;
        if (knit_stamp_cmp(st.lww.hlc, &st.lww.site, hlc, &site) > 0) {
            hlc = st.lww.hlc;
            site = st.lww.site;
        }
    }
    if ((rc = knit__sset_encode(win, &enc, &nenc)) != 0)
        goto out;
    /* Already held when the join added nothing and the stamp is not newer.
    ** (The stamp counts too, so that the stored stamp is the maximum
    ** whatever order the states arrived in.) */
    if (st.found && c->cl == st.lww.cl && nenc == st.vlen && memcmp(enc, st.val, nenc) == 0 &&
        knit_stamp_cmp(hlc, &site, st.lww.hlc, &st.lww.site) <= 0)
        goto out;
    if ((rc = unit_seq(A)) != 0)
        goto out;
    if ((rc = put_cell(A, tid, pklen, cid, KIND_ORSET, c->cl, hlc, &site, enc, nenc)) != 0)
        goto out;
    if ((rc = knit__sset_to_batch(win, A->out, &wire, &nwire)) != 0)
        goto out;
    {
        knit_change_t o = *c;
        knit_value_t v;
        v.type = KNIT_BLOB;
        v.u.b.p = wire;
        v.u.b.n = nwire;
        o.hlc = hlc;
        /* The winning stamp's site, which the fan-out must carry. */
        if ((rc = out_table(A, c->table, &o.table)) != 0)
            goto out;
        if ((rc = knit_batch_site(A->out, &site, &o.site)) != 0)
            goto out;
        o.ns = A->out_ns;
        o.value = v;
        if ((rc = knit_batch_add(A->out, &o)) != 0)
            goto out;
    }
    *won = 1;
out:
    knit__free(enc);
    knit__free(wire);
    knit__free(st.val);
    knit__sset_free(&in);
    knit__sset_free(&cur);
    return rc;
}

/* Checks everything about one change that does not need the store: the
** namespace, then what every replica needs to apply it (validate.h), so
** the store never holds a change no replica can apply. */
static int check_change(apply_t *A, const char *ns, const knit_change_t *c)
{
    const knit_batch_t *p = A->push;
    char why[200];
    int rc;
    if (c->ns >= p->nns || strcmp(p->ns[c->ns], ns) != 0)
        return set_err(A->s, KNIT_EINVAL, "change outside namespace %s", ns);
    if ((rc = knit_change_check(p, c, why, sizeof why)) != 0)
        return rc == KNIT_ENOMEM ? rc : set_err(A->s, rc, "%s", why);
    return 0;
}

static int apply_all(apply_t *A, const char *ns, knit_relay_applied_t *res)
{
    const knit_batch_t *p = A->push;
    size_t total = 0;
    int rc;

    for (size_t i = 0; i < p->nchanges; i++)
        if ((rc = check_change(A, ns, &p->changes[i])) != 0)
            return rc;
    for (size_t u = 0; u < p->ntxns; u++) {
        const knit_txn_t *tx = &p->txns[u];
        if (tx->first > p->nchanges || tx->count > p->nchanges - tx->first)
            return set_err(A->s, KNIT_EINVAL, "unit %zu out of range", u);
        total += tx->count;
    }
    if (total != p->nchanges)
        return set_err(A->s, KNIT_EINVAL, "units do not cover the changes");
    for (size_t i = 0; i < p->ntables; i++)
        A->out_tab[i] = -1;

    for (size_t u = 0; u < p->ntxns; u++) {
        const knit_txn_t *tx = &p->txns[u];
        A->seq = 0;
        for (size_t k = 0; k < tx->count; k++) {
            const knit_change_t *c = &p->changes[tx->first + k];
            const knit_batch_table_t *t = &p->tables[c->table];
            size_t pklen = 0;
            int won = 0;
            if (!A->tid[c->table] && (rc = shape_table(A->s, A->nsid, t, &A->tid[c->table])) != 0)
                return rc;
            if (c->col > 0 && !A->cid[A->col_off[c->table] + c->col - 1] &&
                (rc = shape_column(A->s, A->tid[c->table], t, c->col - 1,
                                   &A->cid[A->col_off[c->table] + c->col - 1])) != 0)
                return rc;
            if ((rc = encode_pk(A, c, &pklen)) != 0)
                return rc;
            if (c->col == 0)
                rc = merge_live(A, c, pklen, &won);
            else if (t->orset[c->col - 1])
                rc = merge_orset(A, c, pklen, &won);
            else
                rc = merge_lww(A, c, pklen, &won);
            if (rc)
                return rc;
            if (won)
                res->applied++;
            else
                res->known++;
        }
        if (A->seq) {
            if (!res->first_seq)
                res->first_seq = A->seq;
            res->last_seq = A->seq;
        }
    }
    return res->last_seq ? ns_set_seq(A->s, A->nsid, res->last_seq) : 0;
}

int knit_relay_store_apply(knit_relay_store_t *s, const char *ns, const knit_batch_t *push,
                           knit_relay_applied_t *out) /* see relay_store.h */
{
    apply_t A;
    size_t ncols = 0;
    uint64_t seq0;
    int rc;

    memset(out, 0, sizeof *out);
    memset(&A, 0, sizeof A);
    if (!s->in_group)
        return set_err(s, KNIT_EINVAL, "apply outside a group");
    if (!ns || !*ns || !push)
        return set_err(s, KNIT_EINVAL, "no namespace or push");
    A.s = s;
    A.push = push;
    for (size_t i = 0; i < push->ntables; i++)
        ncols += push->tables[i].ncols;
    A.out_tab = knit__malloc((push->ntables ? push->ntables : 1) * sizeof *A.out_tab);
    A.tid = knit__calloc(push->ntables ? push->ntables : 1, sizeof *A.tid);
    A.col_off = knit__malloc((push->ntables ? push->ntables : 1) * sizeof *A.col_off);
    A.cid = knit__calloc(ncols ? ncols : 1, sizeof *A.cid);
    if (!A.out_tab || !A.tid || !A.col_off || !A.cid) {
        rc = KNIT_ENOMEM;
        goto done;
    }
    ncols = 0;
    for (size_t i = 0; i < push->ntables; i++) {
        A.col_off[i] = ncols;
        ncols += push->tables[i].ncols;
    }
    if ((rc = knit_batch_new(&A.out)) != 0)
        goto done;
    if ((rc = knit_batch_ns(A.out, ns, &A.out_ns)) != 0)
        goto done;
    if ((rc = exec(s, "SAVEPOINT push")) != 0)
        goto done;
    rc = ns_lookup(s, ns, 1, &A.nsid, &seq0);
    A.last_seq = seq0;
    if (rc == 0)
        rc = apply_all(&A, ns, out);
    if (rc == 0) {
        rc = exec(s, "RELEASE push");
    } else {
        /* Design note 6: undo this push only; the group goes on. */
        sqlite3_exec(s->db, "ROLLBACK TO push; RELEASE push", NULL, NULL, NULL);
    }
done:
    knit__free(A.out_tab);
    knit__free(A.tid);
    knit__free(A.col_off);
    knit__free(A.cid);
    knit__free(A.pk);
    knit__free(A.val);
    knit__free(A.rcl_pk);
    if (rc) {
        knit_batch_free(A.out);
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->fanout = A.out;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Reading                                                                  */

int knit_relay_store_seq(knit_relay_store_t *s, const char *ns,
                         uint64_t *seq) /* see relay_store.h */
{
    int64_t id;
    return ns_lookup(s, ns, 0, &id, seq);
}

/* A table of the store with its names: cells name tables and columns by id
** (design note 7), readers by name. */
typedef struct ctab_s {
    int64_t tid;    /* tbl.id */
    char *name;     /* table name, owned */
    uint32_t npk;   /* key width */
    uint32_t ncols; /* columns */
    char **cols;    /* names in id (first-seen) order, owned */
    int64_t *cids;  /* their col.id, increasing, owned */
    uint8_t *orset; /* per column: 1 for an OR-set, owned */
    uint32_t idx;   /* index in the catch-up batch (catch-up only) */
} ctab_t;

/* The tables met while reading one namespace. */
typedef struct ctabs_s {
    knit_relay_store_t *s; /* the store */
    int64_t nsid;          /* namespace id */
    knit_batch_t *b;       /* catch-up batch to describe the tables in, or NULL */
    ctab_t *tabs;          /* tables met so far */
    size_t ntabs;          /* count */
    size_t last;           /* index of the table found last: cells come by table */
} ctabs_t;

static void ctab_free(ctab_t *t)
{
    for (uint32_t c = 0; c < t->ncols; c++)
        knit__free(t->cols[c]);
    knit__free(t->cols);
    knit__free(t->cids);
    knit__free(t->orset);
    knit__free(t->name);
}

static void ctabs_free(ctabs_t *C)
{
    for (size_t i = 0; i < C->ntabs; i++)
        ctab_free(&C->tabs[i]);
    knit__free(C->tabs);
    C->tabs = NULL;
    C->ntabs = 0;
}

/* Reads table t's columns, in id order, into t. */
static int ctab_cols(ctabs_t *C, ctab_t *t)
{
    knit_relay_store_t *s = C->s;
    sqlite3_stmt *st;
    size_t cap = 0;
    int rc;

    if ((rc = stmt(s, S_COLS, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, t->tid);
    while ((rc = step(s, st)) == 1) {
        if (t->ncols == cap) {
            size_t nc = cap ? cap * 2 : 8;
            char **ncols = knit__realloc(t->cols, nc * sizeof *ncols);
            int64_t *ncids = ncols ? knit__realloc(t->cids, nc * sizeof *ncids) : NULL;
            uint8_t *nk = ncids ? knit__realloc(t->orset, nc) : NULL;
            if (ncols)
                t->cols = ncols;
            if (ncids)
                t->cids = ncids;
            if (nk)
                t->orset = nk;
            if (!ncols || !ncids || !nk) {
                rc = KNIT_ENOMEM;
                break;
            }
            cap = nc;
        }
        const char *cn = (const char *)sqlite3_column_text(st, 1);
        int64_t cid = sqlite3_column_int64(st, 0);
        if (cid <= 0 || (t->ncols && cid <= t->cids[t->ncols - 1])) {
            rc = set_err(s, KNIT_ECORRUPT, "table %s: bad column id %lld", t->name, (long long)cid);
            break;
        }
        if (!(t->cols[t->ncols] = knit__strdup(cn ? cn : ""))) {
            rc = KNIT_ENOMEM;
            break;
        }
        t->cids[t->ncols] = cid;
        t->orset[t->ncols] = sqlite3_column_int(st, 2) == KIND_ORSET;
        t->ncols++;
    }
    sqlite3_reset(st);
    return rc < 0 ? rc : 0;
}

/* The table with id tid, loaded on first use (and, in a catch-up, added to
** the batch).  *out stays valid until the next ctab_load. */
static int ctab_load(ctabs_t *C, int64_t tid, ctab_t **out)
{
    knit_relay_store_t *s = C->s;
    sqlite3_stmt *st;
    ctab_t t;
    int rc;

    if (C->ntabs && C->tabs[C->last].tid == tid) {
        *out = &C->tabs[C->last];
        return 0;
    }
    for (size_t i = 0; i < C->ntabs; i++) {
        if (C->tabs[i].tid == tid) {
            C->last = i;
            *out = &C->tabs[i];
            return 0;
        }
    }
    memset(&t, 0, sizeof t);
    t.tid = tid;
    if ((rc = stmt(s, S_TBL_BY_ID, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, tid);
    sqlite3_bind_int64(st, 2, C->nsid);
    rc = step(s, st);
    if (rc == 1) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        t.npk = (uint32_t)sqlite3_column_int(st, 1);
        if (name && *name && !(t.name = knit__strdup(name)))
            rc = KNIT_ENOMEM;
    }
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    if (!t.name || t.npk == 0) {
        knit__free(t.name);
        return set_err(s, KNIT_ECORRUPT, "cells of unknown table id %lld", (long long)tid);
    }
    if ((rc = ctab_cols(C, &t)) != 0)
        goto fail;
    if (C->b && (rc = knit_batch_table(C->b, t.name, t.npk, t.ncols, (const char *const *)t.cols,
                                       t.orset ? t.orset : (const uint8_t *)"", &t.idx)) != 0)
        goto fail;
    {
        ctab_t *n = knit__realloc(C->tabs, (C->ntabs + 1) * sizeof *n);
        if (!n) {
            rc = KNIT_ENOMEM;
            goto fail;
        }
        C->tabs = n;
    }
    C->last = C->ntabs;
    C->tabs[C->ntabs] = t;
    *out = &C->tabs[C->ntabs++];
    return 0;
fail:
    ctab_free(&t);
    return rc;
}

/* Column index (1-based) of column id cid in t, 0 for the liveness cell (id
** 0), -1 if t has no such column. */
static int64_t ctab_col(const ctab_t *t, int64_t cid)
{
    uint32_t lo = 0, hi = t->ncols;
    if (cid == 0)
        return 0;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->cids[mid] == cid)
            return (int64_t)mid + 1;
        if (t->cids[mid] < cid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* The table and column of the cell at the current row of st (columns 0 tid,
** 2 cid, 3 kind), checked against each other: *ci as ctab_col. */
static int cell_names(ctabs_t *C, sqlite3_stmt *st, ctab_t **t, int64_t *ci)
{
    int64_t cid = sqlite3_column_int64(st, 2);
    int kind = sqlite3_column_int(st, 3), rc;
    if ((rc = ctab_load(C, sqlite3_column_int64(st, 0), t)) != 0)
        return rc;
    *ci = ctab_col(*t, cid);
    if (*ci < 0)
        return set_err(C->s, KNIT_ECORRUPT, "cell of %s has unknown column id %lld", (*t)->name,
                       (long long)cid);
    if ((*ci == 0) != (kind == KIND_LIVE) ||
        (*ci > 0 && (*t)->orset[*ci - 1] != (kind == KIND_ORSET)))
        return set_err(C->s, KNIT_ECORRUPT, "cell %s.%s does not match its table", (*t)->name,
                       *ci ? (*t)->cols[*ci - 1] : "");
    return 0;
}

/* Decodes exactly npk key values from p[0..n); TEXT/BLOB point into p. */
static int decode_pk(const uint8_t *p, size_t n, uint32_t npk, knit_value_t *out)
{
    size_t off = 0, used;
    for (uint32_t i = 0; i < npk; i++) {
        if (knit_value_decode(p + off, n - off, &out[i], &used) != 0)
            return KNIT_ECORRUPT;
        off += used;
    }
    return off == n ? 0 : KNIT_ECORRUPT;
}

/* Reports a cell catch-up skips (design note 8): its namespace, table, key
** and column as far as they can be read, and why. */
static int skip_cell(ctabs_t *C, const char *ns, sqlite3_stmt *st, const ctab_t *t, int64_t ci,
                     const knit_value_t *pk, const char *why)
{
    knit_relay_store_t *s = C->s;
    char tname[64], key[160], col[80];
    const uint8_t *raw = sqlite3_column_blob(st, 1);
    size_t rawlen = (size_t)sqlite3_column_bytes(st, 1);
    knit_relay_damage_t d;

    s->damaged++;
    if (t)
        snprintf(tname, sizeof tname, "%s", t->name);
    else
        snprintf(tname, sizeof tname, "table id %lld", (long long)sqlite3_column_int64(st, 0));
    if (t && ci > 0 && (uint64_t)ci <= t->ncols)
        snprintf(col, sizeof col, "%s", t->cols[ci - 1]);
    else if (t && ci == 0)
        snprintf(col, sizeof col, "(row liveness)");
    else
        snprintf(col, sizeof col, "column id %lld", (long long)sqlite3_column_int64(st, 2));
    if (pk && t) {
        knit__key_text(pk, t->npk, key, sizeof key);
    } else {
        /* The key itself does not decode: show its bytes. */
        size_t k = (size_t)snprintf(key, sizeof key, "X'");
        for (size_t i = 0; raw && i < rawlen && i < 32 && k + 3 < sizeof key; i++)
            k += (size_t)snprintf(key + k, sizeof key - k, "%02X", raw[i]);
        snprintf(key + k, sizeof key - k, "%s'", rawlen > 32 ? "..." : "");
    }
    memset(&d, 0, sizeof d);
    d.ns = ns;
    d.table = tname;
    d.key = key;
    d.column = col;
    d.seq = col_u64(st, 8);
    d.message = why;
    if (s->on_damage)
        s->on_damage(s->damage_data, &d);
    return 1;
}

/* Adds the cell at the current row of the catch-up statement: 0, 1 when
** the cell is damaged or not applicable and was skipped (and reported),
** or a negative error that ends the catch-up (KNIT_ENOMEM, KNIT_EDB). */
static int catch_row(ctabs_t *C, const char *ns, sqlite3_stmt *st, uint32_t ns_idx,
                     knit_value_t **pkbuf, uint32_t *pkcap)
{
    knit_relay_store_t *s = C->s;
    const uint8_t *pk = sqlite3_column_blob(st, 1);
    size_t pklen = (size_t)sqlite3_column_bytes(st, 1);
    int kind = sqlite3_column_int(st, 3);
    const uint8_t *site = sqlite3_column_blob(st, 6);
    const uint8_t *val = sqlite3_column_blob(st, 7);
    size_t vlen = (size_t)sqlite3_column_bytes(st, 7);
    knit_change_t c;
    knit_site_t sid;
    ctab_t *t = NULL;
    int64_t ci = -1;
    uint8_t *wire = NULL;
    char why[200];
    int rc;

    if (!pk)
        return skip_cell(C, ns, st, NULL, -1, NULL, "the stored key is empty");
    if ((rc = cell_names(C, st, &t, &ci)) != 0) {
        if (rc != KNIT_ECORRUPT)
            return rc;
        return skip_cell(C, ns, st, t, -1, NULL, s->errmsg);
    }
    if (t->npk > *pkcap) {
        knit_value_t *n = knit__realloc(*pkbuf, t->npk * sizeof *n);
        if (!n)
            return KNIT_ENOMEM;
        *pkbuf = n;
        *pkcap = t->npk;
    }
    if (decode_pk(pk, pklen, t->npk, *pkbuf) != 0)
        return skip_cell(C, ns, st, t, ci, NULL, "the stored key does not decode");
    if (sqlite3_column_bytes(st, 6) != 16)
        return skip_cell(C, ns, st, t, ci, *pkbuf, "the stored site id is not 16 bytes");
    memcpy(sid.b, site, 16);
    memset(&c, 0, sizeof c);
    c.ns = ns_idx;
    c.table = t->idx;
    c.col = (uint32_t)ci;
    c.pk = *pkbuf;
    c.cl = col_u64(st, 4);
    c.hlc = col_u64(st, 5);
    if (kind == KIND_LIVE) {
        c.value.type = KNIT_NULL;
    } else if (kind == KIND_LWW) {
        size_t used;
        if (!val || knit_value_decode(val, vlen, &c.value, &used) != 0 || used != vlen)
            return skip_cell(C, ns, st, t, ci, *pkbuf, "the stored value does not decode");
    } else {
        knit_sset_t x;
        size_t nwire = 0;
        if (!val)
            return skip_cell(C, ns, st, t, ci, *pkbuf, "the stored OR-set state is empty");
        if ((rc = knit__sset_decode(&x, val, vlen)) != 0) {
            if (rc != KNIT_ECORRUPT)
                return rc;
            return skip_cell(C, ns, st, t, ci, *pkbuf, "the stored OR-set state does not decode");
        }
        rc = knit__sset_to_batch(&x, C->b, &wire, &nwire);
        knit__sset_free(&x);
        if (rc)
            return rc;
        c.value.type = KNIT_BLOB;
        c.value.u.b.p = wire;
        c.value.u.b.n = nwire;
    }
    if ((rc = knit_batch_site(C->b, &sid, &c.site)) != 0) {
        knit__free(wire);
        return rc;
    }
    /* What an older relay stored without this check, or what was planted in
    ** the file, must not reach replicas that cannot apply it. */
    if ((rc = knit_change_check(C->b, &c, why, sizeof why)) != 0) {
        knit__free(wire);
        return rc == KNIT_ENOMEM ? rc : skip_cell(C, ns, st, t, ci, *pkbuf, why);
    }
    rc = knit_batch_add(C->b, &c);
    knit__free(wire);
    return rc;
}

int knit_relay_store_catch_up(knit_relay_store_t *s, const char *ns, uint64_t after,
                              size_t max_changes, knit_batch_t **out, uint64_t *reached,
                              int *more) /* see relay_store.h */
{
    ctabs_t C;
    sqlite3_stmt *st;
    knit_value_t *pkbuf = NULL;
    uint32_t pkcap = 0, ns_idx;
    uint64_t cur = 0, unit = 0, prev = 0;
    size_t n = 0, unit_first = 0;
    int own_txn = 0, rc;

    *out = NULL;
    *reached = 0;
    *more = 0;
    memset(&C, 0, sizeof C);
    C.s = s;
    if ((rc = knit_batch_new(&C.b)) != 0)
        return rc;
    if ((rc = knit_batch_ns(C.b, ns, &ns_idx)) != 0)
        goto fail;
    /* One read transaction: the sequence and the cells come from one
    ** snapshot (inside a group, the group's own view is used). */
    if (!s->in_group) {
        if ((rc = exec(s, "BEGIN")) != 0)
            goto fail;
        own_txn = 1;
    }
    if ((rc = ns_lookup(s, ns, 0, &C.nsid, &cur)) != 0)
        goto fail;
    if (C.nsid == 0)
        goto done;
    if ((rc = stmt(s, S_CATCH, &st)) != 0)
        goto fail;
    sqlite3_bind_int64(st, 1, C.nsid);
    bind_u64(st, 2, after);
    while ((rc = step(s, st)) == 1) {
        uint64_t seq = col_u64(st, 8);
        if (seq != unit) {
            if (max_changes && n >= max_changes) {
                *more = 1;
                break;
            }
            if ((rc = knit_batch_begin(C.b, seq)) != 0)
                break;
            prev = unit;
            unit = seq;
            unit_first = C.b->nchanges;
        }
        /* A damaged cell is skipped and reported, never the end of the
        ** catch-up (design note 8); it still counts toward the page. */
        if ((rc = catch_row(&C, ns, st, ns_idx, &pkbuf, &pkcap)) < 0)
            break;
        rc = 1;
        n++;
        /* At most max_changes a page: a unit that takes it over waits for
        ** the next page, unless it is the page's first (never split). */
        if (max_changes && n > max_changes && prev) {
            C.b->nchanges = unit_first;
            C.b->ntxns--;
            unit = prev;
            *more = 1;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc < 0)
        goto fail;
done:
    if (own_txn)
        exec(s, "COMMIT");
    ctabs_free(&C);
    knit__free(pkbuf);
    *reached = *more ? unit : cur;
    *out = C.b;
    return 0;
fail:
    if (own_txn)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    ctabs_free(&C);
    knit__free(pkbuf);
    knit_batch_free(C.b);
    *more = 0;
    return rc;
}

/* Keeps the cell at st's current row for refused change ch of b: every
** cell of the row when its liveness is refused (whole), else only the
** refused column's. */
static int refused_cell(ctabs_t *C, sqlite3_stmt *st, const knit_batch_table_t *bt,
                        const knit_change_t *ch, int whole)
{
    ctab_t *t = NULL;
    int64_t ci = -1;
    int rc = cell_names(C, st, &t, &ci);
    if (rc)
        return rc == KNIT_ECORRUPT ? 0 : rc; /* a damaged cell is no state to send */
    if (whole)
        return 1;
    if (ci == 0 || ch->col == 0 || ch->col > bt->ncols)
        return 0;
    return strcmp(t->cols[ci - 1], bt->cols[ch->col - 1]) == 0;
}

int knit_relay_store_cells(knit_relay_store_t *s, const char *ns, const knit_batch_t *b,
                           const size_t *changes, size_t n,
                           knit_batch_t **out) /* see relay_store.h */
{
    ctabs_t C;
    sqlite3_stmt *qt = NULL, *qc = NULL;
    knit_value_t *pkbuf = NULL;
    uint32_t pkcap = 0, ns_idx;
    uint64_t cur = 0;
    uint8_t *key = NULL;
    int own_txn = 0, rc;

    *out = NULL;
    memset(&C, 0, sizeof C);
    C.s = s;
    if ((rc = knit_batch_new(&C.b)) != 0)
        return rc;
    if ((rc = knit_batch_ns(C.b, ns, &ns_idx)) != 0)
        goto fail;
    if (!s->in_group) {
        if ((rc = exec(s, "BEGIN")) != 0)
            goto fail;
        own_txn = 1;
    }
    if ((rc = ns_lookup(s, ns, 0, &C.nsid, &cur)) != 0)
        goto fail;
    if (C.nsid == 0)
        goto done;
    if ((rc = knit_batch_begin(C.b, cur ? cur : 1)) != 0)
        goto fail;
    if (sqlite3_prepare_v2(s->db, "SELECT id FROM tbl WHERE ns = ?1 AND name = ?2", -1, &qt,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db,
                           "SELECT tid, pk, cid, kind, cl, hlc, site, value, seq FROM cell"
                           " WHERE ns = ?1 AND tid = ?2 AND pk = ?3 ORDER BY cid",
                           -1, &qc, NULL) != SQLITE_OK) {
        rc = set_err(s, KNIT_EDB, "reading refused cells: %s", sqlite3_errmsg(s->db));
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if (changes[i] >= b->nchanges)
            continue;
        const knit_change_t *ch = &b->changes[changes[i]];
        const knit_batch_table_t *bt = &b->tables[ch->table];
        int whole = 0, seen = 0;
        /* One reason per row is enough when its liveness is refused. */
        for (size_t j = 0; j < n; j++) {
            if (changes[j] >= b->nchanges)
                continue;
            const knit_change_t *o = &b->changes[changes[j]];
            int same = o->table == ch->table;
            for (uint32_t k = 0; same && k < bt->npk; k++)
                same = knit_value_cmp(&o->pk[k], &ch->pk[k]) == 0;
            if (same && o->col == 0)
                whole = 1;
            if (same && j < i && (o->col == 0 || whole))
                seen = 1;
        }
        if (seen)
            continue;
        size_t len = 0;
        for (uint32_t k = 0; k < bt->npk; k++)
            len += knit_value_encoded_size(&ch->pk[k]);
        knit__free(key);
        if (!(key = knit__malloc(len + 1))) {
            rc = KNIT_ENOMEM;
            goto fail;
        }
        len = 0;
        for (uint32_t k = 0; k < bt->npk; k++)
            len += knit_value_encode(&ch->pk[k], key + len);
        sqlite3_bind_int64(qt, 1, C.nsid);
        sqlite3_bind_text(qt, 2, bt->name, -1, SQLITE_STATIC);
        rc = sqlite3_step(qt);
        int64_t tid = rc == SQLITE_ROW ? sqlite3_column_int64(qt, 0) : 0;
        sqlite3_reset(qt);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            rc = set_err(s, KNIT_EDB, "reading refused cells: %s", sqlite3_errmsg(s->db));
            goto fail;
        }
        if (!tid)
            continue; /* the relay holds nothing of that table */
        sqlite3_bind_int64(qc, 1, C.nsid);
        sqlite3_bind_int64(qc, 2, tid);
        sqlite3_bind_blob(qc, 3, key, (int)len, SQLITE_STATIC);
        while ((rc = sqlite3_step(qc)) == SQLITE_ROW) {
            if ((rc = refused_cell(&C, qc, bt, ch, whole)) < 0)
                break;
            if (rc == 1 && (rc = catch_row(&C, ns, qc, ns_idx, &pkbuf, &pkcap)) < 0)
                break;
        }
        sqlite3_reset(qc);
        if (rc < 0)
            goto fail;
        if (rc != SQLITE_DONE) {
            rc = set_err(s, KNIT_EDB, "reading refused cells: %s", sqlite3_errmsg(s->db));
            goto fail;
        }
    }
done:
    if (own_txn)
        exec(s, "COMMIT");
    sqlite3_finalize(qt);
    sqlite3_finalize(qc);
    ctabs_free(&C);
    knit__free(pkbuf);
    knit__free(key);
    *out = C.b;
    return 0;
fail:
    if (own_txn)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_finalize(qt);
    sqlite3_finalize(qc);
    ctabs_free(&C);
    knit__free(pkbuf);
    knit__free(key);
    knit_batch_free(C.b);
    return rc;
}

int knit_relay_store_digest(knit_relay_store_t *s, const char *ns,
                            knit_digest_t *out) /* see relay_store.h */
{
    ctabs_t C;
    sqlite3_stmt *st;
    uint64_t seq, rowcl = 0;
    int64_t curtid = 0;  /* current row: its table id (0 = none yet) */
    uint8_t *cur = NULL; /* ... and its key bytes */
    size_t curlen = 0, curcap = 0;
    int own_txn = 0, live = 0, rc;

    knit_digest_zero(out);
    memset(&C, 0, sizeof C);
    C.s = s;
    if (!s->in_group) {
        if ((rc = exec(s, "BEGIN")) != 0)
            return rc;
        own_txn = 1;
    }
    if ((rc = ns_lookup(s, ns, 0, &C.nsid, &seq)) != 0 || C.nsid == 0)
        goto out;
    if ((rc = stmt(s, S_DIGEST, &st)) != 0)
        goto out;
    sqlite3_bind_int64(st, 1, C.nsid);
    while ((rc = step(s, st)) == 1) {
        int64_t tid = sqlite3_column_int64(st, 0);
        const uint8_t *pk = sqlite3_column_blob(st, 1);
        size_t pklen = (size_t)sqlite3_column_bytes(st, 1);
        int kind = sqlite3_column_int(st, 3);
        const uint8_t *val = sqlite3_column_blob(st, 7);
        size_t vlen = (size_t)sqlite3_column_bytes(st, 7);
        knit_cell_t cell;
        ctab_t *t;
        int64_t ci;
        uint8_t h[32];

        if (sqlite3_column_bytes(st, 6) != 16) {
            rc = set_err(s, KNIT_ECORRUPT, "malformed cell row");
            break;
        }
        if ((rc = cell_names(&C, st, &t, &ci)) != 0)
            break;
        /* Rows arrive in key order, each starting with its liveness cell
        ** (column id 0 sorts first, design note 7); columns of a row without
        ** one, of a deleted row or of another life do not count.  The
        ** digest is a sum, so the order of rows does not matter. */
        int same = tid == curtid && curlen == pklen && (pklen == 0 || memcmp(cur, pk, pklen) == 0);
        if (!same) {
            if (ensure_buf(&cur, &curcap, pklen ? pklen : 1)) {
                rc = KNIT_ENOMEM;
                break;
            }
            if (pklen)
                memcpy(cur, pk, pklen);
            curtid = tid;
            curlen = pklen;
            live = 0;
            rowcl = 0;
        }
        memset(&cell, 0, sizeof cell);
        cell.ns = ns;
        cell.table = t->name;
        cell.pk = pk;
        cell.pk_len = pklen;
        cell.column = ci ? t->cols[ci - 1] : "";
        cell.cl = col_u64(st, 4);
        if (kind == KIND_LIVE) {
            static const uint8_t null_enc = 0x00;
            rowcl = cell.cl;
            live = knit_cl_live(rowcl);
            cell.val = &null_enc;
            cell.val_len = 1;
            cell.hlc = col_u64(st, 5);
            memcpy(cell.site.b, sqlite3_column_blob(st, 6), 16);
        } else if (!same || !live || cell.cl != rowcl) {
            continue;
        } else if (kind == KIND_LWW) {
            cell.val = val;
            cell.val_len = vlen;
            cell.hlc = col_u64(st, 5);
            memcpy(cell.site.b, sqlite3_column_blob(st, 6), 16);
        } else {
            /* The stored form is knit_orset_canonical()'s (see the top of
            ** this file): hashed as it is. */
            const uint8_t *sites, *body;
            size_t nsites, nbody;
            if (!val || knit__sset_split(val, vlen, &sites, &nsites, &body, &nbody) != 0) {
                rc = set_err(s, KNIT_ECORRUPT, "bad stored OR-set in %s.%s", t->name, cell.column);
                break;
            }
            cell.val = val;
            cell.val_len = vlen;
        }
        knit_cell_hash(&cell, h);
        knit_digest_add(out, h);
    }
    sqlite3_reset(st);
out:
    if (own_txn)
        exec(s, "COMMIT");
    ctabs_free(&C);
    knit__free(cur);
    if (rc < 0)
        knit_digest_zero(out);
    return rc < 0 ? rc : 0;
}

int knit_relay_store_list(knit_relay_store_t *s,
                          int (*fn)(void *data, const knit_relay_ns_info_t *ns),
                          void *data) /* see relay_store.h */
{
    sqlite3_stmt *st;
    int rc, r = 0;
    if ((rc = stmt(s, S_LIST, &st)) != 0)
        return rc;
    while ((rc = step(s, st)) == 1) {
        knit_relay_ns_info_t info;
        const char *name = (const char *)sqlite3_column_text(st, 0);
        info.name = name ? name : "";
        info.seq = col_u64(st, 1);
        info.rows = col_u64(st, 2);
        info.cells = col_u64(st, 3);
        if ((r = fn(data, &info)) != 0)
            break;
    }
    sqlite3_reset(st);
    return rc < 0 ? rc : r;
}

int knit_relay_store_busiest(knit_relay_store_t *s, size_t limit,
                             int (*fn)(void *data, const knit_relay_ns_info_t *ns), void *data,
                             uint64_t *total) /* see relay_store.h */
{
    sqlite3_stmt *st;
    int rc, r = 0;
    *total = 0;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT name, seq, (SELECT count(*) FROM ns) FROM ns"
                            " ORDER BY seq DESC, name LIMIT ?1",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)limit);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        knit_relay_ns_info_t info;
        const char *name = (const char *)sqlite3_column_text(st, 0);
        memset(&info, 0, sizeof info);
        info.name = name ? name : "";
        info.seq = col_u64(st, 1);
        *total = col_u64(st, 2);
        if ((r = fn(data, &info)) != 0)
            break;
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(s, rc);
    sqlite3_finalize(st);
    return rc < 0 ? rc : r;
}

/* ---------------------------------------------------------------------- */
/* Erasure and the relay's site id                                          */

static int claims_forget(knit_relay_store_t *s, const char *ns);
static int tomb_put(knit_relay_store_t *s, const char *ns);
static int ident_forget(knit_relay_store_t *s, const char *ns);

/* The devices recorded for principal ns (design note 11). */
static int erase_devices(knit_relay_store_t *s, const char *ns)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, "DELETE FROM device WHERE principal = ?1", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc);
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, sqlite3_errcode(s->db));
    sqlite3_finalize(st);
    return rc;
}

int knit_relay_store_erase(knit_relay_store_t *s, const char *ns) /* see relay_store.h */
{
    static const int steps[] = {S_ERASE_CELLS, S_ERASE_COLS, S_ERASE_TBLS, S_ERASE_NS};
    sqlite3_stmt *st;
    int64_t id;
    uint64_t seq;
    int rc;
    if (s->readonly)
        return set_err(s, KNIT_EREADONLY, "store opened read-only");
    if (s->in_group)
        return set_err(s, KNIT_EINVAL, "erase inside a group");
    /* Design note 9: the erased bytes are overwritten, not only unlinked. */
    if ((rc = exec(s, "PRAGMA secure_delete = ON")) != 0)
        return rc;
    if ((rc = exec(s, "BEGIN IMMEDIATE")) != 0) {
        exec(s, "PRAGMA secure_delete = FAST");
        return rc;
    }
    rc = ns_lookup(s, ns, 0, &id, &seq);
    if (rc == 0 && id == 0)
        rc = set_err(s, KNIT_ENOTFOUND, "no namespace %s", ns);
    for (size_t i = 0; rc == 0 && i < sizeof steps / sizeof steps[0]; i++) {
        if ((rc = stmt(s, steps[i], &st)) != 0)
            break;
        sqlite3_bind_int64(st, 1, id);
        rc = step(s, st);
        sqlite3_reset(st);
        if (rc > 0)
            rc = 0;
    }
    if (rc == 0)
        rc = claims_forget(s, ns);
    if (rc == 0 && s->version >= 3)
        rc = erase_devices(s, ns);
    if (rc == 0 && (rc = exec(s, "COMMIT")) == 0) {
        /* The WAL still holds the frames that wrote the erased cells: copy
        ** back and truncate it, so the bytes are gone from every file. */
        int busy = 0;
        sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, &busy);
    } else if (rc != 0) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    }
    exec(s, "PRAGMA secure_delete = FAST");
    return rc;
}

/* Collects, for knit_relay_store_erase_account, the namespaces claimed into one. */
typedef struct claimed_s {
    char **names;
    size_t n;
} claimed_t;

int knit_relay_store_erase_account(knit_relay_store_t *s, const char *ns,
                                   size_t *erased) /* see relay_store.h */
{
    char into[CLAIM_KEY_MAX];
    claimed_t c = {NULL, 0};
    sqlite3_stmt *st;
    int rc;
    *erased = 0;
    if (snprintf(into, sizeof into, "\x1f%s", ns) >= (int)sizeof into)
        return set_err(s, KNIT_EINVAL, "namespace name too long");
    if (s->readonly)
        return set_err(s, KNIT_EREADONLY, "store opened read-only");
    /* The tombstone first (design note 12): from now on the account's
    ** tokens are refused, so no session writes it again while it goes. */
    if ((rc = tomb_put(s, ns)) != 0 || (rc = ident_forget(s, ns)) != 0)
        return rc;
    /* The anonymous namespaces this account claimed: "claim" US from US ns. */
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT substr(key, 7, length(key) - 6 - length(?1)) FROM meta"
                            " WHERE substr(key, 1, 6) = 'claim' || char(31)"
                            " AND substr(key, -length(?1)) = ?1 AND length(key) - length(?1) > 6",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, into, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            char **g = knit__realloc(c.names, (c.n + 1) * sizeof *g);
            const char *name = (const char *)sqlite3_column_text(st, 0);
            if (!g || !(g[c.n] = knit__strdup(name ? name : ""))) {
                if (g)
                    c.names = g;
                rc = KNIT_ENOMEM;
                break;
            }
            c.names = g;
            c.n++;
        }
        rc = rc == SQLITE_DONE ? 0 : rc == KNIT_ENOMEM ? rc : db_err(s, rc);
        sqlite3_finalize(st);
    } else {
        rc = 0; /* no meta table: nothing was ever claimed */
    }
    for (size_t i = 0; rc == 0 && i < c.n; i++) {
        int r = knit_relay_store_erase(s, c.names[i]);
        if (r == 0)
            (*erased)++;
        else if (r != KNIT_ENOTFOUND)
            rc = r;
    }
    if (rc == 0) {
        int r = knit_relay_store_erase(s, ns);
        if (r == 0)
            (*erased)++;
        else if (r != KNIT_ENOTFOUND)
            rc = r;
    }
    for (size_t i = 0; i < c.n; i++)
        knit__free(c.names[i]);
    knit__free(c.names);
    if (rc == 0 && *erased == 0)
        rc = set_err(s, KNIT_ENOTFOUND, "no namespace %s", ns);
    return rc;
}

/* meta is made on first use (design note 10). */
#define META_TABLE                                                                                 \
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"

/* A claim's key in meta: "claim" US from US to (US = 0x1f, which no
** namespace name holds). */
static int claim_key(char *buf, size_t n, const char *from, const char *to)
{
    int k = snprintf(buf, n, "claim\x1f%s\x1f%s", from, to);
    return k > 0 && (size_t)k < n ? k : -1;
}

int knit_relay_store_claim_get(knit_relay_store_t *s, const char *from, const char *to,
                               uint64_t *upto) /* see relay_store.h */
{
    char key[CLAIM_KEY_MAX];
    sqlite3_stmt *st;
    int rc, k = claim_key(key, sizeof key, from, to);
    *upto = 0;
    if (k < 0)
        return set_err(s, KNIT_EINVAL, "namespace name too long");
    if (sqlite3_prepare_v2(s->db, SQL[S_META_GET], -1, &st, NULL) != SQLITE_OK)
        return 0; /* no meta table yet: never claimed */
    sqlite3_bind_text(st, 1, key, k, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *upto = (uint64_t)sqlite3_column_int64(st, 0);
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(s, rc);
    sqlite3_finalize(st);
    return rc;
}

int knit_relay_store_claim_put(knit_relay_store_t *s, const char *from, const char *to,
                               uint64_t upto) /* see relay_store.h */
{
    char key[CLAIM_KEY_MAX];
    sqlite3_stmt *st;
    int rc, k = claim_key(key, sizeof key, from, to);
    if (k < 0)
        return set_err(s, KNIT_EINVAL, "namespace name too long");
    if ((rc = exec(s, META_TABLE)) != 0)
        return rc;
    rc = sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)", -1,
                            &st, NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc);
    sqlite3_bind_text(st, 1, key, k, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)upto);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, sqlite3_errcode(s->db));
    sqlite3_finalize(st);
    return rc;
}

/* meta's u64 under key (0 and *found 0 when absent, or no meta yet). */
static int meta_u64(knit_relay_store_t *s, const char *key, uint64_t *v, int *found)
{
    sqlite3_stmt *st;
    int rc;
    *v = 0;
    *found = 0;
    if (sqlite3_prepare_v2(s->db, SQL[S_META_GET], -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *v = (uint64_t)sqlite3_column_int64(st, 0);
        *found = 1;
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(s, rc);
    sqlite3_finalize(st);
    return rc;
}

static int meta_put_u64(knit_relay_store_t *s, const char *key, uint64_t v)
{
    sqlite3_stmt *st;
    int rc;
    if ((rc = exec(s, META_TABLE)) != 0)
        return rc;
    rc = sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)", -1,
                            &st, NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)v);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, sqlite3_errcode(s->db));
    sqlite3_finalize(st);
    return rc;
}

int knit_relay_store_webhook_seen(knit_relay_store_t *s, const char *id,
                                  int *seen) /* see relay_store.h */
{
    char key[CLAIM_KEY_MAX];
    uint64_t v;
    if (snprintf(key, sizeof key, "webhook\x1f%s", id) >= (int)sizeof key)
        return set_err(s, KNIT_EINVAL, "webhook id too long");
    return meta_u64(s, key, &v, seen);
}

int knit_relay_store_webhook_record(knit_relay_store_t *s, const char *id, const char *user,
                                    uint64_t updated_ms, int *stale) /* see relay_store.h */
{
    char key[CLAIM_KEY_MAX], ukey[CLAIM_KEY_MAX];
    uint64_t last = 0;
    int found = 0, rc;
    *stale = 0;
    if (snprintf(key, sizeof key, "webhook\x1f%s", id) >= (int)sizeof key ||
        (user && snprintf(ukey, sizeof ukey, "user_updated\x1f%s", user) >= (int)sizeof ukey))
        return set_err(s, KNIT_EINVAL, "webhook id or user too long");
    if (!s->in_group && (rc = exec(s, "BEGIN IMMEDIATE")) != 0)
        return rc;
    if (user && updated_ms && (rc = meta_u64(s, ukey, &last, &found)) == 0) {
        if (found && last > updated_ms)
            *stale = 1;
        else
            rc = meta_put_u64(s, ukey, updated_ms);
    }
    if (rc == 0)
        rc = meta_put_u64(s, key, updated_ms);
    if (s->in_group)
        return rc; /* the caller's group commits or rolls it back */
    if (rc == 0)
        return exec(s, "COMMIT");
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Seals and tombstones (design note 12)                                    */

/* meta's text under key into buf[0..n) ("" and 0 when absent). */
static int meta_text(knit_relay_store_t *s, const char *key, char *buf, size_t n, int *found)
{
    sqlite3_stmt *st;
    int rc;
    buf[0] = '\0';
    *found = 0;
    if (sqlite3_prepare_v2(s->db, SQL[S_META_GET], -1, &st, NULL) != SQLITE_OK)
        return 0; /* no meta table yet */
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        snprintf(buf, n, "%s", v ? v : "");
        *found = 1;
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(s, rc);
    sqlite3_finalize(st);
    return rc;
}

/* Claims recorded from anon (before seals existed, a claim was the only
** trace): *mine when one is into account, *others when one is into
** another namespace. */
static int claims_from(knit_relay_store_t *s, const char *anon, const char *account, int *mine,
                       int *others)
{
    char from[CLAIM_KEY_MAX], key[CLAIM_KEY_MAX];
    sqlite3_stmt *st;
    int rc;
    *mine = *others = 0;
    if (snprintf(from, sizeof from, "claim\x1f%s\x1f", anon) >= (int)sizeof from ||
        (account && claim_key(key, sizeof key, anon, account) < 0))
        return set_err(s, KNIT_EINVAL, "namespace name too long");
    if (sqlite3_prepare_v2(s->db, "SELECT key FROM meta WHERE substr(key, 1, length(?1)) = ?1", -1,
                           &st, NULL) != SQLITE_OK)
        return 0; /* no meta table yet */
    sqlite3_bind_text(st, 1, from, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        if (account && k && strcmp(k, key) == 0)
            *mine = 1;
        else
            *others = 1;
    }
    rc = rc == SQLITE_DONE ? 0 : db_err(s, rc);
    sqlite3_finalize(st);
    return rc;
}

int knit_relay_store_seal(knit_relay_store_t *s, const char *anon,
                          const char *account) /* see relay_store.h */
{
    char key[CLAIM_KEY_MAX], owner[CLAIM_KEY_MAX];
    sqlite3_stmt *st;
    int found, mine, others, rc;
    if (snprintf(key, sizeof key, "seal\x1f%s", anon) >= (int)sizeof key)
        return set_err(s, KNIT_EINVAL, "namespace name too long");
    if ((rc = meta_text(s, key, owner, sizeof owner, &found)) != 0)
        return rc;
    if (found)
        return strcmp(owner, account) == 0
                   ? 0
                   : set_err(s, KNIT_EDENIED, "%s is sealed to another account", anon);
    if ((rc = claims_from(s, anon, account, &mine, &others)) != 0)
        return rc;
    if (others && !mine) /* claimed by another account before seals were kept */
        return set_err(s, KNIT_EDENIED, "%s was claimed by another account", anon);
    if ((rc = exec(s, META_TABLE)) != 0)
        return rc;
    rc = sqlite3_prepare_v2(s->db, SQL[S_META_PUT], -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, account, -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, sqlite3_errcode(s->db));
    sqlite3_finalize(st);
    return rc;
}

int knit_relay_store_sealed(knit_relay_store_t *s, const char *anon,
                            int *sealed) /* see relay_store.h */
{
    char key[CLAIM_KEY_MAX], owner[CLAIM_KEY_MAX];
    int found, mine, others, rc;
    *sealed = 0;
    if (snprintf(key, sizeof key, "seal\x1f%s", anon) >= (int)sizeof key)
        return set_err(s, KNIT_EINVAL, "namespace name too long");
    if ((rc = meta_text(s, key, owner, sizeof owner, &found)) != 0)
        return rc;
    if (!found && (rc = claims_from(s, anon, NULL, &mine, &others)) != 0)
        return rc;
    *sealed = found || others;
    return 0;
}

/* The tombstone of an erased account: "erased" US ns. */
static int tomb_key(knit_relay_store_t *s, const char *ns, char *key, size_t n)
{
    if (snprintf(key, n, "erased\x1f%s", ns) >= (int)n)
        return set_err(s, KNIT_EINVAL, "namespace name too long");
    return 0;
}

/* Writes the tombstone of ns, durably (its own transaction). */
static int tomb_put(knit_relay_store_t *s, const char *ns)
{
    char key[CLAIM_KEY_MAX];
    sqlite3_stmt *st;
    int rc;
    if ((rc = tomb_key(s, ns, key, sizeof key)) != 0 || (rc = exec(s, META_TABLE)) != 0)
        return rc;
    rc = sqlite3_prepare_v2(s->db,
                            "INSERT OR REPLACE INTO meta(key, value)"
                            " VALUES(?1, CAST(strftime('%s', 'now') AS INTEGER) * 1000)",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, sqlite3_errcode(s->db));
    sqlite3_finalize(st);
    return rc;
}

int knit_relay_store_erased(knit_relay_store_t *s, const char *ns,
                            int *erased) /* see relay_store.h */
{
    char key[CLAIM_KEY_MAX];
    uint64_t v;
    int rc;
    *erased = 0;
    if ((rc = tomb_key(s, ns, key, sizeof key)) != 0)
        return rc;
    return meta_u64(s, key, &v, erased);
}

int knit_relay_store_unerase(knit_relay_store_t *s, const char *ns,
                             int *cleared) /* see relay_store.h */
{
    char key[CLAIM_KEY_MAX];
    sqlite3_stmt *st;
    int rc;
    *cleared = 0;
    if (s->readonly)
        return set_err(s, KNIT_EREADONLY, "store opened read-only");
    if ((rc = tomb_key(s, ns, key, sizeof key)) != 0)
        return rc;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM meta WHERE key = ?1", -1, &st, NULL) != SQLITE_OK)
        return 0; /* no meta table: nothing was erased */
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, sqlite3_errcode(s->db));
    if (rc == 0)
        *cleared = sqlite3_changes(s->db) > 0;
    sqlite3_finalize(st);
    return rc;
}

/* Forgets every claim from or into ns (inside the erase's transaction). */
static int claims_forget(knit_relay_store_t *s, const char *ns)
{
    char from[CLAIM_KEY_MAX], into[CLAIM_KEY_MAX];
    sqlite3_stmt *st;
    int rc;
    if (snprintf(from, sizeof from, "claim\x1f%s\x1f", ns) >= (int)sizeof from)
        return 0; /* no claim names it (claim_key refuses such names) */
    snprintf(into, sizeof into, "\x1f%s", ns);
    if ((rc = exec(s, META_TABLE)) != 0)
        return rc;
    rc = sqlite3_prepare_v2(s->db,
                            "DELETE FROM meta WHERE substr(key, 1, 6) = 'claim' || char(31)"
                            " AND (substr(key, 1, length(?1)) = ?1"
                            "  OR (substr(key, -length(?2)) = ?2"
                            "      AND length(key) - length(?2) > 6))",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc);
    sqlite3_bind_text(st, 1, from, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, into, -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, sqlite3_errcode(s->db));
    sqlite3_finalize(st);
    return rc;
}

int knit_relay_store_site(knit_relay_store_t *s, knit_site_t *site) /* see relay_store.h */
{
    sqlite3_stmt *st;
    uint8_t made[sizeof site->b];
    int rc, have = 0;

    if (s->in_group)
        return set_err(s, KNIT_EINVAL, "site inside a group");
    /* meta may not exist yet (design note 10): a failed prepare is "none". */
    rc = sqlite3_prepare_v2(s->db, SQL[S_META_GET], -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, "site", -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == (int)sizeof site->b) {
            memcpy(site->b, sqlite3_column_blob(st, 0), sizeof site->b);
            have = 1;
        } else if (rc == SQLITE_ROW) {
            sqlite3_finalize(st);
            return set_err(s, KNIT_ECORRUPT, "the relay's site id is malformed");
        }
        sqlite3_finalize(st);
    }
    if (have)
        return 0;
    if (s->readonly)
        return set_err(s, KNIT_ENOTFOUND, "the store has no site id yet");
    if ((rc = exec(s, "BEGIN IMMEDIATE; " META_TABLE)) != 0) {
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (knit__random(made, sizeof made) != 0) {
        rc = set_err(s, KNIT_EIO, "the kernel gave no random bytes for the relay's site id");
    } else if ((rc = sqlite3_prepare_v2(s->db, SQL[S_META_PUT], -1, &st, NULL)) != SQLITE_OK) {
        rc = db_err(s, rc);
    } else {
        sqlite3_bind_text(st, 1, "site", -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, made, sizeof made, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, sqlite3_errcode(s->db));
        sqlite3_finalize(st);
    }
    if (rc == 0 && (rc = exec(s, "COMMIT")) == 0) {
        memcpy(site->b, made, sizeof site->b);
        return 0;
    }
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Anonymous credentials                                                    */

int knit_relay_store_anon_get(knit_relay_store_t *s, const char *id,
                              uint8_t salt[KNIT_RELAY_SALT_LEN],
                              uint8_t hash[KNIT_RELAY_HASH_LEN]) /* see relay_store.h */
{
    sqlite3_stmt *st;
    int rc;
    if ((rc = stmt(s, S_ANON_GET, &st)) != 0)
        return rc;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    rc = step(s, st);
    if (rc == 1) {
        if (sqlite3_column_bytes(st, 0) != KNIT_RELAY_SALT_LEN ||
            sqlite3_column_bytes(st, 1) != KNIT_RELAY_HASH_LEN) {
            sqlite3_reset(st);
            return set_err(s, KNIT_ECORRUPT, "anonymous credential %s is malformed", id);
        }
        memcpy(salt, sqlite3_column_blob(st, 0), KNIT_RELAY_SALT_LEN);
        memcpy(hash, sqlite3_column_blob(st, 1), KNIT_RELAY_HASH_LEN);
    }
    sqlite3_reset(st);
    return rc;
}

int knit_relay_store_anon_put(knit_relay_store_t *s, const char *id,
                              const uint8_t salt[KNIT_RELAY_SALT_LEN],
                              const uint8_t hash[KNIT_RELAY_HASH_LEN],
                              uint64_t now_ms) /* see relay_store.h */
{
    sqlite3_stmt *st;
    int rc;
    if (s->readonly)
        return set_err(s, KNIT_EREADONLY, "store opened read-only");
    if (s->in_group)
        return set_err(s, KNIT_EINVAL, "anon_put inside a group");
    if ((rc = stmt(s, S_ANON_PUT, &st)) != 0)
        return rc;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, salt, KNIT_RELAY_SALT_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, hash, KNIT_RELAY_HASH_LEN, SQLITE_STATIC);
    bind_u64(st, 4, now_ms);
    rc = step(s, st); /* autocommit: one durable transaction */
    sqlite3_reset(st);
    if (rc == KNIT_ECONSTRAINT)
        return set_err(s, KNIT_EEXISTS, "anonymous id %s is already registered", id);
    return rc < 0 ? rc : 0;
}

int knit_relay_store_list_anon(knit_relay_store_t *s,
                               int (*fn)(void *data, const char *id, uint64_t created_ms),
                               void *data) /* see relay_store.h */
{
    sqlite3_stmt *st;
    int rc, r = 0;
    if ((rc = stmt(s, S_ANON_LIST, &st)) != 0)
        return rc;
    while ((rc = step(s, st)) == 1) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if ((r = fn(data, id ? id : "", col_u64(st, 1))) != 0)
            break;
    }
    sqlite3_reset(st);
    return rc < 0 ? rc : r;
}

/* ---------------------------------------------------------------------- */
/* Devices and their schemas (design note 11)                               */

static int run1(knit_relay_store_t *s, sqlite3_stmt *st)
{
    int rc = step(s, st);
    sqlite3_reset(st);
    return rc < 0 ? rc : 0;
}

/* Stores the rows of schema sc under its fingerprint, once. */
static int put_schema(knit_relay_store_t *s, const knit_schema_t *sc, uint64_t now_ms)
{
    sqlite3_stmt *st;
    int rc;
    if ((rc = stmt(s, S_FP_PUT, &st)) != 0)
        return rc;
    sqlite3_bind_blob(st, 1, sc->fp, KNIT_SCHEMA_FP_LEN, SQLITE_STATIC);
    bind_u64(st, 2, now_ms);
    if ((rc = run1(s, st)) != 0 || sqlite3_changes(s->db) == 0)
        return rc; /* already known: its rows are there */
    for (size_t i = 0; i < sc->ntables; i++) {
        const knit_schema_table_t *t = &sc->tables[i];
        for (uint32_t c = 0; c < t->nkeys + t->ncols; c++) {
            int key = c < t->nkeys;
            if ((rc = stmt(s, S_FP_COL_PUT, &st)) != 0)
                return rc;
            sqlite3_bind_blob(st, 1, sc->fp, KNIT_SCHEMA_FP_LEN, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, t->name, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 3, c);
            sqlite3_bind_text(st, 4, key ? t->keys[c] : t->cols[c - t->nkeys].name, -1,
                              SQLITE_STATIC);
            sqlite3_bind_int(st, 5, key ? 0 : t->cols[c - t->nkeys].orset ? 2 : 1);
            if ((rc = run1(s, st)) != 0)
                return rc;
        }
    }
    return 0;
}

int knit_relay_store_device_seen(knit_relay_store_t *s, const char *principal,
                                 const knit_site_t *site, const knit_schema_t *schema,
                                 const char *agent, uint64_t now_ms) /* see relay_store.h */
{
    sqlite3_stmt *st;
    uint8_t old[KNIT_SCHEMA_FP_LEN];
    int rc, had = 0, oldlen = 0;
    const uint8_t *fp = schema ? schema->fp : (const uint8_t *)"";
    int fplen = schema ? KNIT_SCHEMA_FP_LEN : 0;

    if (!agent)
        agent = "";
    if (s->readonly)
        return set_err(s, KNIT_EREADONLY, "store opened read-only");
    if (s->in_group)
        return set_err(s, KNIT_EINVAL, "device_seen inside a group");
    if ((rc = stmt(s, S_DEV_GET, &st)) != 0)
        return rc;
    sqlite3_bind_text(st, 1, principal, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, site->b, sizeof site->b, SQLITE_STATIC);
    if ((rc = step(s, st)) == 1) {
        const char *a = (const char *)sqlite3_column_text(st, 1);
        oldlen = sqlite3_column_bytes(st, 0);
        if (oldlen == KNIT_SCHEMA_FP_LEN)
            memcpy(old, sqlite3_column_blob(st, 0), KNIT_SCHEMA_FP_LEN);
        else
            oldlen = 0;
        had = oldlen == fplen && (!fplen || memcmp(old, fp, KNIT_SCHEMA_FP_LEN) == 0) &&
              strcmp(a ? a : "", agent) == 0 && now_ms < col_u64(st, 2) + DEVICE_SEEN_MS &&
              now_ms >= col_u64(st, 2);
    }
    sqlite3_reset(st);
    if (rc < 0 || had)
        return rc < 0 ? rc : 0;
    if ((rc = exec(s, "BEGIN IMMEDIATE")) != 0)
        return rc;
    if (schema)
        rc = put_schema(s, schema, now_ms);
    if (!rc && !(rc = stmt(s, S_DEV_PUT, &st))) {
        sqlite3_bind_text(st, 1, principal, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, site->b, sizeof site->b, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, fp, fplen, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, agent, -1, SQLITE_STATIC);
        bind_u64(st, 5, now_ms);
        rc = run1(s, st);
    }
    /* The old schema goes once no device runs it. */
    if (!rc && oldlen && (oldlen != fplen || memcmp(old, fp, KNIT_SCHEMA_FP_LEN) != 0)) {
        static const int drop[] = {S_FP_DROP_COLS, S_FP_DROP};
        for (size_t i = 0; !rc && i < 2; i++) {
            if ((rc = stmt(s, drop[i], &st)) != 0)
                break;
            sqlite3_bind_blob(st, 1, old, KNIT_SCHEMA_FP_LEN, SQLITE_STATIC);
            rc = run1(s, st);
        }
    }
    if (rc == 0)
        return exec(s, "COMMIT");
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* What one listed fingerprint is read into; freed after the callback. */
typedef struct fp_read_s {
    knit_schema_table_t *tabs; /* tables (names, keys, cols owned) */
    size_t ntabs;              /* count */
    knit_relay_device_t *devs; /* devices (strings owned) */
    size_t ndevs;              /* count */
} fp_read_t;

void knit_relay_schema_tables_free(knit_schema_table_t *tabs, size_t ntabs) /* see relay_store.h */
{
    for (size_t i = 0; i < ntabs; i++) {
        knit_schema_table_t *t = &tabs[i];
        knit__free((char *)t->name);
        for (uint32_t k = 0; k < t->nkeys; k++)
            knit__free((char *)t->keys[k]);
        for (uint32_t c = 0; c < t->ncols; c++)
            knit__free((char *)t->cols[c].name);
        knit__free((void *)t->keys);
        knit__free((void *)t->cols);
    }
    knit__free(tabs);
}

static void fp_read_free(fp_read_t *f)
{
    knit_relay_schema_tables_free(f->tabs, f->ntabs);
    for (size_t i = 0; i < f->ndevs; i++) {
        knit__free((char *)f->devs[i].principal);
        knit__free((char *)f->devs[i].agent);
    }
    knit__free(f->devs);
    memset(f, 0, sizeof *f);
}

static const char *col_str(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t ? t : "";
}

int knit_relay_schema_add_col(knit_schema_table_t **tabs, size_t *ntabs, const char *tbl,
                              const char *name, int kind) /* see relay_store.h */
{
    knit_schema_table_t *t = *ntabs ? &(*tabs)[*ntabs - 1] : NULL;
    char *dup;
    if (!t || strcmp(t->name, tbl) != 0) {
        knit_schema_table_t *n = knit__realloc(*tabs, (*ntabs + 1) * sizeof *n);
        if (!n)
            return KNIT_ENOMEM;
        *tabs = n;
        t = &n[*ntabs];
        memset(t, 0, sizeof *t);
        if (!(t->name = knit__strdup(tbl)))
            return KNIT_ENOMEM;
        (*ntabs)++;
    }
    if (!(dup = knit__strdup(name)))
        return KNIT_ENOMEM;
    if (kind == 0) {
        const char **k = knit__realloc((void *)t->keys, (t->nkeys + 1) * sizeof *k);
        if (!k) {
            knit__free(dup);
            return KNIT_ENOMEM;
        }
        k[t->nkeys++] = dup;
        t->keys = k;
    } else {
        knit_schema_col_t *c = knit__realloc((void *)t->cols, (t->ncols + 1) * sizeof *c);
        if (!c) {
            knit__free(dup);
            return KNIT_ENOMEM;
        }
        c[t->ncols].name = dup;
        c[t->ncols].orset = kind == 2;
        t->ncols++;
        t->cols = c;
    }
    return 0;
}

/* Appends one column row (tbl, pos, name, kind) to f. */
static int fp_add_col(fp_read_t *f, sqlite3_stmt *st)
{
    return knit_relay_schema_add_col(&f->tabs, &f->ntabs, col_str(st, 0), col_str(st, 2),
                                     sqlite3_column_int(st, 3));
}

/* Reads the devices of fingerprint fp[0..n) into f. */
static int fp_devices(knit_relay_store_t *s, const void *fp, int n, fp_read_t *f)
{
    sqlite3_stmt *st;
    int rc;
    if ((rc = stmt(s, S_FP_DEVICES, &st)) != 0)
        return rc;
    sqlite3_bind_blob(st, 1, n ? fp : "", n, SQLITE_TRANSIENT);
    while ((rc = step(s, st)) == 1) {
        knit_relay_device_t *d = knit__realloc(f->devs, (f->ndevs + 1) * sizeof *d);
        if (!d) {
            rc = KNIT_ENOMEM;
            break;
        }
        f->devs = d;
        d = &f->devs[f->ndevs];
        memset(d, 0, sizeof *d);
        if (sqlite3_column_bytes(st, 1) == (int)sizeof d->site.b)
            memcpy(d->site.b, sqlite3_column_blob(st, 1), sizeof d->site.b);
        d->principal = knit__strdup(col_str(st, 0));
        d->agent = knit__strdup(col_str(st, 2));
        d->first_seen_ms = col_u64(st, 3);
        d->last_seen_ms = col_u64(st, 4);
        f->ndevs++;
        if (!d->principal || !d->agent) {
            rc = KNIT_ENOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    return rc < 0 ? rc : 0;
}

int knit_relay_store_list_schemas(knit_relay_store_t *s,
                                  int (*fn)(void *data, const knit_relay_schema_info_t *info),
                                  void *data) /* see relay_store.h */
{
    sqlite3_stmt *list, *st;
    fp_read_t f;
    int rc, r = 0, own_txn = 0;

    if (s->version < 3)
        return 0; /* a read-only schema 2 store: no devices recorded */
    memset(&f, 0, sizeof f);
    /* One snapshot for the whole listing. */
    if (sqlite3_get_autocommit(s->db)) {
        if ((rc = exec(s, "BEGIN")) != 0)
            return rc;
        own_txn = 1;
    }
    /* The listing statement steps while the others run: prepare it apart. */
    rc = sqlite3_prepare_v2(s->db, SQL[S_FP_LIST], -1, &list, NULL);
    if (rc != SQLITE_OK) {
        rc = db_err(s, rc);
        goto out;
    }
    rc = 0;
    for (;;) {
        knit_relay_schema_info_t info;
        knit_schema_t tmp;
        uint8_t fp[KNIT_SCHEMA_FP_LEN];
        int step_rc = step(s, list);
        if (step_rc <= 0) {
            rc = step_rc;
            break;
        }
        if (sqlite3_column_bytes(list, 0) != KNIT_SCHEMA_FP_LEN)
            continue; /* not ours: skip rather than misread */
        memcpy(fp, sqlite3_column_blob(list, 0), sizeof fp);
        memset(&info, 0, sizeof info);
        info.reported = 1;
        info.first_seen_ms = col_u64(list, 1);
        if ((rc = stmt(s, S_FP_COLS, &st)) != 0)
            break;
        sqlite3_bind_blob(st, 1, fp, sizeof fp, SQLITE_TRANSIENT);
        while ((rc = step(s, st)) == 1)
            if ((rc = fp_add_col(&f, st)) != 0)
                break;
        sqlite3_reset(st);
        if (rc < 0 || (rc = fp_devices(s, fp, sizeof fp, &f)) != 0)
            break;
        memset(&tmp, 0, sizeof tmp);
        tmp.tables = f.tabs;
        tmp.ntables = f.ntabs;
        memcpy(tmp.fp, fp, sizeof fp);
        info.schema = &tmp;
        info.devices = f.devs;
        info.ndevices = f.ndevs;
        r = f.ndevs ? fn(data, &info) : 0;
        fp_read_free(&f);
        if (r)
            break;
    }
    if (!rc && !r && (rc = fp_devices(s, NULL, 0, &f)) == 0 && f.ndevs) {
        knit_relay_schema_info_t info;
        memset(&info, 0, sizeof info);
        info.devices = f.devs;
        info.ndevices = f.ndevs;
        r = fn(data, &info);
    }
    fp_read_free(&f);
out:
    sqlite3_finalize(list);
    if (own_txn)
        exec(s, "COMMIT");
    return rc < 0 ? rc : r;
}

/* ---------------------------------------------------------------------- */
/* The identity index (design note 13)                                      */

int knit_relay_normalize_email(const char *in, char *out, size_t n) /* see relay_store.h */
{
    size_t a = 0, b;
    out[0] = '\0';
    if (!in)
        return 0;
    b = strlen(in);
    while (a < b && (in[a] == ' ' || in[a] == '\t' || in[a] == '\n' || in[a] == '\r'))
        a++;
    while (b > a &&
           (in[b - 1] == ' ' || in[b - 1] == '\t' || in[b - 1] == '\n' || in[b - 1] == '\r'))
        b--;
    if (b - a >= n)
        return KNIT_ETOOBIG;
    for (size_t i = a; i < b; i++) {
        char c = in[i];
        if ((unsigned char)c < 0x20)
            return KNIT_EINVAL;
        out[i - a] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    out[b - a] = '\0';
    return 0;
}

void knit_relay_ident_result_clear(knit_ident_result_t *r) /* see relay_store.h */
{
    if (!r)
        return;
    for (int f = 0; f < KNIT_PROFILE_NFIELDS; f++)
        knit__free(r->field[f]);
    memset(r, 0, sizeof *r);
}

/* Text of column i as an owned copy (NULL for SQL NULL); *rc on failure. */
static char *col_dup(sqlite3_stmt *st, int i, int *rc)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    char *d;
    if (!t)
        return NULL;
    if (!(d = knit__strdup(t)))
        *rc = KNIT_ENOMEM;
    return d;
}

/* The account of provider id `id`, or of normalized email `email`, into
** acc[0..n) ("" when none). */
static int ident_find(knit_relay_store_t *s, int which, const char *key, char *acc, size_t n)
{
    sqlite3_stmt *st;
    int rc;
    acc[0] = '\0';
    if (!key || !*key)
        return 0;
    if ((rc = stmt(s, which, &st)) != 0)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if ((rc = step(s, st)) == 1) {
        const char *a = (const char *)sqlite3_column_text(st, 0);
        snprintf(acc, n, "%s", a ? a : "");
        rc = 0;
    }
    sqlite3_reset(st);
    return rc;
}

/* Runs one bound statement to completion. */
static int run_done(knit_relay_store_t *s, sqlite3_stmt *st)
{
    int rc = step(s, st);
    sqlite3_reset(st);
    return rc > 0 ? 0 : rc;
}

static int tracks_q(knit_relay_store_t *s, const char *account, const char *table, int *is)
{
    sqlite3_stmt *st;
    int rc;
    *is = 0;
    if ((rc = stmt(s, S_TRACKS, &st)) != 0)
        return rc;
    sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, table, -1, SQLITE_STATIC);
    rc = step(s, st);
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    *is = rc == 1;
    return 0;
}

int knit_relay_store_tracks(knit_relay_store_t *s, const char *account, const char *table,
                            int *is) /* see relay_store.h */
{
    *is = 0;
    if (s->version < 4)
        return 0;
    return tracks_q(s, account, table, is);
}

/* Drops from b the changes of table `table`, in place (the batch's bytes
** live in its arena), and units left empty. */
static void drop_table(knit_batch_t *b, const char *table)
{
    size_t w = 0, wt = 0;
    for (size_t u = 0; u < b->ntxns; u++) {
        knit_txn_t t = b->txns[u];
        size_t first = w;
        for (size_t i = t.first; i < t.first + t.count; i++)
            if (strcmp(b->tables[b->changes[i].table].name, table) != 0)
                b->changes[w++] = b->changes[i];
        if (w > first) {
            b->txns[wt].version = t.version;
            b->txns[wt].first = first;
            b->txns[wt].count = w - first;
            wt++;
        }
    }
    b->nchanges = w;
    b->ntxns = wt;
}

/* Merges the cells of namespace from into to, inside the open group, by
** the claim's merge (catch-up pages applied as pushes: a CRDT union), but
** for knit_profile: the account keeps its own row.  *seq gets to's sequence
** after, 0 when nothing was merged. */
static int merge_into(knit_relay_store_t *s, const char *from, const char *to, uint64_t *seq)
{
    uint64_t after = 0;
    int more = 1, rc = 0;
    *seq = 0;
    while (more) {
        knit_batch_t *b = NULL;
        knit_relay_applied_t res;
        uint32_t to_idx;
        if ((rc = knit_relay_store_catch_up(s, from, after, 4096, &b, &after, &more)) != 0)
            return rc;
        drop_table(b, KNIT_PROFILE_TABLE);
        if (b->nchanges && (rc = knit_batch_ns(b, to, &to_idx)) == 0) {
            for (size_t i = 0; i < b->nchanges; i++)
                b->changes[i].ns = to_idx;
            if ((rc = knit_relay_store_apply(s, to, b, &res)) == 0) {
                if (res.last_seq)
                    *seq = res.last_seq;
                knit_batch_free(res.fanout);
            }
        }
        knit_batch_free(b);
        if (rc)
            return rc;
    }
    return 0;
}

/* The body of knit_relay_store_identify, inside a transaction. */
static int identify_in(knit_relay_store_t *s, const knit_ident_t *in, uint64_t now_ms,
                       knit_ident_result_t *out)
{
    char a[KNIT_IDENT_NS_MAX], b[KNIT_IDENT_NS_MAX];
    char *cur[KNIT_PROFILE_NFIELDS + 1] = {NULL}; /* fields, then external_id */
    const char *want[KNIT_PROFILE_NFIELDS + 1];
    uint64_t updated = 0;
    int profiled = 0, rc, tomb = 0, have_email = out->email[0] != '\0';
    sqlite3_stmt *st;

    if ((rc = ident_find(s, S_ID_GET, in->id, a, sizeof a)) != 0 ||
        (have_email && (rc = ident_find(s, S_IDENT_BY_EMAIL, out->email, b, sizeof b)) != 0))
        return rc;
    if (!have_email)
        b[0] = '\0';
    if (a[0] && b[0] && strcmp(a, b) != 0) {
        /* The id's account and the email's differ.  An account that has no
        ** email yet was made by a sign-in whose token carried none: it was
        ** provisional, and the email's account is the person's; the id (and
        ** any other of its ids) moves there.  Otherwise both are real
        ** accounts: the id's stays, and the email is not moved. */
        int a_has_email = 0;
        if ((rc = stmt(s, S_IDENT_GET, &st)) != 0)
            return rc;
        sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
        if ((rc = step(s, st)) == 1)
            a_has_email = sqlite3_column_type(st, 0) != SQLITE_NULL;
        sqlite3_reset(st);
        if (rc < 0)
            return rc;
        if (!a_has_email) {
            if ((rc = stmt(s, S_ID_MOVE, &st)) != 0)
                return rc;
            sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
            bind_u64(st, 3, now_ms);
            if ((rc = run_done(s, st)) != 0 || (rc = stmt(s, S_IDENT_DROP, &st)) != 0)
                return rc;
            sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
            if ((rc = run_done(s, st)) != 0)
                return rc;
            /* What was written in the provisional account comes along. */
            if ((rc = merge_into(s, a, b, &out->merged_seq)) != 0)
                return rc;
            snprintf(out->moved_from, sizeof out->moved_from, "%s", a);
            snprintf(out->account, sizeof out->account, "%s", b);
            out->action = KNIT_IDENT_RELINKED;
        } else {
            snprintf(out->account, sizeof out->account, "%s", a);
            out->action = KNIT_IDENT_UPDATED;
            out->email_conflict = 1;
            have_email = 0;
        }
    } else if (a[0]) {
        snprintf(out->account, sizeof out->account, "%s", a);
        out->action = KNIT_IDENT_UPDATED;
    } else if (b[0]) {
        if ((rc = stmt(s, S_ID_PUT, &st)) != 0)
            return rc;
        sqlite3_bind_text(st, 1, in->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
        bind_u64(st, 3, now_ms);
        if ((rc = run_done(s, st)) != 0)
            return rc;
        snprintf(out->account, sizeof out->account, "%s", b);
        out->action = KNIT_IDENT_RELINKED;
    } else {
        if (snprintf(out->account, sizeof out->account, "user:%s", in->id) >=
            (int)sizeof out->account)
            return set_err(s, KNIT_EINVAL, "provider id too long");
        /* An erased account is not made again by a sign-in or an event
        ** about it; the provider's user.created removes the tombstone. */
        if ((rc = knit_relay_store_erased(s, out->account, &tomb)) != 0)
            return rc;
        if (tomb) {
            out->erased = 1;
            return 0;
        }
        if ((rc = stmt(s, S_IDENT_INS, &st)) != 0)
            return rc;
        sqlite3_bind_text(st, 1, out->account, -1, SQLITE_STATIC);
        bind_u64(st, 2, now_ms);
        if ((rc = run_done(s, st)) != 0 || (rc = stmt(s, S_ID_PUT, &st)) != 0)
            return rc;
        sqlite3_bind_text(st, 1, in->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, out->account, -1, SQLITE_STATIC);
        bind_u64(st, 3, now_ms);
        if ((rc = run_done(s, st)) != 0)
            return rc;
        out->action = KNIT_IDENT_CREATED;
    }

    /* The account's stored values. */
    if ((rc = stmt(s, S_IDENT_GET, &st)) != 0)
        return rc;
    sqlite3_bind_text(st, 1, out->account, -1, SQLITE_STATIC);
    if ((rc = step(s, st)) == 1) {
        rc = 0;
        for (int f = 0; f <= KNIT_PROFILE_NFIELDS; f++)
            cur[f] = col_dup(st, f, &rc);
        updated = col_u64(st, 5);
        profiled = sqlite3_column_int(st, 6);
    } else if (rc == 0) {
        rc = set_err(s, KNIT_ECORRUPT, "identity index: %s has an id but no account row",
                     out->account);
    }
    sqlite3_reset(st);
    if (rc < 0)
        goto done;

    for (int f = 0; f < KNIT_PROFILE_NFIELDS; f++)
        want[f] = in->field[f];
    want[KNIT_PROFILE_EMAIL] = have_email ? out->email : NULL;
    want[KNIT_PROFILE_NFIELDS] = in->external_id;
    out->stale = in->updated_ms && in->updated_ms < updated;
    if (!out->stale) {
        for (int f = 0; f <= KNIT_PROFILE_NFIELDS; f++) {
            /* A sign-in fills only what no webhook set (design note 13). */
            int allowed = in->updated_ms > 0 || updated == 0 || !cur[f];
            if (!want[f] || !allowed || (cur[f] && strcmp(cur[f], want[f]) == 0))
                continue;
            knit__free(cur[f]);
            if (!(cur[f] = knit__strdup(want[f]))) {
                rc = KNIT_ENOMEM;
                goto done;
            }
            if (f < KNIT_PROFILE_NFIELDS)
                out->changed |= 1u << f;
        }
        if (in->updated_ms > updated)
            updated = in->updated_ms;
    }
    out->tracks[0] = in->tracks[0];
    out->tracks[1] = in->tracks[1];
    if ((!out->tracks[0] &&
         (rc = tracks_q(s, out->account, KNIT_PROFILE_TABLE, &out->tracks[0])) != 0) ||
        (!out->tracks[1] &&
         (rc = tracks_q(s, out->account, KNIT_ACTIVITY_TABLE, &out->tracks[1])) != 0))
        goto done;
    if (out->tracks[0] && !profiled) {
        /* The row was never written: all it has, and its liveness. */
        out->new_row = 1;
        profiled = 1;
        for (int f = 0; f < KNIT_PROFILE_NFIELDS; f++)
            if (cur[f])
                out->changed |= 1u << f;
    }
    if (!out->tracks[0])
        out->changed = 0; /* nothing to write: it is written in full once tracked */
    out->updated_ms = in->updated_ms ? in->updated_ms : now_ms;
    if ((rc = stmt(s, S_IDENT_PUT, &st)) != 0)
        goto done;
    sqlite3_bind_text(st, 1, out->account, -1, SQLITE_STATIC);
    for (int f = 0; f <= KNIT_PROFILE_NFIELDS; f++) {
        if (cur[f])
            sqlite3_bind_text(st, 2 + f, cur[f], -1, SQLITE_STATIC);
    }
    bind_u64(st, 7, updated);
    sqlite3_bind_int(st, 8, profiled);
    if ((rc = step(s, st)) == 0 && sqlite3_changes(s->db) != 1)
        rc = set_err(s, KNIT_ECORRUPT, "identity index: no account row %s", out->account);
    sqlite3_reset(st);
    if (rc < 0)
        goto done;
    for (int f = 0; f < KNIT_PROFILE_NFIELDS; f++) {
        out->field[f] = cur[f];
        cur[f] = NULL;
    }
done:
    for (int f = 0; f <= KNIT_PROFILE_NFIELDS; f++)
        knit__free(cur[f]);
    return rc < 0 ? rc : 0;
}

int knit_relay_store_identify(knit_relay_store_t *s, const knit_ident_t *in, uint64_t now_ms,
                              knit_ident_result_t *out) /* see relay_store.h */
{
    int rc, own = !s->in_group;
    memset(out, 0, sizeof *out);
    if (!in->id || !*in->id || strlen(in->id) > 128)
        return set_err(s, KNIT_EINVAL, "identity without an acceptable provider id");
    if (s->readonly) {
        /* Resolved, not recorded: nothing can be written. */
        if ((rc = knit_relay_store_ident_get(s, in->id, in->email, out->account)) != 0)
            return rc;
        if (!out->account[0])
            snprintf(out->account, sizeof out->account, "user:%s", in->id);
        return 0;
    }
    if (knit_relay_normalize_email(in->email, out->email, sizeof out->email) != 0)
        out->email[0] = '\0'; /* not an email this index can hold: matched by id alone */
    /* A group, so that a provisional account's cells can be merged. */
    if (own && (rc = knit_relay_store_begin(s)) != 0)
        return rc;
    rc = identify_in(s, in, now_ms, out);
    if (own) {
        if (rc == 0 && !out->erased)
            rc = knit_relay_store_commit(s);
        else
            knit_relay_store_rollback(s);
    }
    if (rc != 0)
        knit_relay_ident_result_clear(out);
    return rc;
}

int knit_relay_store_ident_dirty(knit_relay_store_t *s, const char *account) /* see relay_store.h */
{
    sqlite3_stmt *st;
    int rc;
    if (s->readonly || s->version < 4)
        return 0;
    rc = sqlite3_prepare_v2(s->db, "UPDATE ident SET profiled = 0 WHERE account = ?1", -1, &st,
                            NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc);
    sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
    rc = step(s, st);
    sqlite3_finalize(st);
    return rc > 0 ? 0 : rc;
}

int knit_relay_store_ident_get(knit_relay_store_t *s, const char *id, const char *email,
                               char account[KNIT_IDENT_NS_MAX]) /* see relay_store.h */
{
    char e[KNIT_IDENT_EMAIL_MAX];
    int rc;
    account[0] = '\0';
    if (s->version < 4)
        return 0;
    if (id && (rc = ident_find(s, S_ID_GET, id, account, KNIT_IDENT_NS_MAX)) != 0)
        return rc;
    if (!account[0] && email && knit_relay_normalize_email(email, e, sizeof e) == 0 &&
        (rc = ident_find(s, S_IDENT_BY_EMAIL, e, account, KNIT_IDENT_NS_MAX)) != 0)
        return rc;
    return 0;
}

int knit_relay_store_ident_count(knit_relay_store_t *s, uint64_t *accounts,
                                 uint64_t *ids) /* see relay_store.h */
{
    sqlite3_stmt *st;
    int rc;
    *accounts = *ids = 0;
    if (s->version < 4)
        return 0;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT (SELECT count(*) FROM ident), (SELECT count(*) FROM ident_id)",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc);
    if ((rc = step(s, st)) == 1) {
        *accounts = col_u64(st, 0);
        *ids = col_u64(st, 1);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int knit_relay_store_membership(knit_relay_store_t *s, const char *org, const char *user_id,
                                const char *account, const char *role, int present,
                                uint64_t updated_ms, int *stale) /* see relay_store.h */
{
    sqlite3_stmt *st;
    int rc, own = !s->in_group;
    *stale = 0;
    if (s->readonly)
        return set_err(s, KNIT_EREADONLY, "store opened read-only");
    if (own && (rc = exec(s, "BEGIN IMMEDIATE")) != 0)
        return rc;
    if ((rc = stmt(s, S_MEMBER_GET, &st)) != 0)
        goto out;
    sqlite3_bind_text(st, 1, org, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_STATIC);
    if ((rc = step(s, st)) == 1) {
        /* Deliveries come out of order: an older event changes nothing. */
        *stale = col_u64(st, 2) > updated_ms;
        rc = 0;
    }
    sqlite3_reset(st);
    if (rc == 0 && !*stale && (rc = stmt(s, S_MEMBER_PUT, &st)) == 0) {
        sqlite3_bind_text(st, 1, org, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, user_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, account ? account : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, role ? role : "", -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 5, present != 0);
        bind_u64(st, 6, updated_ms);
        rc = run_done(s, st);
    }
out:
    if (own) {
        if (rc == 0)
            rc = exec(s, "COMMIT");
        else
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

int knit_relay_store_member(knit_relay_store_t *s, const char *org, const char *user_id,
                            int *present, char *role, size_t n) /* see relay_store.h */
{
    sqlite3_stmt *st;
    int rc;
    *present = 0;
    if (n)
        role[0] = '\0';
    if (s->version < 4)
        return 0;
    if ((rc = stmt(s, S_MEMBER_GET, &st)) != 0)
        return rc;
    sqlite3_bind_text(st, 1, org, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_STATIC);
    if ((rc = step(s, st)) == 1) {
        const char *r = (const char *)sqlite3_column_text(st, 1);
        *present = sqlite3_column_int(st, 0) ? 1 : -1;
        if (n)
            snprintf(role, n, "%s", r ? r : "");
        rc = 0;
    }
    sqlite3_reset(st);
    return rc;
}

int knit_relay_store_memberships(knit_relay_store_t *s, const char *account,
                                 knit_relay_member_fn fn, void *arg) /* see relay_store.h */
{
    sqlite3_stmt *st;
    int rc;
    if (s->version < 4)
        return 0;
    if ((rc = stmt(s, S_MEMBER_LIST, &st)) != 0)
        return rc;
    sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
    while ((rc = step(s, st)) == 1) {
        const char *org = (const char *)sqlite3_column_text(st, 0);
        const char *role = (const char *)sqlite3_column_text(st, 1);
        fn(arg, org ? org : "", role ? role : "", sqlite3_column_int(st, 2) != 0, col_u64(st, 3));
    }
    sqlite3_reset(st);
    return rc < 0 ? rc : 0;
}

/* Forgets the identity of account ns (design note 13), in autocommit. */
static int ident_forget(knit_relay_store_t *s, const char *ns)
{
    static const char *const sql[] = {
        "DELETE FROM ident_id WHERE account = ?1",
        "DELETE FROM ident WHERE account = ?1",
        "DELETE FROM membership WHERE account = ?1",
    };
    int rc = 0;
    if (s->version < 4)
        return 0;
    if ((rc = exec(s, "PRAGMA secure_delete = ON; BEGIN IMMEDIATE")) != 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < sizeof sql / sizeof sql[0]; i++) {
        sqlite3_stmt *st;
        if ((rc = sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL)) != SQLITE_OK) {
            rc = db_err(s, rc);
            break;
        }
        sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
        rc = step(s, st);
        sqlite3_finalize(st);
        if (rc > 0)
            rc = 0;
    }
    if (rc == 0)
        rc = exec(s, "COMMIT");
    else
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    exec(s, "PRAGMA secure_delete = FAST");
    return rc;
}
