# Organization namespaces with roles, end to end: a real relay with JWKS
# and signed membership webhooks, real sync-agent replicas whose table names
# the column that selects each row's namespace.
if(TARGET sync-relay AND TARGET sync-agent)
  knit_test(org_it
    SOURCES integration/test_org_it.c integration/sync_util.c integration/idp_util.c
    CASES viewer_rolled_back move_between webhook_grants
    LIBS knit_relay
    TIMEOUT 180)
  target_compile_definitions(test_org_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>"
    JWT_MINT_PATH="${CMAKE_CURRENT_SOURCE_DIR}/integration/jwt_mint.py")
  add_dependencies(test_org_it sync-relay sync-agent)
endif()
