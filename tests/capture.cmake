# Capture and stamping as users meet them (runtime/track.c, stamp.c,
# verify.c): last writer wins by the time of the write, capture kept or
# refused across schema migrations, columns added on live replicas, names of
# any length.  Tests use real SQLite files in /tmp and plain connections.
knit_test(capture SOURCES runtime/test_capture.c LIBS knit_runtime knit_crdt
  CASES lww_time_of_write_wins lww_write_after_seen_stamp_wins
        stamp_between_write_time_and_tick
        rebuild_repaired_at_open rebuild_repaired_by_stamp rebuild_repaired_by_poll
        rebuild_repaired_by_track
        old_capture_upgraded v2_log_rows_keep_their_time update_of_key_columns
        add_column_keeps_capture rename_column_refused
        drop_column_refused rename_table_refused
        backfill_loses_to_real_writes backfill_after_receiving_early
        identifiers_any_length)
