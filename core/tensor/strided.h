// Walks N-d strided layouts one innermost row at a time, so kernels can loop the last dim tightly.
#pragma once
#include <array>
#include <cstdint>

#include "core/tensor/shape.h"

namespace dcae {

// For every row of `shape` (all dims but the last), calls row(base, n, step) where base[k] is the element offset of
// the row's first element in layout k, n the row length and step[k] layout k's stride along the last dim.
// A rank-0 shape is one row of one element.
template <size_t K, typename RowFn>
void for_each_row(const Shape& shape, const std::array<Shape, K>& strides, RowFn&& row) {
  const size_t rank = shape.size();
  std::array<int64_t, K> base{};
  std::array<int64_t, K> step{};
  if (rank == 0) {
    row(base, int64_t{1}, step);
    return;
  }
  for (int64_t s : shape)
    if (s == 0) return;
  for (size_t k = 0; k < K; ++k) step[k] = strides[k][rank - 1];
  const int64_t n = shape[rank - 1];
  Shape index(rank, 0);
  while (true) {
    row(base, n, step);
    size_t d = rank - 1;  // advance the odometer over dims [0, rank-1)
    while (true) {
      if (d == 0) return;
      --d;
      ++index[d];
      for (size_t k = 0; k < K; ++k) base[k] += strides[k][d];
      if (index[d] < shape[d]) break;
      for (size_t k = 0; k < K; ++k) base[k] -= strides[k][d] * shape[d];
      index[d] = 0;
    }
  }
}

}  // namespace dcae
