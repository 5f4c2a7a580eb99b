# The sync client: its I/O-free protocol engine (unit), the real sync-agent
# and sync-relay programs over loopback (integration), and the sync
# benchmark.
knit_test(proto_client
  SOURCES unit/test_proto_client.c
  CASES handshake push_and_ack ack_in_order answers_out_of_order reject_permanent
        reject_clock_skew_reported
        reject_too_big_splits big_unit_pieces window_bounds_inflight ungranted_ceiling
        deltas_and_gaps apply_failure_reconnects ping_pong_idle handshake_timeout
        backoff_full_jitter relay_error_fatal protocol_violations stop_drains
        watermark_saved_lazily reconnect_rereads alloc_failures claim_in_hello
        claim_moves_before_reads claim_move_failure_claims_again claim_refused
        reject_changes_rolled_back reject_rollback_failure_halts busy_replica_never_blocks
  TIMEOUT 60
  LIBS knit_static)

if(TARGET sync-relay AND TARGET sync-agent)
  # The integration tests and the bench make tokens and read relay stores,
  # so they link the relay library too.
  knit_test(sync_it
    SOURCES integration/test_sync_it.c integration/sync_util.c
    CASES live_two_agents conflicts_converge transaction_units offline_catch_up
          relay_sigkill agent_sigkill_applying anonymous_home once_failures
          sign_in_claims_anonymous
    LIBS knit_relay
    TIMEOUT 120)
  target_compile_definitions(test_sync_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>")
  add_dependencies(test_sync_it sync-relay sync-agent)
  knit_bench(bench_sync SOURCES bench/bench_sync.c integration/sync_util.c LIBS knit_relay)
  target_compile_definitions(bench_sync PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>"
    TLS_CERTS_SH="${CMAKE_CURRENT_SOURCE_DIR}/integration/tls_certs.sh")
  add_dependencies(bench_sync sync-relay sync-agent)
endif()
