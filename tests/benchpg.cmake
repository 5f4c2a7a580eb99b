# bench_pg (issue 14): the relay on PostgreSQL measured end to end, one
# throw-away server (pg_fixture) and real sync-relay processes on it:
# ingest over 1-3 relays (and the SQLite store's as a baseline), fan-out
# latency across relays, and a 1M-cell catch-up.  Run by hand:
# build/tests/bench_pg (KNIT_BENCH_QUICK=1 for a short run); see
# docs/PERFORMANCE.md, "PostgreSQL store".
if(TARGET knit_relay_pg AND TARGET sync-relay)
  knit_bench(bench_pg
    SOURCES bench/bench_pg.c integration/pg_fixture.c integration/wire_client.c
    LIBS knit_relay_pg knit_relay PkgConfig::PC_pq Threads::Threads)
  target_compile_definitions(bench_pg PRIVATE SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>")
  add_dependencies(bench_pg sync-relay)
endif()
