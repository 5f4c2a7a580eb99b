# OR-set columns across stamping, changes out, apply and the relay store:
# one regression case per defect the model-based test found.
knit_test(orset_sync SOURCES runtime/test_orset_sync.c LIBS knit_runtime knit_crdt
  CASES new_life_forgets_earlier_life_state)
