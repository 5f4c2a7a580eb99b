# The relay: its store, credentials and protocol engine (unit), and the real
# sync-relay program over loopback (integration).
knit_test(relay_store
  SOURCES unit/test_relay_store.c
  CASES lww_rules orset_rules replay_harmless catch_up_once digest_independent
        digest_matches_replica
        pushes_commute group_atomic durable_reopen listing alloc_failures refuses_other_versions
        erase_namespace claim_merges_new_cells_only erase_account_physical
        erase_account_claimed site_id_kept
  LIBS knit_relay)

knit_test(auth
  SOURCES unit/test_auth.c
  CASES jwt_valid jwt_expired jwt_not_yet_valid jwt_forged jwt_alg_none jwt_wrong_alg
        jwt_sub jwt_malformed jwt_mint_roundtrip anon_credentials grants
  LIBS knit_relay)

knit_test(proto_server
  SOURCES unit/test_proto_server.c
  CASES answers_in_order commit_failure token_expiry timeouts slow_consumer_bounded
        malformed_isolated shutdown_commits
  LIBS knit_relay)

if(TARGET sync-relay)
  knit_test(relay_it
    SOURCES integration/test_relay_it.c integration/wire_client.c
    CASES auth_refusals malformed_inputs future_stamps live_fanout catch_up_once
          slow_consumer sigkill_durability sigterm_clean mint_token idle_timeout
          claim_merge big_frames_released trickle_not_activity per_address_cap
          anon_session_cap anon_registration_rate
    LIBS knit_relay
    TIMEOUT 120)
  target_compile_definitions(test_relay_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>")
  add_dependencies(test_relay_it sync-relay)
endif()

# The relay as an object on a test's own loop, with a real sync client and
# an authentication hook that answers from a timer.
knit_test(relay_obj
  SOURCES integration/test_relay_obj.c
  CASES hook_later_accepts hook_later_refuses
  LIBS knit_relay
  TIMEOUT 60)
