# Robustness of the relay and the sync client: what no replica can apply is
# refused and never stored, damaged stores do not block catch-up, errors
# carry SQLite's text, own pushes are not downloaded again, and "synced" is
# said only when true.  Unit cases run the engines and the store directly;
# integration cases run the real sync-relay, sync-agent and sync-inspect.
knit_test(robust_unit
  SOURCES unit/test_robust_unit.c
  CASES check_rejects_unapplicable store_never_stores_unapplicable
        store_catch_up_skips_damaged client_error_detail_stable client_skips_own_echo
  LIBS knit_relay)

if(TARGET sync-relay AND TARGET sync-agent AND TARGET sync-inspect)
  knit_test(robust_it
    SOURCES integration/test_robust_it.c integration/sync_util.c integration/wire_client.c
    CASES blob_element_refused once_twice_no_echo pending_lists_unstamped damaged_store
          aside_reported
    LIBS knit_relay
    TIMEOUT 180)
  target_compile_definitions(test_robust_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>"
    SYNC_INSPECT_PATH="$<TARGET_FILE:sync-inspect>")
  add_dependencies(test_robust_it sync-relay sync-agent sync-inspect)
endif()
