# Rejected writes roll back (runtime/reject.c): the replica's half of a
# refusal, and the end-to-end test with a real relay and agent.
knit_test(reject SOURCES runtime/test_reject.c LIBS knit_runtime knit_crdt
  CASES insert_refused_disappears update_reverts_to_relay_value superseded_write_left_alone
        table_exists_before_any_refusal follower_told)

if(TARGET sync-relay AND TARGET sync-agent AND TARGET sync-inspect)
  knit_test(reject_it
    SOURCES integration/test_reject_it.c integration/sync_util.c
    CASES clock_skew_rolled_back
    LIBS knit_relay
    TIMEOUT 120)
  target_compile_definitions(test_reject_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>"
    SYNC_INSPECT_PATH="$<TARGET_FILE:sync-inspect>")
  add_dependencies(test_reject_it sync-relay sync-agent sync-inspect)
endif()
