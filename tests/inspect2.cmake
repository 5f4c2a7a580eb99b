# sync-inspect's replica and relay commands (info, why, pending, changes,
# diff, verify, digest, relay), run as a child process on replicas and relay
# stores the tests build with fixed clocks.  test_inspect_replica checks
# golden outputs and JSON; test_inspect_damage plants damage in copies and
# checks verify and diff find it, and covers bad files, locks and a writer
# working on the file meanwhile.

foreach(prog replica damage)
  if(prog STREQUAL "replica")
    set(cases help_each info_golden info_json info_unstamped why_row_golden
              why_cell_golden why_deleted_and_composite why_not_found why_json
              why_key_errors pending_golden changes_golden changes_json diff_golden
              converged_agree verify_ok digest_relay_lww digest_relay_orset
              digest_forms relay_golden)
  else()
    set(cases verify_liveness_lost verify_orset_behind_back verify_orphans
              verify_clock_and_sites verify_missing_tables verify_integrity
              diff_planted diff_schema bad_files locked_rollback locked_wal_exclusive
              concurrent_writer never_modified text_is_safe)
  endif()
  knit_test(inspect_${prog}
    SOURCES integration/test_inspect_${prog}.c
    CASES ${cases}
    TIMEOUT 120
    LIBS knit_relay_store knit_runtime knit_crdt)
  target_compile_definitions(test_inspect_${prog} PRIVATE
    SYNC_INSPECT_PATH="$<TARGET_FILE:sync-inspect>")
  add_dependencies(test_inspect_${prog} sync-inspect)
endforeach()
