# One LWW rule: the replica's apply and the relay store's SQL merge agree
# with crdt/lww.h's knit_lww_merge on random histories (a property).
knit_test(lww_paths SOURCES unit/test_lww_paths.c CASES lww_paths_agree LIBS knit_relay)
