// Shape arithmetic shared by tensors and ops: sizes, contiguous strides, broadcasting, dim normalisation.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dcae {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);
// numpy broadcasting; throws naming both shapes when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b);
// Maps a possibly negative dim into [0, ndim); throws naming the dim and rank when out of range.
int64_t normalize_dim(int64_t dim, int64_t ndim);

}  // namespace dcae
