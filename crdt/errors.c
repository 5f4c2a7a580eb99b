/*
** errors.c: messages and names for the codes of knit_errors.h, generated
** from the same X-macro so they cannot disagree with the enum.
*/
#include "knit_errors.h"

const char *knit_strerror(int err) /* see knit_errors.h */
{
    switch (err) {
    case 0:
        return "success";
#define KNIT_ERR_MSG(name, code, msg)                                                              \
    case code:                                                                                     \
        return msg;
        KNIT_ERRNO_MAP(KNIT_ERR_MSG)
#undef KNIT_ERR_MSG
    }
    return "unknown error";
}

const char *knit_err_name(int err) /* see knit_errors.h */
{
    switch (err) {
    case 0:
        return "KNIT_OK";
#define KNIT_ERR_NAME(name, code, msg)                                                             \
    case code:                                                                                     \
        return "KNIT_E" #name;
        KNIT_ERRNO_MAP(KNIT_ERR_NAME)
#undef KNIT_ERR_NAME
    }
    return "KNIT_E?";
}
