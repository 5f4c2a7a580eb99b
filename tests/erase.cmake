# Account erasure on the relay (sync-relay erase), with the relay running.
if(TARGET sync-relay AND TARGET sync-agent)
  knit_test(erase_it
    SOURCES integration/test_erase_it.c integration/sync_util.c
    CASES erase_while_serving webhook_user_deleted
    LIBS knit_relay
    TIMEOUT 120)
  target_compile_definitions(test_erase_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>")
  add_dependencies(test_erase_it sync-relay sync-agent)
endif()
