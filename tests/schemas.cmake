# Schema versions across devices (issue 15, item 4): HELLO's schema field,
# the relay's record of which schema each device runs, and what
# sync-inspect shows of it.  Unit cases drive the codec, the client engine
# and the store directly; integration cases run the real sync-relay,
# sync-agent and sync-inspect on 127.0.0.1.
knit_test(schemas_unit
  SOURCES unit/test_schemas_unit.c
  CASES fingerprint_canonical hello_schema_roundtrip hello_schema_encoder_refuses
        hello_schema_malformed hello_schema_oversize client_sends_schema
        store_devices store_upgrade_v2
  LIBS knit_relay)

if(TARGET sync-relay AND TARGET sync-agent AND TARGET sync-inspect)
  knit_test(schemas_it
    SOURCES integration/test_schemas_it.c integration/sync_util.c integration/wire_client.c
    CASES two_schemas_then_one bad_schema_refused
    LIBS knit_relay
    TIMEOUT 180)
  target_compile_definitions(test_schemas_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>"
    SYNC_INSPECT_PATH="$<TARGET_FILE:sync-inspect>")
  add_dependencies(test_schemas_it sync-relay sync-agent sync-inspect)
endif()
