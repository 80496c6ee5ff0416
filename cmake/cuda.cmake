# The CUDA backend (-DHADM_CUDA=ON): kernels in src/ops/cuda/*.cu, host code in
# src/ops/cuda/*.c and src/engine/cuda/*.c, all linked into hadm_core.
# Included from the top-level CMakeLists.txt after hadm_core is defined.
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  # A100 / L40-RTX 40xx / H100-H200; CUDA 13 no longer targets sm_70.
  set(CMAKE_CUDA_ARCHITECTURES 80 89 90)
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

file(GLOB HADM_CUDA_KERNELS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/ops/cuda/*.cu)
file(GLOB HADM_CUDA_HOST CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/ops/cuda/*.c
  ${CMAKE_SOURCE_DIR}/src/engine/cuda/*.c)

add_library(hadm_cuda_kernels OBJECT ${HADM_CUDA_KERNELS})
# The directory's compile options are gcc flags (-march, -fsanitize, ...):
# nvcc gets its own, and passes the warning flags to the host compiler.
set_property(TARGET hadm_cuda_kernels PROPERTY COMPILE_OPTIONS "")
target_compile_options(hadm_cuda_kernels PRIVATE -Xcompiler=-Wall,-Wextra $<$<CONFIG:Release>:-O3>
  $<$<BOOL:${HADM_WERROR}>:--Werror=all-warnings>)
target_include_directories(hadm_cuda_kernels PRIVATE ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR}/src)
set_target_properties(hadm_cuda_kernels PROPERTIES POSITION_INDEPENDENT_CODE ON)
# Box arithmetic must not contract multiply-adds: it mirrors the ISO C code bit for bit.
set_source_files_properties(${CMAKE_SOURCE_DIR}/src/ops/cuda/boxes.cu PROPERTIES COMPILE_OPTIONS --fmad=false)

target_sources(hadm_core PRIVATE ${HADM_CUDA_HOST} $<TARGET_OBJECTS:hadm_cuda_kernels>)
target_compile_definitions(hadm_core PUBLIC HADM_CUDA=1)
target_link_libraries(hadm_core PUBLIC CUDA::cudart CUDA::cublasLt stdc++)

# The GPU benchmark (bench/cuda_bench.c): ms per image against the measured bf16 peak.
add_executable(hadm-cuda-bench ${CMAKE_SOURCE_DIR}/bench/cuda_bench.c)
target_link_libraries(hadm-cuda-bench PRIVATE hadm_core)
