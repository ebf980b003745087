# moe_add_test(NAME <name> SOURCES <files...> LABELS <labels...> [LIBS <targets...>])
# One GoogleTest executable; each TEST() becomes its own ctest entry carrying the labels.
# Labels in use: unit, ops, model, tokenizer, reference, slow, gpu.
function(moe_add_test)
  cmake_parse_arguments(T "" "NAME" "SOURCES;LABELS;LIBS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  # Tests reach the library's internals (src/) through moe_internal, and each other's helpers
  # through tests/.
  target_link_libraries(${T_NAME} PRIVATE moe_lib moe_internal GTest::gtest GTest::gtest_main ${T_LIBS})
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_compile_definitions(${T_NAME} PRIVATE
    MOE_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    MOE_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data")
  include(GoogleTest)
  gtest_discover_tests(${T_NAME} PROPERTIES LABELS "${T_LABELS}" DISCOVERY_TIMEOUT 60)
endfunction()
