/*
** fuzz_cbor_diag.c: libFuzzer target for knit_cbor_to_text, the renderer
** behind `sync-inspect decode`, which reads hostile frames by design.
**
** Besides memory errors (the sanitizers' job) it checks the renderer's own
** contract on every input: both modes agree on success, error code, offset
** and message (they share one reader, and a JSON key is rendered by the
** diagnostic path); an error names an offset within the input; a success
** yields a NUL-terminated text of the stated length with no raw control
** characters.  Any breach aborts, which libFuzzer reports as a crash.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "cbor_diag.h"

static void check_text(const char *s, size_t n)
{
    size_t i;
    if (!s || strlen(s) != n)
        abort();
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = NULL, *diag = NULL;
    size_t jlen, dlen, joff, doff;
    const char *jwhat, *dwhat;
    int jrc = knit_cbor_to_text(data, size, KNIT_CBOR_JSON, &json, &jlen, &joff, &jwhat);
    int drc = knit_cbor_to_text(data, size, KNIT_CBOR_DIAG, &diag, &dlen, &doff, &dwhat);

    if (jrc != drc)
        abort();
    if (jrc) {
        if (json || diag || joff != doff || joff > size || !jwhat || !dwhat ||
            strcmp(jwhat, dwhat) != 0)
            abort();
        return 0;
    }
    check_text(json, jlen);
    check_text(diag, dlen);
    knit__free(json);
    knit__free(diag);
    return 0;
}
