# The relay's status page (GET /) rendered by Debian's headless Chromium,
# with data pushed by real sync-agent runs.  Without chromium the cases
# are reported as skipped (run.sh installs it).
if(TARGET sync-relay AND TARGET sync-agent)
  knit_test(status_it
    SOURCES integration/test_status_it.c integration/sync_util.c
    CASES renders_namespaces hostile_name_is_text
    LIBS knit_relay
    TIMEOUT 120)
  target_compile_definitions(test_status_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>")
  add_dependencies(test_status_it sync-relay sync-agent)
  set_tests_properties(status_it.renders_namespaces status_it.hostile_name_is_text
                       PROPERTIES SKIP_RETURN_CODE 77)
endif()
