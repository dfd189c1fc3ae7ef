#include "dist/storage_swap.h"

#include <memory>

namespace dcae::dist {

namespace {

void rebuild(Storage& storage, size_t nbytes) {
  const uint64_t version = storage.version();
  const Device device = storage.device();
  std::destroy_at(&storage);
  try {
    std::construct_at(&storage, nbytes, device);
  } catch (...) {
    std::construct_at(&storage, size_t{0}, device);  // keep a valid (empty) object for the owners' destructors
    throw;
  }
  while (storage.version() < version) storage.bump_version();
}

}  // namespace

void release_storage(const Tensor& t) {
  Storage& storage = *t.storage();
  if (storage.nbytes() != 0) rebuild(storage, 0);
}

void reallocate_storage(const Tensor& t) {
  DCAE_CHECK(t.is_contiguous() && t.offset() == 0, "reallocate_storage needs a contiguous tensor at offset 0, got ",
             t.str());
  Storage& storage = *t.storage();
  if (storage.nbytes() != t.nbytes()) rebuild(storage, t.nbytes());
}

bool storage_allocated(const Tensor& t) { return t.storage()->nbytes() != 0 || t.numel() == 0; }

}  // namespace dcae::dist
