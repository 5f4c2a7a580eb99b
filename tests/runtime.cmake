# The replica (runtime/): opening, tracking, capture, stamping, changes out,
# apply, convergence, crash safety.  Tests use real SQLite files in /tmp.
knit_test(replica SOURCES runtime/test_replica.c LIBS knit_runtime knit_crdt
  CASES open_create_reopen open_refuses_garbage_unchanged open_refuses_newer_metadata
        copy_takes_new_site track_refusals track_backfills_and_retracks
        capture_plain_connection capture_sqlite3_shell orset_refuses_non_arrays
        stamp_orders_ops_on_one_row stamp_fold_matches_model changes_since_matches_model
        stamp_splits_long_log
        open_keeps_other_connections_locks notify_other_connections
        poll_needs_no_write_lock)
knit_test(merge SOURCES runtime/test_merge.c LIBS knit_runtime knit_crdt
  CASES lww_later_write_wins lww_tie_breaks_on_site
        delete_beats_concurrent_update_then_resurrect orset_concurrent_add_remove
        keys_and_value_types refuses_future_stamps applied_changes_not_captured
        orset_local_ops_survive_remote_merge move_namespace_on_sign_in app_triggers_fire_on_apply
        allocation_failures
        random_three_replicas
        random_through_hub coalesced_units)
knit_test(crash SOURCES runtime/test_crash.c LIBS knit_runtime knit_crdt
  CASES sigkill_while_writing_stamping_applying)
knit_bench(bench_replica SOURCES bench/bench_replica.c LIBS knit_runtime knit_crdt)
# The map workload of PERFORMANCE.md (issue figures): A writes, B catches up,
# both conflict; knit against plain SQLite in the same run.
knit_bench(bench_map SOURCES bench/bench_map.c LIBS knit_static)
knit_test(faults SOURCES runtime/test_faults.c LIBS knit_runtime knit_crdt
  CASES disk_fails_during_stamp_and_apply)
