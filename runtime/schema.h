/*
** schema.h: a replica's tracked schema as a value: its tracked tables, each
** with its key columns (in key order) and its other columns with their
** kinds, and a short fingerprint that names that schema.  Internal (not in
** knit.h): the sync client sends it in HELLO (docs/PROTOCOL.md, HELLO key
** 8), the relay records it per device, and sync-inspect prints it.
**
** Canonical form, which the fingerprint and the wire both require: tables
** in strictly ascending byte order of their names, and within a table the
** non-key columns in strictly ascending byte order of their names (so two
** devices that added the same columns in different orders run the same
** schema); key columns keep their key order, since it is part of every
** row's identity.  Names are non-empty UTF-8 without NUL, at most
** KNIT_SCHEMA_MAX_NAME bytes; a key column is never also a column.
**
** The fingerprint is the first 8 bytes of SHA-256 over this encoding of the
** canonical form (each string and the tag prefixed by its length as a
** varint, crdt/value.h):
**
**   varint(13) "knit.schema.1"   varint(ntables)
**   per table:  str(name)  varint(nkeys)  str(key)...
**               varint(ncols)  (str(col)  kind byte: 0 LWW, 1 OR-set)...
**
** Ownership: a knit_schema_t made by knit__schema_read() or
** knit__schema_pack() is one allocation holding every table, column and
** name; knit__schema_free() releases it.  One built by hand (the codec's
** decoder, tests) points at its maker's memory.
*/
#ifndef KNIT_SCHEMA_H
#define KNIT_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "knit.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_SCHEMA_FP_LEN 8        /* bytes of a fingerprint */
#define KNIT_SCHEMA_FP_HEX 17       /* its hex form with the NUL */
#define KNIT_SCHEMA_MAX_TABLES 1024 /* tables of one schema */
#define KNIT_SCHEMA_MAX_COLS 2000   /* key and other columns of one table (SQLite's limit) */
#define KNIT_SCHEMA_MAX_NAME 1024   /* bytes of a table or column name */

typedef struct knit_schema_col_s {
    const char *name; /* column name */
    int orset;        /* 1: OR-set column, 0: LWW register */
} knit_schema_col_t;

typedef struct knit_schema_table_s {
    const char *name;              /* table name */
    const char *const *keys;       /* key column names, in key order */
    uint32_t nkeys;                /* >= 1 */
    const knit_schema_col_t *cols; /* other tracked columns, by name */
    uint32_t ncols;                /* may be 0 */
} knit_schema_table_t;

typedef struct knit_schema_s {
    const knit_schema_table_t *tables; /* by name; NULL when ntables is 0 */
    size_t ntables;                    /* count */
    uint8_t fp[KNIT_SCHEMA_FP_LEN];    /* fingerprint of the canonical form */
} knit_schema_t;

/* 0 when s is in canonical form and within the bounds; otherwise KNIT_ETOOBIG
** (a count or a name beyond its bound) or KNIT_EINVAL, and *why (if why is
** not NULL) a static description of the first problem.  Does not look at
** s->fp. */
int knit__schema_check(const knit_schema_t *s, const char **why /* OUT */);

/* The fingerprint of s (canonical: see knit__schema_check). */
void knit__schema_fingerprint(const knit_schema_t *s, uint8_t fp[KNIT_SCHEMA_FP_LEN] /* OUT */);

/* fp as 16 lower-case hex digits. */
void knit__schema_fp_hex(const uint8_t fp[KNIT_SCHEMA_FP_LEN], char out[KNIT_SCHEMA_FP_HEX]);

/* Copies s into one allocation, sorting its tables and columns into
** canonical order and computing the fingerprint.  KNIT_EINVAL (a duplicate
** or empty name, a key that is also a column), KNIT_ETOOBIG, KNIT_ENOMEM. */
int knit__schema_pack(const knit_schema_t *s, knit_schema_t **out /* OUT */);

/* The tracked schema of replica k, from its _knit_tables, packed (above).
** Reads in whatever transaction k is in.  A schema that cannot be
** represented (a name beyond the bounds) is KNIT_ETOOBIG with errmsg set. */
int knit__schema_read(knit_t *k, knit_schema_t **out /* OUT */);

/* Releases a schema made by knit__schema_pack or knit__schema_read; NULL is
** a no-op. */
void knit__schema_free(knit_schema_t *s);

#ifdef __cplusplus
}
#endif
#endif
