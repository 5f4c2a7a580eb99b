# The sync client over a WebSocket (transport/stream/ws_client.c) end to
# end: the real sync-relay with --http-listen (plain, and HTTPS with
# certificates from integration/tls_certs.sh) and sync-agent --relay ws://
# and wss:// on loopback, plus a forked fake relay for the answers a real
# one never gives.  curl reads the relay's metrics.
find_program(KNIT_OPENSSL openssl)
find_program(KNIT_CURL curl)
if(TARGET sync-relay AND TARGET sync-agent AND KNIT_OPENSSL AND KNIT_CURL)
  knit_test(ws_client_it
    SOURCES integration/test_ws_client_it.c integration/sync_util.c
    CASES ws_syncs wss_syncs not_http not_found bad_accept text_message url_usage
    LIBS knit_relay
    TIMEOUT 120)
  target_compile_definitions(test_ws_client_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>"
    TLS_CERTS_SH="${CMAKE_CURRENT_SOURCE_DIR}/integration/tls_certs.sh")
  add_dependencies(test_ws_client_it sync-relay sync-agent)
elseif(NOT KNIT_OPENSSL OR NOT KNIT_CURL)
  message(STATUS "openssl or curl not found: the WebSocket client tests are not built")
endif()
