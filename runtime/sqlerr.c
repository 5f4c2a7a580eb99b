/*
** sqlerr.c: see sqlerr.h.
*/
#include "sqlerr.h"

#include <sqlite3.h>

#include "knit_errors.h"

int knit__sqlite_code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return KNIT_EBUSY;
    case SQLITE_NOMEM:
        return KNIT_ENOMEM;
    case SQLITE_CONSTRAINT:
        return KNIT_ECONSTRAINT;
    case SQLITE_NOTADB:
        return KNIT_ENOTREPLICA;
    case SQLITE_CORRUPT:
        return KNIT_ECORRUPT;
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        return KNIT_EIO;
    case SQLITE_READONLY:
        return KNIT_EREADONLY;
    default:
        return KNIT_EDB;
    }
}
