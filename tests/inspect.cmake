# sync-inspect: the CBOR renderer behind `decode` (unit) and the program
# itself, run as a child process on files in a temporary directory.

knit_test(cbor_diag
  SOURCES unit/test_cbor_diag.c
  CASES uint_items negint_items bytes_items text_items array_items map_items
        map_keys_json tag_items simple_items float_items indefinite_items
        nesting_limit err_truncated err_oversized err_reserved_ai err_indefinite
        err_bad_utf8 err_break err_trailing err_simple bad_args alloc_failure
        prop_valid_items prop_modes_agree
  LIBS knit_cbordiag)

knit_test(inspect_cli
  SOURCES integration/test_inspect_cli.c ${PROJECT_SOURCE_DIR}/cli/inspect_util.c
  CASES global_help command_help version no_args unknown_command unknown_option
        missing_file decode_raw_json decode_frame_diag decode_stdin decode_malformed
        decode_frame_errors decode_forced_kind decode_conflicting_options
        decode_empty decode_oversize json_string
  TIMEOUT 60
  LIBS knit_crdt)
target_include_directories(test_inspect_cli PRIVATE ${PROJECT_SOURCE_DIR}/cli)
target_compile_definitions(test_inspect_cli PRIVATE
  SYNC_INSPECT_PATH="$<TARGET_FILE:sync-inspect>")
add_dependencies(test_inspect_cli sync-inspect)
