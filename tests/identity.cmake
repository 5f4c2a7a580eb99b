# A replica's identity: copies and restored backups that take a new site and
# still push what the original had not had acknowledged, one account per
# replica file (C API, and the real sync-agent against a real relay), and
# SQL built for very long table and column names.
knit_test(identity SOURCES runtime/test_identity.c LIBS knit_runtime knit_crdt
  CASES copy_before_sync_pushes_all copy_pushes_only_unacked original_and_copy_converge
        copy_of_copy copy_orset_converges account_refuses_other_user
        account_sign_in_then_other_user erase_account_removes_rows long_identifiers)

if(TARGET sync-relay AND TARGET sync-agent)
  knit_test(accounts_it
    SOURCES integration/test_accounts_it.c integration/sync_util.c
    CASES second_account_refused second_account_run_exits
    LIBS knit_relay
    TIMEOUT 120)
  target_compile_definitions(test_accounts_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>")
  add_dependencies(test_accounts_it sync-relay sync-agent)
endif()
