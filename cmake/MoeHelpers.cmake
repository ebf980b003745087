# moe_add_test(NAME <name> SOURCES <files...> LABELS <labels...> [LIBS <targets...>]
#              [GPU_TESTS <gtest filter>])
# One GoogleTest executable; each TEST() becomes its own ctest entry carrying the labels.
# GPU_TESTS: the tests matching this filter (e.g. "*Cuda", the CUDA instances of a suite run on
# every backend) carry the label "gpu" as well.
# Labels in use: unit, ops, model, tokenizer, reference, metrics, slow, gpu.
function(moe_add_test)
  cmake_parse_arguments(T "" "NAME;GPU_TESTS" "SOURCES;LABELS;LIBS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  # Tests reach the library's internals (src/) through moe_internal, and each other's helpers
  # through tests/.
  target_link_libraries(${T_NAME} PRIVATE moe_lib moe_internal GTest::gtest GTest::gtest_main ${T_LIBS})
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_compile_definitions(${T_NAME} PRIVATE
    MOE_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    MOE_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data")
  include(GoogleTest)
  if(T_GPU_TESTS)
    gtest_discover_tests(${T_NAME} TEST_FILTER "-${T_GPU_TESTS}" PROPERTIES LABELS "${T_LABELS}" DISCOVERY_TIMEOUT 60)
    gtest_discover_tests(${T_NAME} TEST_FILTER "${T_GPU_TESTS}" TEST_LIST ${T_NAME}_GPU_TESTS
                         PROPERTIES LABELS "gpu" DISCOVERY_TIMEOUT 60)
    # gtest_discover_tests flattens a list-valued property (LABELS "ops;gpu" arrives as LABELS ops gpu),
    # so a ctest include file run after its own gives those tests both labels.
    set(labels_file ${CMAKE_CURRENT_BINARY_DIR}/${T_NAME}_gpu_labels.cmake)
    file(WRITE ${labels_file} "if(${T_NAME}_GPU_TESTS)\n"
                              "  set_tests_properties(\${${T_NAME}_GPU_TESTS} PROPERTIES LABELS \"${T_LABELS};gpu\")\n"
                              "endif()\n")
    set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${labels_file})
  else()
    gtest_discover_tests(${T_NAME} PROPERTIES LABELS "${T_LABELS}" DISCOVERY_TIMEOUT 60)
  endif()
endfunction()
