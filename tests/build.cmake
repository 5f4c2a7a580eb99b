# The library as apps get it: libknit.so exports only its documented API
# (the installed headers), and an out-of-tree program builds against the
# installed CMake package and pkg-config file and runs.
add_test(NAME build.exports
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/build/exports.sh $<TARGET_FILE:knit>
          ${PROJECT_BINARY_DIR}/knit_api.txt)
add_test(NAME build.package
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/build/package.sh ${PROJECT_BINARY_DIR}
          ${CMAKE_CURRENT_SOURCE_DIR}/build/consumer)
set_tests_properties(build.exports build.package PROPERTIES TIMEOUT 120)
if(KNIT_SANITIZE)
  # A sanitized libknit needs its runtime in the program that loads it.
  set_tests_properties(build.package PROPERTIES
    ENVIRONMENT "CFLAGS=-fsanitize=${KNIT_SANITIZE};ASAN_OPTIONS=detect_leaks=0")
endif()

# .clang-format is the house format; CI fails on a file that drifts from it.
add_test(NAME build.format COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/build/format.sh ${PROJECT_SOURCE_DIR})

# The files of a folder call each other in no circle: each object uses only
# symbols of objects listed before it in its CMake source list (bottom up).
foreach(lib knit_crdt knit_runtime knit_wire)
  add_test(NAME build.layers_${lib}
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/build/layers.sh $<TARGET_OBJECTS:${lib}>
    COMMAND_EXPAND_LISTS)
endforeach()
