/*
** utf8.h: the one UTF-8 decoder of knit (RFC 3629).
**
** Valid means what RFC 3629 allows: no overlong forms, no surrogates
** (U+D800..U+DFFF), nothing past U+10FFFF.  The wire codec and the
** OR-set's JSON form (hence the validator) decide with these two functions,
** so they cannot disagree about which text is valid; sync-inspect's printers
** (cli/inspect_util.c, cli/cbor_diag.c) walk text with them too.
*/
#ifndef KNIT_UTF8_H
#define KNIT_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Decodes the sequence at s[0..n) (n >= 1): returns its length (1..4) and
** stores the code point in *cp (may be NULL), or returns 0 if it is not
** valid UTF-8. */
size_t knit__utf8_next(const uint8_t *s, size_t n, uint32_t *cp);
/* 1 if all of s[0..n) is valid UTF-8 (ASCII runs checked 8 bytes at a time). */
int knit__utf8_valid(const uint8_t *s, size_t n);

#endif
