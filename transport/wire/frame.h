/*
** frame.h: knit's framing, without I/O.  A stream of bytes (TCP, TLS, a
** pipe) carries frames; each frame is a 4-byte big-endian payload length
** followed by that many payload bytes, one CBOR message (docs/PROTOCOL.md).
**
**   +--------+--------+--------+--------+----------------------------+
**   |  length, uint32 big-endian (>= 1)  |  payload: `length` bytes    |
**   +--------+--------+--------+--------+----------------------------+
**
** The reader is fed whatever bytes arrived and hands back complete payloads.
** It checks a length against the maximum as soon as the four length bytes
** are in, before it buffers or allocates anything, so a hostile peer cannot
** make it reserve memory by announcing a huge frame.
**
** Design notes
**   1. A payload handed out stays valid until the next call on the reader
**      (it points into the caller's input when the whole frame arrived in
**      one piece, else into the reader's buffer).
**   2. After an error the reader stays failed: every later call returns the
**      same error.  The connection must be closed; nothing is resynchronized.
**   3. The reader never holds more than max_frame payload bytes plus the
**      4-byte header.
*/
#ifndef KNIT_FRAME_H
#define KNIT_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "knit_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_frame_reader_s {
    size_t max_frame; /* largest payload accepted, bytes */
    uint8_t hdr[4];   /* length bytes gathered so far */
    size_t nhdr;      /* how many of them (0..4) */
    size_t need;      /* payload length of the frame being read (valid if nhdr == 4) */
    uint8_t *buf;     /* partial payload, knit's allocator; NULL when none */
    size_t have;      /* payload bytes in buf */
    size_t cap;       /* bytes allocated in buf */
    int err;          /* sticky error (0 = fine) */
} knit_frame_reader_t;

/* Prepares r; max_frame 0 means KNIT_DEFAULT_MAX_FRAME (16 MiB). */
KNIT_EXTERN void knit_frame_reader_init(knit_frame_reader_t *r, size_t max_frame);
/* Releases r's buffer; r may be initialized again.  NULL is a no-op. */
KNIT_EXTERN void knit_frame_reader_free(knit_frame_reader_t *r);

/* Feeds p[0..n).  Consumes bytes up to the end of the first complete frame
** and stores how many in *used.  Returns 1 with *payload and *len set when a
** frame is complete (call again with the rest of the input), 0 when all n
** bytes were consumed without completing one, or an error: KNIT_ETOOBIG (the
** announced length exceeds max_frame), KNIT_EPROTO (a zero length),
** KNIT_ENOMEM. */
KNIT_EXTERN int knit_frame_read(knit_frame_reader_t *r, const uint8_t *p, size_t n,
                                size_t *used /* OUT */, const uint8_t **payload /* OUT */,
                                size_t *len /* OUT */);

/* The caller is done with the payload knit_frame_read() handed out last:
** a buffer larger than KNIT_FRAME_KEEP is released, so one big frame does
** not pin its memory for the life of the connection.  Optional (the next
** read recycles the frame anyway); harmless at any time. */
#define KNIT_FRAME_KEEP (64u * 1024)
KNIT_EXTERN void knit_frame_done(knit_frame_reader_t *r);
/* 1 when the reader holds part of a frame (a close now would cut one). */
KNIT_EXTERN int knit_frame_pending(const knit_frame_reader_t *r);

/* Writer helpers.  knit_frame_header() writes the 4 length bytes for a
** payload of len bytes: KNIT_ETOOBIG if len > max_frame (0 = default) or
** does not fit 32 bits, KNIT_EINVAL if len is 0. */
KNIT_EXTERN int knit_frame_header(uint8_t out[4], size_t len, size_t max_frame);
/* Reads the length from 4 header bytes. */
KNIT_EXTERN uint32_t knit_frame_length(const uint8_t hdr[4]);

#ifdef __cplusplus
}
#endif
#endif
