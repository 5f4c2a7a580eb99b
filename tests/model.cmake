# The model-based randomized test (tests/model/): random schemas, replicas
# written by plain SQL, copies, joiners, faults, synced through the relay
# store and checked against a reference model.  One CTest case per feature
# group, so a defect shows under the name of what it needs; "long" (not
# registered) is the long run: KNIT_CASES=200000 test_model long.
# migrations, triggers, upgrades: devices upgrading at random moments through
# a random sequence of migrations (ADD COLUMN, rebuilds, stricter columns, a
# new table), app triggers (audit, counter, FTS5), and both together.
knit_test(model
  SOURCES model/test_model.c
  CASES basic orset constraints keys idents alter copy join delivery faults ns all
        migrations triggers upgrades
  LIBS knit_relay
  TIMEOUT 240)

# CI runs the model with fixed seeds, so a red run is always reproducible and
# never depends on the draw; new seeds are explored by the long run
# (KNIT_SEED unset) and by setting KNIT_MODEL_SEED when running ctest.
if(DEFINED ENV{KNIT_MODEL_SEED})
  set(_model_seed $ENV{KNIT_MODEL_SEED})
else()
  set(_model_seed 20261202)
endif()
foreach(c basic orset constraints keys idents alter copy join delivery faults ns all
          migrations triggers upgrades)
  set_tests_properties(model.${c} PROPERTIES ENVIRONMENT "KNIT_SEED=${_model_seed}")
endforeach()
