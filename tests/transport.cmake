# Transport: the wire codec and framing (transport/wire/codec.c, frame.c), and
# the codec benchmark.
knit_test(codec SOURCES unit/test_codec.c LIBS knit_static
  CASES roundtrip_messages roundtrip_batches values truncated trailing wrong_types
        bad_indexes structure limits version alloc_failures mutations_smoke reject_state
        check_messages)
knit_test(frame SOURCES unit/test_frame.c LIBS knit_static
  CASES whole bytewise chunks many oversized zero_length writer alloc_failure)
knit_bench(bench_codec SOURCES bench/bench_codec.c LIBS knit_static m)
# The consistency checker's bucket engine against real replicas.
knit_test(buckets SOURCES unit/test_buckets.c LIBS knit_static
  CASES matches_replica one_row_one_bucket only_filter)
