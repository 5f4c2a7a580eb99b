# The relay integration suites a second time, on PostgreSQL: every case of
# the areas below is registered again as "pg.<area>.<case>" with
# KNIT_TEST_STORE=pg, so each relay it starts serves from its own database
# on a throw-away server (integration/test_store.h) instead of its SQLite
# file.  Registered only when libpq and the server binaries are there
# (Debian: postgresql); a case still exits 77 (skipped) if they vanish.
# Included by tests/CMakeLists.txt after every other tests/*.cmake, since it
# reads the cases knit_test() recorded (global property KNIT_CASES_<area>)
# and the plain tests' TIMEOUT.
set(knit_pg_areas sync_it relay_it failover http_longpoll_it http_it status_it device_it
    reject_it org_it accounts_it identity_it check_it schemas_it tls_it ws_client_it
    lp_client_it)

# Cases that cannot apply to PostgreSQL, one line each with the reason.
set(knit_pg_excluded
  failover.relay_killed_pg             # already on PostgreSQL: its own server, its own --store
  check_it.relay_restored_backup       # restores the relay from a copy of its SQLite file
  status_it.hostile_name_is_text       # writes a hostile row into the relay's SQLite file
  identity_it.profile_without_webhooks # reads the identity index from the SQLite file (relay_pg.ident_*)
  identity_it.sign_in_then_webhooks    # reads the ident table of the SQLite file (relay_pg.webhook_*)
  identity_it.webhook_then_sign_in     # reads the ident table of the SQLite file
  identity_it.concurrent               # reads the ident table of the SQLite file
  identity_it.profile_updates          # reads the ident table of the SQLite file
  identity_it.memberships              # opens the SQLite store (knit_relay_store_open)
)

# Cases that fail on PostgreSQL because of a bug in the PostgreSQL store or
# the relay's use of it, with the symptom; off this list once fixed.
set(knit_pg_known_failures
)

# Cases left out for time, one line each with the reason (none: the TLS,
# certificate and HTTP-framing cases never reach the store, but they run
# here too, about 50 s at -j2, so every relay case runs on both backends).
set(knit_pg_left_out
)

set(knit_pg_bin "")
if(DEFINED ENV{KNIT_PG_BINDIR})
  file(GLOB knit_pg_bin $ENV{KNIT_PG_BINDIR}/initdb)
else()
  file(GLOB knit_pg_bin /usr/lib/postgresql/*/bin/initdb)
endif()
if(TARGET knit_relay_pg AND knit_pg_bin)
  foreach(area ${knit_pg_areas})
    if(NOT TARGET test_${area})
      continue()
    endif()
    target_sources(test_${area} PRIVATE integration/test_store.c integration/pg_fixture.c)
    target_link_libraries(test_${area} PRIVATE knit_relay_pg PkgConfig::PC_pq)
    target_compile_definitions(test_${area} PRIVATE KNIT_TEST_PG=1)
    get_property(cases GLOBAL PROPERTY KNIT_CASES_${area})
    foreach(c ${cases})
      set(pgcase "${area}.${c}")
      if(pgcase IN_LIST knit_pg_excluded OR pgcase IN_LIST knit_pg_known_failures
         OR pgcase IN_LIST knit_pg_left_out)
        continue()
      endif()
      get_test_property(${area}.${c} TIMEOUT t)
      add_test(NAME pg.${area}.${c} COMMAND test_${area} ${c})
      set_tests_properties(pg.${area}.${c} PROPERTIES TIMEOUT ${t} SKIP_RETURN_CODE 77
                           ENVIRONMENT KNIT_TEST_STORE=pg)
    endforeach()
  endforeach()
endif()
