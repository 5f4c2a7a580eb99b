# The relay's HTTP surface (--http-listen): /healthz and /metrics through
# curl and promtool, malformed and hostile requests over raw sockets, and
# WebSocket sessions through python3-websockets (integration/ws_client.py).
if(TARGET sync-relay)
  knit_test(http_it
    SOURCES integration/test_http_it.c integration/http_harness.c integration/wire_client.c
    CASES routes metrics_move promtool malformed keep_alive slowloris websocket
          websocket_refusals
    LIBS knit_relay
    TIMEOUT 120)
  target_compile_definitions(test_http_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    WS_CLIENT_PATH="${CMAKE_CURRENT_SOURCE_DIR}/integration/ws_client.py")
  add_dependencies(test_http_it sync-relay)
  # promtool comes with Debian's prometheus package; without it that case
  # says so and is reported as skipped.
  set_tests_properties(http_it.promtool PROPERTIES SKIP_RETURN_CODE 77)
endif()

# HTTP long-polling sessions (/v1/lp, PROTOCOL.md section 1.3) over raw
# sockets, with the protocol bytes made and checked by knit's codec.
if(TARGET sync-relay)
  knit_test(http_longpoll_it
    SOURCES integration/test_longpoll_it.c integration/http_harness.c integration/wire_client.c
    CASES session refusals expiry shutdown_waiting bounded backpressure
    LIBS knit_relay
    TIMEOUT 120)
  target_compile_definitions(test_http_longpoll_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>")
  add_dependencies(test_http_longpoll_it sync-relay)
endif()
