// Freeing and re-allocating a tensor's memory while keeping its Storage object: FSDP's reshard / unshard. Tensors
// saved for backward alias the parameter's Storage object, so the memory can only go away between forward and
// backward if that same object drops its buffer and later gets a new one; the storage version is kept so saved
// tensors stay valid. Workaround: core's Storage has no release/reallocate yet (the object is destroyed and rebuilt
// in place, which C++ allows for an object of the same type).
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::dist {

// Frees the buffer behind t's storage (t must own a storage whose only content it is). Reading t afterwards is
// invalid until reallocate_storage.
void release_storage(const Tensor& t);
// Gives t's storage a fresh, uninitialised buffer of t.nbytes().
void reallocate_storage(const Tensor& t);
bool storage_allocated(const Tensor& t);

}  // namespace dcae::dist
