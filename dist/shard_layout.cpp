#include "dist/shard_layout.h"

#include "core/tensor/error.h"

namespace dcae::dist {

ShardLayout ShardLayout::make(const Shape& full_shape, int world_size) {
  DCAE_CHECK(world_size >= 1, "shard layout for ", shape_str(full_shape), ": world size ", world_size, " < 1");
  ShardLayout layout;
  layout.full_shape = full_shape;
  layout.world_size = world_size;
  layout.rows = full_shape.empty() ? 1 : full_shape[0];
  layout.row_numel = 1;
  for (size_t d = 1; d < full_shape.size(); ++d) layout.row_numel *= full_shape[d];
  layout.rows_per_rank = (layout.rows + world_size - 1) / world_size;
  return layout;
}

Shape ShardLayout::rows_shape(int64_t n) const {
  Shape shape{n};
  for (size_t d = 1; d < full_shape.size(); ++d) shape.push_back(full_shape[d]);
  return shape;
}

}  // namespace dcae::dist
