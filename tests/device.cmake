# One device, many processes: sync-agent processes on one replica elect one
# leader that alone holds the relay connection, fail over on SIGKILL, and
# `sync-agent watch` reports changes; and the benchmark of change
# notifications across processes.
find_package(Threads REQUIRED)
if(TARGET sync-relay AND TARGET sync-agent)
  knit_test(device_it
    SOURCES integration/test_device_it.c integration/sync_util.c
    CASES two_agents_one_leader leader_sigkill_failover kill_leaders_stress watch_json
          keys_local_remote
    LIBS knit_relay Threads::Threads
    TIMEOUT 120)
  target_compile_definitions(test_device_it PRIVATE
    SYNC_RELAY_PATH="$<TARGET_FILE:sync-relay>"
    SYNC_AGENT_PATH="$<TARGET_FILE:sync-agent>")
  add_dependencies(test_device_it sync-relay sync-agent)
endif()
knit_bench(bench_watch SOURCES bench/bench_watch.c LIBS knit_static m)
