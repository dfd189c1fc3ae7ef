// How one tensor is split over ranks along dim 0 (torch.chunk semantics, as FSDP2): rank r holds rows
// [r * ceil(rows / world), ...) clipped to the tensor, so the last ranks may hold fewer rows or none. Every rank
// stores a shard padded with zeros to ceil(rows / world) rows, so an all-gather needs no padding step and the
// padding adds nothing to norms. A 0-d tensor counts as one row.
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/tensor/shape.h"

namespace dcae::dist {

struct ShardLayout {
  Shape full_shape;
  int world_size = 1;
  int64_t rows = 1;           // dim 0 (1 for a 0-d tensor)
  int64_t row_numel = 1;      // elements per row
  int64_t rows_per_rank = 1;  // ceil(rows / world_size): the padded shard height

  static ShardLayout make(const Shape& full_shape, int world_size);

  int64_t row_begin(int rank) const { return std::min(rows, rank * rows_per_rank); }
  int64_t row_end(int rank) const { return std::min(rows, (rank + 1) * rows_per_rank); }
  int64_t valid_rows(int rank) const { return row_end(rank) - row_begin(rank); }
  int64_t shard_numel() const { return rows_per_rank * row_numel; }
  // [rows_per_rank, full_shape[1:]...]; [rows_per_rank] for 0-d and 1-d tensors.
  Shape shard_shape() const { return rows_shape(rows_per_rank); }
  // [n, full_shape[1:]...]: the shape of n rows.
  Shape rows_shape(int64_t n) const;
};

}  // namespace dcae::dist
