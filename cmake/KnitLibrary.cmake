# libknit: what apps embed, as one library built both ways: knit_static
# (libknit.a, what tests and the programs link) and knit (libknit.so).  It
# holds the replica runtime, the wire codec and framing, the byte streams and
# the sync client; no relay code (that is knit_relay, transport/relay/).  Both are made from the same object libraries, so every
# source is compiled once.  The CRDT core (knit_crdt, itself a static
# library) is linked in: knit_static carries it as a PUBLIC dependency, the
# shared library absorbs it whole.  Also install rules, a pkg-config file and
# a CMake package config.
set(KNIT_PUBLIC_INCLUDES
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/crdt>
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/runtime>
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/transport/wire>
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/transport/stream>
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/transport/client>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/knit>)
# libcurl carries the long-polling client stream (transport/stream/lp_client.c).
set(KNIT_DEPS knit::sqlite3 knit::uv knit::cbor knit::bearssl knit::wslay knit::http_parser
  knit::curl)
set(KNIT_OBJECTS $<TARGET_OBJECTS:knit_runtime> $<TARGET_OBJECTS:knit_wire>
  $<TARGET_OBJECTS:knit_stream> $<TARGET_OBJECTS:knit_client>)

add_library(knit_static STATIC ${KNIT_OBJECTS})
target_include_directories(knit_static PUBLIC ${KNIT_PUBLIC_INCLUDES})
target_link_libraries(knit_static PUBLIC knit_crdt ${KNIT_DEPS})
set_target_properties(knit_static PROPERTIES OUTPUT_NAME knit POSITION_INDEPENDENT_CODE ON)

# The installed headers are libknit's whole API: the shared library exports
# exactly the KNIT_EXTERN functions they declare (a version script made from
# them at configure time), nothing of the headers that are not installed.
# tests/build.cmake checks this with nm -D.
set(KNIT_INSTALLED_HEADERS
  ${PROJECT_SOURCE_DIR}/runtime/knit.h
  ${PROJECT_SOURCE_DIR}/crdt/knit_errors.h
  ${PROJECT_SOURCE_DIR}/crdt/hlc.h
  ${PROJECT_SOURCE_DIR}/crdt/value.h
  ${PROJECT_SOURCE_DIR}/crdt/digest.h
  ${PROJECT_SOURCE_DIR}/transport/client/knit_sync.h)
set(KNIT_API_NAMES "")
foreach(h ${KNIT_INSTALLED_HEADERS})
  file(READ ${h} _text)
  string(REGEX MATCHALL "KNIT_EXTERN[^(;]*[ *]knit_[a-z0-9_]+[ ]*\\(" _decls "${_text}")
  foreach(d ${_decls})
    string(REGEX MATCH "knit_[a-z0-9_]+[ ]*\\($" _name "${d}")
    string(REGEX REPLACE "[ ]*\\($" "" _name "${_name}")
    list(APPEND KNIT_API_NAMES ${_name})
  endforeach()
endforeach()
list(REMOVE_DUPLICATES KNIT_API_NAMES)
list(SORT KNIT_API_NAMES)
string(REPLACE ";" ";\n    " _globals "${KNIT_API_NAMES}")
file(WRITE ${PROJECT_BINARY_DIR}/knit.map "{\n  global:\n    ${_globals};\n  local: *;\n};\n")
string(REPLACE ";" "\n" _list "${KNIT_API_NAMES}")
file(WRITE ${PROJECT_BINARY_DIR}/knit_api.txt "${_list}\n")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${KNIT_INSTALLED_HEADERS})

add_library(knit SHARED ${KNIT_OBJECTS})
target_include_directories(knit PUBLIC ${KNIT_PUBLIC_INCLUDES})
# The CRDT core goes inside the shared library whole (its objects have
# hidden visibility except the exported API); the rest are shared deps.
if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.24)
  target_link_libraries(knit PRIVATE $<LINK_LIBRARY:WHOLE_ARCHIVE,knit_crdt>)
else()
  target_link_libraries(knit PRIVATE -Wl,--whole-archive knit_crdt -Wl,--no-whole-archive)
endif()
target_link_libraries(knit PUBLIC ${KNIT_DEPS})
set_target_properties(knit PROPERTIES
  VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}
  LINK_DEPENDS ${PROJECT_BINARY_DIR}/knit.map)
target_link_options(knit PRIVATE -Wl,--version-script=${PROJECT_BINARY_DIR}/knit.map)
if(KNIT_SANITIZE)
  target_link_options(knit PRIVATE -fsanitize=${KNIT_SANITIZE})
endif()

# Installation: the library both ways, its public API (knit.h and the crdt
# headers it includes, knit_sync.h for the sync client), pkg-config and
# CMake package files.  Nothing of the relay is installed.
# libknit.a does not contain the CRDT core; libknit_crdt.a is installed
# beside it (pkg-config --static lists it).
install(TARGETS knit knit_static knit_crdt
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${KNIT_INSTALLED_HEADERS} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/knit)

# Both files find the prefix relative to where they are installed, so an
# installed tree can be moved.
set(KNIT_PC_REQUIRES "sqlite3 libuv libcbor libcurl")
file(RELATIVE_PATH KNIT_PC_UP ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig
     ${CMAKE_INSTALL_PREFIX})
file(RELATIVE_PATH KNIT_CMAKE_UP ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/cmake/knit
     ${CMAKE_INSTALL_PREFIX})
configure_file(${CMAKE_CURRENT_LIST_DIR}/knit.pc.in ${PROJECT_BINARY_DIR}/knit.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/knit.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

include(CMakePackageConfigHelpers)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/knitConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
file(WRITE ${PROJECT_BINARY_DIR}/knitConfig.cmake
"# knit's CMake package: find_package(knit) gives knit::knit (shared).
include(CMakeFindDependencyMacro)
get_filename_component(_knit_prefix \"\${CMAKE_CURRENT_LIST_DIR}/${KNIT_CMAKE_UP}\" ABSOLUTE)
if(NOT TARGET knit::knit)
  add_library(knit::knit SHARED IMPORTED)
  find_library(_knit_lib knit PATHS \"\${_knit_prefix}/${CMAKE_INSTALL_LIBDIR}\" NO_DEFAULT_PATH)
  set_target_properties(knit::knit PROPERTIES
    IMPORTED_LOCATION \"\${_knit_lib}\"
    INTERFACE_INCLUDE_DIRECTORIES \"\${_knit_prefix}/${CMAKE_INSTALL_INCLUDEDIR}/knit\")
endif()
")
install(FILES ${PROJECT_BINARY_DIR}/knitConfig.cmake ${PROJECT_BINARY_DIR}/knitConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/knit)
