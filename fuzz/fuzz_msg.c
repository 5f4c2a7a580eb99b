/*
** fuzz_msg.c: libFuzzer target for knit_msg_decode(), the first code that
** touches every byte a peer sends.
**
** Besides memory errors and undefined behaviour (the sanitizers' job) it
** checks the codec's contract on every input and aborts on a breach:
**   - a failure returns a known code (KNIT_EPROTO, KNIT_ETOOBIG or
**     KNIT_ENOMEM), leaves nothing to free and says why;
**   - whatever decodes also encodes, the encoding decodes again, and
**     encoding that gives the same bytes (the encoding is canonical).
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    knit_msg_t m, again;
    const char *why = NULL;
    int rc = knit_msg_decode(data, size, NULL, &m, &why);
    if (rc) {
        if ((rc != KNIT_EPROTO && rc != KNIT_ETOOBIG && rc != KNIT_ENOMEM) || !why ||
            m.priv != NULL)
            abort();
        return 0;
    }
    knit_buf_t one = {0}, two = {0};
    if (knit_msg_encode(&m, NULL, &one) != 0)
        abort();
    if (knit_msg_decode(one.p + KNIT_FRAME_HEADER, one.len - KNIT_FRAME_HEADER, NULL, &again,
                        &why) != 0)
        abort();
    if (knit_msg_encode(&again, NULL, &two) != 0)
        abort();
    if (one.len != two.len || memcmp(one.p, two.p, one.len) != 0)
        abort();
    if (again.type != m.type)
        abort();
    knit_msg_free(&again);
    knit_msg_free(&m);
    knit_buf_free(&one);
    knit_buf_free(&two);
    return 0;
}
