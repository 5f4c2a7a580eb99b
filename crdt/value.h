/*
** value.h: SQLite values, their canonical byte encoding and their order.
**
** knit moves SQLite values (NULL, INTEGER, REAL, TEXT, BLOB) between replicas,
** stores them in OR-set state and hashes them into digests.  The encoding is
** exact (it keeps the storage class: integer 1 and real 1.0 encode
** differently) and self-delimiting:
**
**   NULL     0x00
**   INTEGER  0x01  int64, 8 bytes big-endian two's complement
**   REAL     0x02  IEEE-754 binary64, 8 bytes big-endian (NaN is refused)
**   TEXT     0x03  varint length, UTF-8 bytes
**   BLOB     0x04  varint length, bytes
**
** varint: LEB128, 7 bits per byte, least significant group first, at most
** 10 bytes, no redundant trailing zero groups (the shortest form only).
**
** knit_value_cmp() follows SQLite's own order and equality (BINARY
** collation): NULL < numbers < TEXT < BLOB; INTEGER and REAL compare by
** numeric value, exactly, so integer 1 equals real 1.0 just as `1 = 1.0` is
** true in SQL.
*/
#ifndef KNIT_VALUE_H
#define KNIT_VALUE_H

#include <stddef.h>
#include <stdint.h>

#include "knit_errors.h"

/* Storage classes; the numbers are SQLite's (SQLITE_INTEGER etc.). */
#define KNIT_INTEGER 1
#define KNIT_REAL 2
#define KNIT_TEXT 3
#define KNIT_BLOB 4
#define KNIT_NULL 5

typedef struct knit_value_s {
    int type; /* KNIT_NULL .. KNIT_BLOB */
    union {
        int64_t i; /* KNIT_INTEGER */
        double r;  /* KNIT_REAL */
        struct {
            const void *p; /* KNIT_TEXT/BLOB bytes, not owned, not NUL-terminated */
            size_t n;      /* byte count */
        } b;
    } u;
} knit_value_t;

/* SQLite's order; <0, 0, >0. */
KNIT_EXTERN int knit_value_cmp(const knit_value_t *a, const knit_value_t *b);

/* Bytes knit_value_encode() writes for v. */
KNIT_EXTERN size_t knit_value_encoded_size(const knit_value_t *v);
/* Writes the encoding to out (knit_value_encoded_size(v) bytes); returns the
** count. */
KNIT_EXTERN size_t knit_value_encode(const knit_value_t *v, uint8_t *out);
/* Decodes one value from p[0..n).  TEXT/BLOB point into p.  *used gets the
** bytes consumed.  KNIT_ETRUNCATED, KNIT_ECORRUPT (unknown tag, NaN,
** non-shortest varint) on bad input. */
KNIT_EXTERN int knit_value_decode(const uint8_t *p, size_t n, knit_value_t *v /* OUT */,
                                  size_t *used /* OUT */);

/* Canonical form used for OR-set elements: a REAL holding an integer that
** int64 represents exactly becomes that INTEGER, so [1.0] and [1] are one
** element; everything else is unchanged. */
KNIT_EXTERN void knit_value_canon(knit_value_t *v);

/* varint helpers shared by every knit binary format. */
#define KNIT_VARINT_MAX 10
KNIT_EXTERN size_t knit_varint_put(uint8_t *out, uint64_t x);
/* KNIT_ETRUNCATED or KNIT_ECORRUPT (over-long or non-shortest). */
KNIT_EXTERN int knit_varint_get(const uint8_t *p, size_t n, uint64_t *x /* OUT */,
                                size_t *used /* OUT */);

#endif
