# sync-agent: the sidecar that keeps a replica in sync with a relay
# (cli/sync_agent.c, with cli/cli_args.c), a thin main over the sync client (transport/client/client.c,
# transport/client/proto_client.c) in libknit.
add_executable(sync-agent ${CMAKE_CURRENT_LIST_DIR}/sync_agent.c ${CMAKE_CURRENT_LIST_DIR}/cli_args.c)
target_link_libraries(sync-agent PRIVATE knit_static)
knit_target_defaults(sync-agent)
install(TARGETS sync-agent RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
