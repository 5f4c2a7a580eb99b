# The relay: its store, credentials and protocol engine (unit), and the real
# sync-relay program over loopback (integration).
knit_test(relay_store
  SOURCES unit/test_relay_store.c
  CASES lww_rules orset_rules replay_harmless catch_up_once digest_independent
        digest_matches_replica
        pushes_commute group_atomic durable_reopen listing alloc_failures refuses_other_versions
        erase_namespace claim_merges_new_cells_only erase_account_physical
        erase_account_claimed site_id_kept claim_sealed erase_tombstone
  LIBS knit_relay)

knit_test(auth
  SOURCES unit/test_auth.c
  CASES jwt_valid jwt_expired jwt_not_yet_valid jwt_forged jwt_alg_none jwt_wrong_alg
        jwt_sub jwt_malformed jwt_mint_roundtrip anon_credentials grants org_roles
  LIBS knit_relay)

knit_test(proto_server
  SOURCES unit/test_proto_server.c
  CASES answers_in_order commit_failure token_expiry timeouts slow_consumer_bounded
        malformed_isolated shutdown_commits claim_seals erased_refused no_echo
  LIBS knit_relay)

if(TARGET sync-relay)
  knit_test(relay_it
    SOURCES integration/test_relay_it.c integration/wire_client.c
    CASES auth_refusals malformed_inputs future_stamps live_fanout catch_up_once
          slow_consumer sigkill_durability sigterm_clean mint_token idle_timeout
          claim_merge big_frames_released trickle_not_activity per_address_cap
          anon_session_cap anon_registration_rate claim_sealed
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

# The identity index (relay_store.h knit_relay_store_identify) and the
# relay's own rows (sysrows.h).
knit_test(ident_index
  SOURCES unit/test_ident_index.c
  CASES rules provisional_relinked profile_order erase_forgets memberships upgrade_from_3
        rows_merge
  LIBS knit_relay)

# One account per person, profile and activity rows, end to end: the real
# relay (--jwks-file, webhooks), tokens from python3-jwt, real agents.
if(TARGET sync-relay AND TARGET sync-agent)
  knit_test(identity_it
    SOURCES integration/test_identity_it.c integration/sync_util.c integration/idp_util.c
    CASES profile_without_webhooks sign_in_then_webhooks webhook_then_sign_in concurrent
          profile_updates activity_live memberships
    LIBS knit_relay
    TIMEOUT 180)
  target_compile_definitions(test_identity_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>"
    JWT_MINT_PATH="${CMAKE_CURRENT_SOURCE_DIR}/integration/jwt_mint.py")
  add_dependencies(test_identity_it sync-relay sync-agent)
endif()

# The PostgreSQL store (transport/relay/store_pg.h) against a real server
# that each case starts (initdb in a temp dir, a Unix socket there, run as
# nobody under root) and stops; skipped (77) without the server binaries.
if(TARGET knit_relay_pg AND TARGET sync-relay AND TARGET sync-agent AND TARGET sync-inspect)
  knit_test(relay_pg
    SOURCES integration/test_relay_pg.c integration/pg_fixture.c integration/sync_util.c integration/idp_util.c
    CASES same_as_sqlite concurrent_gapless newer_schema_refused backend_ops agents_converge
          two_relays_fanout ingest_rate pg_restart_mid_push pg_stall ident_same_as_sqlite
          schema_upgrade reject_state identity_restart webhook_profile_pg
          webhook_erase_pg erase_cli_pg schema_upgrade_v2 inspect_cli_pg
    LIBS knit_relay_pg knit_relay PkgConfig::PC_pq Threads::Threads
    TIMEOUT 60)
  foreach(c same_as_sqlite concurrent_gapless newer_schema_refused backend_ops agents_converge
          two_relays_fanout ingest_rate pg_restart_mid_push pg_stall ident_same_as_sqlite
          schema_upgrade reject_state identity_restart webhook_profile_pg
          webhook_erase_pg erase_cli_pg schema_upgrade_v2 inspect_cli_pg)
    set_tests_properties(relay_pg.${c} PROPERTIES SKIP_RETURN_CODE 77)
  endforeach()
  # PostgreSQL restarted and stalled under a relay: more processes, longer.
  set_tests_properties(relay_pg.pg_restart_mid_push relay_pg.pg_stall relay_pg.reject_state
                       relay_pg.identity_restart relay_pg.webhook_profile_pg
                       relay_pg.webhook_erase_pg PROPERTIES TIMEOUT 90)
  target_compile_definitions(test_relay_pg PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>"
    JWT_MINT_PATH="${CMAKE_CURRENT_SOURCE_DIR}/integration/jwt_mint.py"
    SYNC_INSPECT_PATH="$<TARGET_FILE:sync-inspect>")
  add_dependencies(test_relay_pg sync-relay sync-agent sync-inspect)
endif()
