# Rows whose column selects their namespace (knit_track "org_id:ns"), moved
# between namespaces: replicas and a relay store against a reference model.
knit_test(nscol SOURCES unit/test_nscol.c CASES spec_refusals sequential concurrent alive_in_two
  LIBS knit_relay)
# What the namespace column costs against plain SQLite (PERFORMANCE.md).
knit_bench(bench_nscol SOURCES bench/bench_nscol.c LIBS knit_static)
