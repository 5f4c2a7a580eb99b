# Tests and benchmark of the CRDT core (crdt/).  Property cases scale with
# KNIT_CASES_SCALE; KNIT_SEED reproduces a failure.
knit_test(crdt_hlc SOURCES unit/test_crdt_hlc.c LIBS knit_crdt
  CASES wall_backwards equal_walls counter_overflow ms_overflow recv_drift format_known
        format_vs_gmtime monotonic_property)
knit_test(crdt_value SOURCES unit/test_crdt_value.c LIBS knit_crdt knit::sqlite3 m
  CASES cmp_edges cmp_vs_sqlite canon canon_property roundtrip decode_corrupt varint)
knit_test(crdt_laws SOURCES unit/test_crdt_laws.c LIBS knit_crdt
  CASES lww_laws lww_cases cl_laws vv_laws vv_remap vv_alloc_fail)
knit_test(crdt_orset SOURCES unit/test_crdt_orset.c LIBS knit_crdt m
  CASES join_laws delta_group encode_roundtrip churn_bounded sequential_model add_wins
        cloud_gap json_out decode_strict remap canonical_numbering alloc_fail)
knit_test(crdt_digest SOURCES unit/test_crdt_digest.c LIBS knit_crdt
  CASES known_vectors fields_matter carry_wraps order_free)
knit_test(crdt_sim SOURCES unit/test_crdt_sim.c LIBS knit_crdt
  CASES converge converge_states)
knit_bench(bench_crdt SOURCES bench/bench_crdt.c LIBS knit_crdt)
