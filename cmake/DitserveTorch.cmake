# Finds LibTorch inside an installed PyTorch package (the `torch` wheel from
# PyPI that scripts/setup installs, or the GPU machine's own PyTorch) and
# defines imported targets:
#   ditserve::torch_cpu   ATen, c10 and c10d (TCPStore, ProcessGroupGloo)
#   ditserve::torch_cuda  c10_cuda and torch_cuda (only with a CUDA PyTorch
#                         and DITSERVE_HAVE_CUDA)
# We do not use the wheel's TorchConfig.cmake: it requires a matching CUDA
# toolkit even for CPU-only targets, and it puts the wheel's bundled protobuf
# headers (include/google) on the include path, where they would shadow the
# system protobuf that gRPC code needs. Instead the wheel's include/ is
# mirrored as symlinks without google/.
set(DITSERVE_TORCH_DIR "" CACHE PATH "The torch package directory (contains include/ and lib/)")
if(NOT DITSERVE_TORCH_DIR)
  set(_py "")
  if(EXISTS "$ENV{HOME}/.cache/ditserve/venv/bin/python3")
    set(_py "$ENV{HOME}/.cache/ditserve/venv/bin/python3")
  else()
    find_program(_py python3)
  endif()
  execute_process(COMMAND ${_py} -c
    "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('torch').origin))"
                  OUTPUT_VARIABLE _torch_dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "PyTorch not found (run scripts/setup, or pass -DDITSERVE_TORCH_DIR=<site-packages>/torch)")
  endif()
  set(DITSERVE_TORCH_DIR "${_torch_dir}" CACHE PATH "The torch package directory" FORCE)
endif()
if(NOT EXISTS "${DITSERVE_TORCH_DIR}/lib/libtorch_cpu.so")
  message(FATAL_ERROR "${DITSERVE_TORCH_DIR} holds no lib/libtorch_cpu.so")
endif()

file(STRINGS "${DITSERVE_TORCH_DIR}/version.py" _ver REGEX "^__version__")
string(REGEX MATCH "[0-9]+\\.[0-9]+\\.[0-9]+[^'\"]*" DITSERVE_TORCH_VERSION "${_ver}")
# 2.3: the CPU attention kernel (_scaled_dot_product_flash_attention_for_cpu
# with attn_mask) first shipped in PyTorch 2.3.
if(DITSERVE_TORCH_VERSION VERSION_LESS 2.3)
  message(FATAL_ERROR "LibTorch ${DITSERVE_TORCH_VERSION} is too old; ditserve needs 2.3 or newer")
endif()

# Mirror include/ minus the bundled protobuf headers.
set(_inc "${CMAKE_BINARY_DIR}/torch_include")
file(MAKE_DIRECTORY "${_inc}")
file(GLOB _entries RELATIVE "${DITSERVE_TORCH_DIR}/include" "${DITSERVE_TORCH_DIR}/include/*")
foreach(_e IN LISTS _entries)
  if(NOT _e STREQUAL "google" AND NOT EXISTS "${_inc}/${_e}")
    file(CREATE_LINK "${DITSERVE_TORCH_DIR}/include/${_e}" "${_inc}/${_e}" SYMBOLIC)
  endif()
endforeach()

add_library(ditserve_torch_cpu INTERFACE)
target_include_directories(ditserve_torch_cpu SYSTEM INTERFACE
  "${_inc}" "${DITSERVE_TORCH_DIR}/include/torch/csrc/api/include" "${GLOO_INCLUDE_DIR}")
target_compile_definitions(ditserve_torch_cpu INTERFACE USE_DISTRIBUTED USE_C10D_GLOO)
target_link_libraries(ditserve_torch_cpu INTERFACE
  "${DITSERVE_TORCH_DIR}/lib/libtorch_cpu.so" "${DITSERVE_TORCH_DIR}/lib/libc10.so" Threads::Threads)
add_library(ditserve::torch_cpu ALIAS ditserve_torch_cpu)

set(DITSERVE_TORCH_HAS_CUDA OFF)
if(EXISTS "${DITSERVE_TORCH_DIR}/lib/libtorch_cuda.so")
  set(DITSERVE_TORCH_HAS_CUDA ON)
endif()
if(DITSERVE_HAVE_CUDA AND DITSERVE_TORCH_HAS_CUDA)
  add_library(ditserve_torch_cuda INTERFACE)
  target_compile_definitions(ditserve_torch_cuda INTERFACE USE_CUDA)
  target_link_libraries(ditserve_torch_cuda INTERFACE ditserve::torch_cpu CUDA::cudart
    "-Wl,--no-as-needed" "${DITSERVE_TORCH_DIR}/lib/libtorch_cuda.so"
    "${DITSERVE_TORCH_DIR}/lib/libc10_cuda.so" "-Wl,--as-needed")
  add_library(ditserve::torch_cuda ALIAS ditserve_torch_cuda)
endif()
