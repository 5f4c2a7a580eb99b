# TLS (BearSSL) end to end: the real sync-relay with --tls-cert/--tls-key and
# sync-agent over knits:// on loopback, with certificates made at test time
# by the openssl command-line tool (integration/tls_certs.sh).
find_program(KNIT_OPENSSL openssl)
if(TARGET sync-relay AND TARGET sync-agent AND KNIT_OPENSSL)
  knit_test(tls_it
    SOURCES integration/test_tls_it.c integration/sync_util.c
    CASES chain_syncs ec_key_syncs refuses_untrusted refuses_expired refuses_wrong_name
          refuses_without_ca_file s_client_handshake sighup_reload cleartext_warning https_surface
    LIBS knit_relay
    TIMEOUT 120)
  target_compile_definitions(test_tls_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>"
    TLS_CERTS_SH="${CMAKE_CURRENT_SOURCE_DIR}/integration/tls_certs.sh")
  add_dependencies(test_tls_it sync-relay sync-agent)
elseif(NOT KNIT_OPENSSL)
  message(STATUS "openssl not found: the TLS tests are not built (apt-get install openssl)")
endif()
