# The MPI switch (MpiComm, expert parallelism across CPU processes). AUTO: on when CMake finds
# an MPI C library (Debian: libopenmpi-dev); ON: required; OFF: left out. Without it the build
# still works: src/comm/mpi_comm_stub.cc answers mpi_available() == false and every MPI entry
# point returns kUnimplemented. Sets MOE_MPI_ENABLED and, for the tests, MPIEXEC_EXECUTABLE.
set(MOE_MPI "AUTO" CACHE STRING "Build MpiComm: AUTO (when MPI is found), ON, OFF")
set_property(CACHE MOE_MPI PROPERTY STRINGS AUTO ON OFF)
set(MOE_MPI_ENABLED OFF)
if(NOT MOE_MPI STREQUAL "OFF")
  # Only the C bindings: the C++ bindings were removed from the MPI standard.
  if(MOE_MPI STREQUAL "ON")
    find_package(MPI REQUIRED COMPONENTS C)
  else()
    find_package(MPI COMPONENTS C)
  endif()
  if(MPI_C_FOUND)
    set(MOE_MPI_ENABLED ON)
    message(STATUS "moeserve: MPI ${MPI_C_VERSION} found (${MPIEXEC_EXECUTABLE}), building MpiComm")
  else()
    message(STATUS "moeserve: MPI not found, leaving out MpiComm (expert parallelism across processes); "
                   "install libopenmpi-dev or set MOE_MPI=OFF to silence this")
  endif()
else()
  message(STATUS "moeserve: MOE_MPI=OFF, leaving out MpiComm")
endif()
