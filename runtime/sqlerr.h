/*
** sqlerr.h: the one map from SQLite's result codes to knit's error codes,
** used by the replica (db.c) and the relay's store (relay_store.c), so that
** a full disk, a busy file or a corrupt one reads the same everywhere.
** Not installed.
*/
#ifndef KNIT_SQLERR_H
#define KNIT_SQLERR_H

/* The KNIT_E* code for SQLite result code rc (extended codes included). */
int knit__sqlite_code(int rc);

#endif
