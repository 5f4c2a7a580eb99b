# The consistency checker (docs/ARCHITECTURE.md, "Consistency checker"):
# the real sync-agent and sync-relay on loopback finding and repairing a
# replica corrupted behind knit's back, and finding nothing on healthy ones.

if(TARGET sync-relay AND TARGET sync-agent)
  knit_test(check_it
    SOURCES integration/test_check_it.c integration/sync_util.c
    CASES repairs_corruption repairs_metadata healthy_zero_mismatches relay_restored_backup
    LIBS knit_relay
    TIMEOUT 180)
  target_compile_definitions(test_check_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>")
  add_dependencies(test_check_it sync-relay sync-agent)
endif()
