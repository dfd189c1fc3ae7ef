// The kernel families with CUDA kernels. A family opts in by adding its header here; the header declares its
// kernels with the signatures of ops/cpu/<family>.h and marks each one for DCAE_KERNEL (see ops/dispatch.h).
// Kernels of families not listed throw "<kernel> has no CUDA kernel yet" for CUDA tensors.
#pragma once
#include "ops/cuda/attention.h"
#include "ops/cuda/conv2d.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/embedding.h"
#include "ops/cuda/glu.h"
#include "ops/cuda/matmul.h"
#include "ops/cuda/norm.h"
#include "ops/cuda/pool.h"
#include "ops/cuda/reduce.h"
#include "ops/cuda/softmax.h"
#include "ops/cuda/spatial.h"
#include "ops/cuda/unary.h"
