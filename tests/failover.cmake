# The sync client's failover between several relays (transport/client/
# client.c note 10): the real sync-relay and sync-agent on loopback.  A
# first address that refuses connections and a second that works; and,
# with libpq, two relays on one real PostgreSQL (integration/pg_fixture.c,
# skipped with 77 without the server binaries), the first killed mid-push.
if(TARGET sync-relay AND TARGET sync-agent)
  set(fo_sources integration/test_failover_it.c integration/sync_util.c)
  set(fo_cases refused_then_next relay_list_usage)
  set(fo_libs knit_relay)
  if(TARGET knit_relay_pg)
    list(APPEND fo_sources integration/pg_fixture.c)
    list(APPEND fo_cases relay_killed_pg)
    list(APPEND fo_libs PkgConfig::PC_pq)
  endif()
  knit_test(failover
    SOURCES ${fo_sources}
    CASES ${fo_cases}
    LIBS ${fo_libs}
    TIMEOUT 120)
  target_compile_definitions(test_failover PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>")
  if(TARGET knit_relay_pg)
    target_compile_definitions(test_failover PRIVATE KNIT_FAILOVER_PG=1)
    set_tests_properties(failover.relay_killed_pg PROPERTIES SKIP_RETURN_CODE 77)
  endif()
  add_dependencies(test_failover sync-relay sync-agent)
endif()
