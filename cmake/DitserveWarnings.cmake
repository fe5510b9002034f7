# Warnings as errors for the project's own code. Third-party headers
# (LibTorch, gloo, gRPC) are included as SYSTEM so their warnings stay out.
function(ditserve_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers>)
endfunction()
