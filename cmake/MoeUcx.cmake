# The UCX switch (the UCX KV transport of disaggregated serving, src/disagg/ucx_transport.cc).
# AUTO: on when pkg-config finds ucx (Debian: libucx-dev); ON: required; OFF: left out. Without
# it the build still works: src/disagg/ucx_transport_stub.cc answers ucx_available() == false
# and make_ucx_transport returns kUnimplemented. Sets MOE_UCX_ENABLED. Needs PkgConfig.
set(MOE_UCX "AUTO" CACHE STRING "Build the UCX KV transport: AUTO (when UCX is found), ON, OFF")
set_property(CACHE MOE_UCX PROPERTY STRINGS AUTO ON OFF)
set(MOE_UCX_ENABLED OFF)
if(NOT MOE_UCX STREQUAL "OFF")
  if(MOE_UCX STREQUAL "ON")
    pkg_check_modules(UCX REQUIRED IMPORTED_TARGET ucx)
  else()
    pkg_check_modules(UCX IMPORTED_TARGET ucx)
  endif()
  if(UCX_FOUND)
    set(MOE_UCX_ENABLED ON)
    message(STATUS "moeserve: UCX ${UCX_VERSION} found, building the UCX KV transport")
  else()
    message(STATUS "moeserve: UCX not found, leaving out the UCX KV transport (disaggregated serving across "
                   "processes); install libucx-dev or set MOE_UCX=OFF to silence this")
  endif()
else()
  message(STATUS "moeserve: MOE_UCX=OFF, leaving out the UCX KV transport")
endif()
