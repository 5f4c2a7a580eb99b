# knit_apply under the schemas users write: one write per row per batch,
# set-aside rows, recovery, rollback of in-memory state, odd identifiers.
knit_test(apply SOURCES runtime/test_apply.c LIBS knit_runtime knit_crdt
  CASES notnull_liveness_and_value_in_different_units notnull_split_across_pages_recovers
        refused_later_life_then_local_insert_survives
        stricter_schema_sets_rows_aside poisoned_set_state_set_aside_alone
        cells_of_unknown_columns_wait_for_migration rollback_forgets_interned_sites
        set_aside_orset_state_under_oom
        long_and_quoted_identifiers app_triggers_writing_tracked_tables
        refused_row_not_retried_in_same_apply refused_again_not_retried_in_same_apply)
