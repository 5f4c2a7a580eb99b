# Tokens from an identity provider: JWKS parsing and RS256/ES256 checks
# (transport/relay/jwk.h, knit_jwt_verify_keys) against RFC 7515's vectors
# and tokens the test signs itself.
knit_test(jwks
  SOURCES unit/test_jwks.c
  CASES rs256_vector es256_vector rs256_hash_compared claims_checked algorithm_swaps
        jwks_refusals ec_short_coordinate
  LIBS knit_relay)
target_link_libraries(test_jwks PRIVATE knit::bearssl)

# End to end: keys and tokens from Debian's python3-jwt, the real relay
# with --jwks-file or --jwks-url (served by jwks_server.py on loopback),
# --issuer and --authorized-party, the real agent.
if(TARGET sync-relay AND TARGET sync-agent)
  knit_test(jwks_it
    SOURCES integration/test_jwks_it.c integration/sync_util.c integration/wire_client.c
    CASES rs256_and_es256_sync claims_refused rotation_reloads url_accepted url_rotation
          url_down url_stalled url_cooldown url_shutdown_waiting
    LIBS knit_relay
    TIMEOUT 120)
  target_compile_definitions(test_jwks_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>"
    JWT_MINT_PATH="${CMAKE_CURRENT_SOURCE_DIR}/integration/jwt_mint.py"
    JWKS_SERVER_PATH="${CMAKE_CURRENT_SOURCE_DIR}/integration/jwks_server.py")
  add_dependencies(test_jwks_it sync-relay sync-agent)
endif()
