#include "datasets/hdf5_util.h"

#include "core/tensor/error.h"

namespace dcae::datasets::hdf5 {

namespace {

std::recursive_mutex& hdf5_mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

herr_t collect_message(unsigned, const H5E_error2_t* error, void* data) {
  auto* text = static_cast<std::string*>(data);
  if (error->desc != nullptr && error->desc[0] != '\0') {
    if (!text->empty()) *text += "; ";
    *text += error->desc;
  }
  return 0;
}

}  // namespace

Lock::Lock() : guard_(hdf5_mutex()) {
  // The automatic printer is per thread in a thread-safe HDF5; errors are reported through dcae::Error instead.
  thread_local bool quiet = false;
  if (!quiet) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    quiet = true;
  }
}

std::string error_text() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_message, &text);
  H5Eclear2(H5E_DEFAULT);
  return text;
}

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    other.id_ = -1;
  }
  return *this;
}

void Handle::reset() {
  if (id_ < 0) return;
  Lock lock;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;
  }
  id_ = -1;
}

Handle vlen_bytes_type() { return Handle(H5Tvlen_create(H5T_NATIVE_UINT8)); }

Handle vlen_string_type() {
  Handle type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  return type;
}

void write_int_attribute(hid_t object, const char* name, int64_t value) {
  Handle space(H5Screate(H5S_SCALAR));
  Handle attribute(H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!attribute.valid() || H5Awrite(attribute.get(), H5T_NATIVE_INT64, &value) < 0)
    DCAE_FAIL("cannot write HDF5 attribute '", name, "': ", error_text());
}

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  Handle type = vlen_string_type();
  Handle space(H5Screate(H5S_SCALAR));
  Handle attribute(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
  const char* text = value.c_str();
  if (!attribute.valid() || H5Awrite(attribute.get(), type.get(), &text) < 0)
    DCAE_FAIL("cannot write HDF5 attribute '", name, "': ", error_text());
}

bool read_int_attribute(hid_t object, const char* name, int64_t& value) {
  if (H5Aexists(object, name) <= 0) return false;
  Handle attribute(H5Aopen(object, name, H5P_DEFAULT));
  if (!attribute.valid()) return false;
  Handle type(H5Aget_type(attribute.get()));
  if (H5Tget_class(type.get()) != H5T_INTEGER) return false;
  return H5Aread(attribute.get(), H5T_NATIVE_INT64, &value) >= 0;
}

bool read_string_attribute(hid_t object, const char* name, std::string& value) {
  if (H5Aexists(object, name) <= 0) return false;
  Handle attribute(H5Aopen(object, name, H5P_DEFAULT));
  if (!attribute.valid()) return false;
  Handle stored(H5Aget_type(attribute.get()));
  if (H5Tget_class(stored.get()) != H5T_STRING) return false;
  if (H5Tis_variable_str(stored.get()) > 0) {
    Handle type = vlen_string_type();
    char* text = nullptr;
    if (H5Aread(attribute.get(), type.get(), &text) < 0) return false;
    value = text != nullptr ? text : "";
    Handle space(H5Screate(H5S_SCALAR));
    reclaim_vlen(type.get(), space.get(), &text);
    return true;
  }
  // Fixed-length strings (as other writers may produce).
  std::string buffer(H5Tget_size(stored.get()), '\0');
  if (H5Aread(attribute.get(), stored.get(), buffer.data()) < 0) return false;
  value = buffer.substr(0, buffer.find('\0'));
  return true;
}

std::vector<int64_t> dataset_dims(hid_t dataset) {
  Handle space(H5Dget_space(dataset));
  const int rank = space.valid() ? H5Sget_simple_extent_ndims(space.get()) : -1;
  if (rank < 0) return {};
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

void reclaim_vlen(hid_t type, hid_t space, void* buffer) {
#if H5_VERSION_GE(1, 12, 0)
  H5Treclaim(type, space, H5P_DEFAULT, buffer);
#else
  H5Dvlen_reclaim(type, space, H5P_DEFAULT, buffer);
#endif
}

}  // namespace dcae::datasets::hdf5
