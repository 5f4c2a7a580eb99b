# The sync client over HTTP long-polling (transport/stream/lp_client.c) and
# its automatic fallback (transport/client/client.c, note 7) end to end: the
# real sync-relay with --http-listen and sync-agent on loopback, with a
# fault-injecting TCP proxy (a thread of the test) that kills, stalls and
# cuts; also the WebSocket client's close frame, seen on the wire, and
# long-polling over HTTPS with certificates made at test time by the openssl
# command-line tool (integration/tls_certs.sh; those cases need openssl).
find_package(Threads REQUIRED)
find_program(KNIT_OPENSSL openssl)
if(TARGET sync-relay AND TARGET sync-agent)
  set(lp_https_cases)
  if(KNIT_OPENSSL)
    set(lp_https_cases lp_https_syncs lp_https_untrusted lp_https_refusals)
  endif()
  knit_test(lp_client_it
    SOURCES integration/test_lp_client_it.c integration/sync_util.c
    CASES lp_syncs fallback_and_return get_cut status_transport ws_close_frame ${lp_https_cases}
          lp_usage
    LIBS knit_relay Threads::Threads
    TIMEOUT 120)
  target_compile_definitions(test_lp_client_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>"
    TLS_CERTS_SH="${CMAKE_CURRENT_SOURCE_DIR}/integration/tls_certs.sh")
  add_dependencies(test_lp_client_it sync-relay sync-agent)
endif()
