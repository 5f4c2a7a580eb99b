/*
** fuzz_frame.c: libFuzzer target for the incremental frame reader
** (knit_frame_read) and, behind it, the message decoder.
**
** Input: byte 0 chooses how the rest is cut into chunks (0: one chunk; else
** chunks of 1 + byte0 % 97 bytes, varied by the following bytes); the rest
** is the byte stream.  The reader's maximum frame is small (4096) so that
** oversized lengths are common.  Contract checked (abort on breach):
**   - `used` never exceeds what was offered, and a 0 return consumed it all;
**   - payloads are 1..max_frame bytes;
**   - the payloads, and the error that ends the stream, are the same
**     however the stream is cut (chunked vs. whole);
**   - an error is sticky.
** Every payload is also handed to knit_msg_decode().
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "frame.h"

#define MAX_FRAME 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs the reader over p[0..n) cut by `cut`, folding the payloads into a
** checksum; returns the final status (0 or an error). */
static int run(const uint8_t *p, size_t n, uint8_t cut, int decode, uint64_t *sum, size_t *frames)
{
    knit_frame_reader_t r;
    size_t pos = 0;
    int status = 0;
    knit_frame_reader_init(&r, MAX_FRAME);
    *sum = 1469598103934665603ULL;
    *frames = 0;
    while (pos < n && status == 0) {
        size_t chunk = n - pos;
        if (cut) {
            chunk = 1 + (size_t)(cut + p[pos]) % 97;
            if (chunk > n - pos)
                chunk = n - pos;
        }
        size_t off = 0;
        while (off < chunk) {
            size_t used = 0, len = 0;
            const uint8_t *payload = NULL;
            int rc = knit_frame_read(&r, p + pos + off, chunk - off, &used, &payload, &len);
            if (used > chunk - off)
                abort();
            off += used;
            if (rc < 0) {
                size_t u2;
                if (knit_frame_read(&r, p, n, &u2, &payload, &len) != rc || u2 != 0)
                    abort(); /* sticky */
                status = rc;
                break;
            }
            if (rc == 0) {
                if (off != chunk)
                    abort();
                continue;
            }
            if (rc != 1 || len == 0 || len > MAX_FRAME || !payload)
                abort();
            for (size_t i = 0; i < len; i++)
                *sum = (*sum ^ payload[i]) * 1099511628211ULL;
            *sum = (*sum ^ len) * 1099511628211ULL;
            (*frames)++;
            if (decode) {
                knit_msg_t m;
                if (knit_msg_decode(payload, len, NULL, &m, NULL) == 0)
                    knit_msg_free(&m);
            }
        }
        pos += chunk;
    }
    knit_frame_reader_free(&r);
    return status;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint64_t s1, s2;
    size_t f1, f2;
    int a = run(data + 1, size - 1, data[0], 1, &s1, &f1);
    int b = run(data + 1, size - 1, 0, 0, &s2, &f2);
    if (a != b || s1 != s2 || f1 != f2)
        abort();
    return 0;
}
