/*
** cbor_diag.h: render one CBOR data item as JSON or as CBOR diagnostic
** notation, for people debugging knit's wire data.
**
** This is a strict reader of its own rather than a front end to libcbor
** because a debugging tool must show what is on the wire, not what a decoder
** made of it: it reports the byte offset of the first malformation, and it
** keeps the encoding details a decoded item loses (indefinite lengths,
** chunk boundaries, float widths, over-long integer heads).  It does no I/O
** and reads no global state; the only allocation is the output buffer.
**
** What it accepts: exactly one well-formed item (RFC 8949 section 5.3.1) and
** nothing after it.  Every major type, tag and simple value is accepted; only
** well-formedness and UTF-8 validity of text strings are checked, not the
** validity of tag contents (a 2(...) holding a text string is shown as is).
**
** Diagnostic notation (KNIT_CBOR_DIAG) follows RFC 8949 section 8 and
** Appendix A: 1.5, -0.0, Infinity, NaN, h'0102', (_ h'01', h'02'), [_ 1],
** {_ "a": 1}, 2(h'01'), simple(16), undefined.  Where the encoding is not the
** preferred one, an encoding indicator (section 8.1) says which width was
** used: 0_0 is zero in a two-byte head, 1.5_3 is 1.5 as a double, [_0 1] is a
** one-byte count.  Empty indefinite strings are ''_ and ""_.  A NaN other than
** the preferred f97e00 carries a comment with its bits: NaN_2 /bits 0x7fc00001/.
**
** JSON (KNIT_CBOR_JSON) maps every item to one JSON value:
**   unsigned/negative integers  the exact decimal number, also beyond 2^53
**   floats                      shortest round-trip number (1.5, -0.0, 1.0e+300);
**                               "Infinity", "-Infinity", "NaN" as strings
**   byte strings                {"bytes": "<lowercase hex>"}
**   text strings                strings (indefinite ones joined)
**   arrays                      arrays
**   maps                        objects; a key that is not a text string is
**                               written as its diagnostic notation, so 1 and
**                               "1" both become "1", and keys may repeat
**   tags                        {"tag": N, "value": ...}
**   false, true, null           themselves; other simple values (undefined
**                               included) {"simple": N}
** Encoding details do not survive in JSON; --diag output is the faithful view.
**
** Both forms are one line, without a trailing newline.  Text is UTF-8 as in
** the input, except that quotes, backslashes, C0 and C1 controls, DEL,
** U+2028/U+2029 and the bidirectional controls are escaped (\uXXXX), so
** hostile text cannot drive a terminal.
*/
#ifndef KNIT_CBOR_DIAG_H
#define KNIT_CBOR_DIAG_H

#include <stddef.h>
#include <stdint.h>

#define KNIT_CBOR_JSON 0 /* one JSON value */
#define KNIT_CBOR_DIAG 1 /* RFC 8949 diagnostic notation */

/* Limits.  The input limit matches the largest message sync-inspect will
** read; the output limit bounds memory, as the worst-case expansion of hostile
** input (about 16 output bytes per input byte) would otherwise be 1 GiB. */
#define KNIT_CBOR_MAX_INPUT ((size_t)64 << 20)   /* bytes of CBOR */
#define KNIT_CBOR_MAX_DEPTH 256                  /* nested arrays, maps, tags */
#define KNIT_CBOR_MAX_OUTPUT ((size_t)512 << 20) /* bytes of text */

/* Renders the single CBOR item in p[0..n) as text in `mode`.
**
** On success returns 0 and sets *out to a NUL-terminated string of *outlen
** bytes (NUL not counted), allocated with knit__malloc; the caller frees it
** with knit__free.
**
** On failure *out is NULL, *outlen 0, and, when the pointers are not NULL,
** *err_offset is the offset into p of the offending byte or item head and
** *err_what a static English phrase such as "reserved additional information
** value" (never NULL, never to be freed).  Returns
**   KNIT_EINVAL     out or outlen is NULL, p is NULL with n > 0, unknown mode
**   KNIT_ETRUNCATED the input ends inside the item (or is empty)
**   KNIT_ECORRUPT   not well-formed: reserved additional information,
**                   indefinite length where none is allowed, a bad chunk in
**                   an indefinite-length string, a break outside an
**                   indefinite-length item, a two-byte simple value below 32,
**                   invalid UTF-8, or bytes after the item
**   KNIT_ETOOBIG    n > KNIT_CBOR_MAX_INPUT, nesting deeper than
**                   KNIT_CBOR_MAX_DEPTH, a string or count larger than the
**                   input limit, or output over KNIT_CBOR_MAX_OUTPUT
**   KNIT_ENOMEM     allocation failed */
int knit_cbor_to_text(const uint8_t *p, size_t n, int mode, char **out /* OUT */,
                      size_t *outlen /* OUT */, size_t *err_offset /* OUT */,
                      const char **err_what /* OUT */);

#endif
