# sync-relay: the relay program (cli/sync_relay.c, with cli/cli_args.c), a thin main over the
# relay library (knit_relay, transport/relay/): store, engine, credentials and server.
add_executable(sync-relay ${CMAKE_CURRENT_LIST_DIR}/sync_relay.c ${CMAKE_CURRENT_LIST_DIR}/cli_args.c)
target_link_libraries(sync-relay PRIVATE knit_relay)
knit_target_defaults(sync-relay)
install(TARGETS sync-relay RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET knit_relay_pg)
  target_link_libraries(sync-relay PRIVATE knit_relay_pg)
endif()
