// ShardReader: opening and validating a shard, then random access to its images (declared in shard_format.h).
#include <filesystem>

#include "datasets/hdf5_util.h"
#include "datasets/image_decode.h"
#include "datasets/shard_format.h"

namespace dcae::datasets {

using hdf5::Handle;

struct ShardReader::Files {
  Handle file;  // declared first: closed last
  Handle images;
};

namespace {

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

Handle open_dataset(hid_t file, const char* name, const std::string& path, hid_t access = H5P_DEFAULT) {
  DCAE_CHECK(H5Lexists(file, name, H5P_DEFAULT) > 0, "shard '", path, "': dataset '", name, "' is missing");
  Handle dataset(H5Dopen2(file, name, access));
  DCAE_CHECK(dataset.valid(), "shard '", path, "': cannot open dataset '", name, "': ", hdf5::error_text());
  return dataset;
}

bool is_u8(hid_t type) {
  return H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == 1 && H5Tget_sign(type) == H5T_SGN_NONE;
}

}  // namespace

ShardReader::ShardReader(std::string path) : path_(std::move(path)) {
  std::error_code error;
  DCAE_CHECK(std::filesystem::exists(path_, error), "shard '", path_, "' does not exist");
  DCAE_CHECK(std::filesystem::is_regular_file(path_, error), "shard '", path_, "' is not a regular file");
  hdf5::Lock lock;
  DCAE_CHECK(H5Fis_hdf5(path_.c_str()) > 0, "shard '", path_, "' is not an HDF5 file (",
             std::filesystem::file_size(path_, error), " bytes without the HDF5 signature)");
  files_ = std::make_unique<Files>();
  files_->file = Handle(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  DCAE_CHECK(files_->file.valid(), "shard '", path_, "' cannot be opened (corrupt or truncated): ",
             hdf5::error_text());
  const hid_t file = files_->file.get();

  int64_t version = 0, count = -1;
  DCAE_CHECK(hdf5::read_int_attribute(file, "format_version", version), "shard '", path_,
             "': no format_version attribute (not a dcae shard)");
  DCAE_CHECK(version == kShardFormatVersion, "shard '", path_, "': format_version is ", version,
             " but this build reads version ", kShardFormatVersion);
  std::string storage;
  DCAE_CHECK(hdf5::read_string_attribute(file, "storage", storage) && (storage == "raw" || storage == "encoded"),
             "shard '", path_, "': the storage attribute must be 'raw' or 'encoded', got '", storage, "'");
  attributes_.storage = storage_from_name(storage);
  DCAE_CHECK(hdf5::read_int_attribute(file, "resolution", attributes_.resolution) && attributes_.resolution > 0,
             "shard '", path_, "': missing or invalid resolution attribute");
  hdf5::read_string_attribute(file, "crop", attributes_.crop);
  hdf5::read_string_attribute(file, "codec", attributes_.codec);
  hdf5::read_string_attribute(file, "source", attributes_.source);
  hdf5::read_int_attribute(file, "count", count);

  Handle labels = open_dataset(file, "labels", path_);
  const std::vector<int64_t> label_dims = hdf5::dataset_dims(labels.get());
  DCAE_CHECK(label_dims.size() == 1, "shard '", path_, "': labels must be 1-D, got ", dims_str(label_dims));
  labels_.resize(static_cast<size_t>(label_dims[0]));
  DCAE_CHECK(labels_.empty() || H5Dread(labels.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                        labels_.data()) >= 0,
             "shard '", path_, "': cannot read labels: ", hdf5::error_text());
  const int64_t n = size();
  DCAE_CHECK(count == n, "shard '", path_, "': the count attribute says ", count, " images but labels has ", n);

  Handle names = open_dataset(file, "names", path_);
  DCAE_CHECK(hdf5::dataset_dims(names.get()) == std::vector<int64_t>{n}, "shard '", path_, "': names has shape ",
             dims_str(hdf5::dataset_dims(names.get())), ", expected [", n, "]");
  Handle string_type = hdf5::vlen_string_type();
  std::vector<char*> texts(static_cast<size_t>(n), nullptr);
  DCAE_CHECK(n == 0 || H5Dread(names.get(), string_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, texts.data()) >= 0,
             "shard '", path_, "': cannot read names: ", hdf5::error_text());
  for (char* text : texts) names_.emplace_back(text != nullptr ? text : "");
  if (n > 0) {
    Handle space(H5Dget_space(names.get()));
    hdf5::reclaim_vlen(string_type.get(), space.get(), texts.data());
  }

  if (attributes_.storage == ShardStorage::raw) {
    // One image per chunk and no reuse: HDF5's chunk cache would only copy.
    Handle access(H5Pcreate(H5P_DATASET_ACCESS));
    H5Pset_chunk_cache(access.get(), 0, 0, H5D_CHUNK_CACHE_W0_DEFAULT);
    files_->images = open_dataset(file, "images", path_, access.get());
    const std::vector<int64_t> dims = hdf5::dataset_dims(files_->images.get());
    DCAE_CHECK(dims.size() == 4 && dims[0] == n && dims[1] > 0 && dims[2] > 0 && dims[3] == 3, "shard '", path_,
               "': images has shape ", dims_str(dims), ", expected [", n, ", H, W, 3]");
    Handle type(H5Dget_type(files_->images.get()));
    DCAE_CHECK(is_u8(type.get()), "shard '", path_, "': images must be uint8");
    image_shape_ = {dims[1], dims[2], 3};
  } else {
    files_->images = open_dataset(file, "encoded", path_);
    const std::vector<int64_t> dims = hdf5::dataset_dims(files_->images.get());
    DCAE_CHECK(dims == std::vector<int64_t>{n}, "shard '", path_, "': encoded has shape ", dims_str(dims),
               ", expected [", n, "]");
    Handle type(H5Dget_type(files_->images.get()));
    Handle element(H5Tget_class(type.get()) == H5T_VLEN ? H5Tget_super(type.get()) : -1);
    DCAE_CHECK(element.valid() && is_u8(element.get()), "shard '", path_,
               "': encoded must hold variable-length uint8 sequences");
    image_shape_ = {attributes_.resolution, attributes_.resolution, 3};
  }
}

ShardReader::~ShardReader() = default;

void ShardReader::check_index(int64_t i, const char* what) const {
  DCAE_CHECK(i >= 0 && i < size(), "shard '", path_, "': ", what, " index ", i, " out of range [0, ", size(), ")");
}

void ShardReader::read_raw(int64_t i, uint8_t* out) const {
  check_index(i, "image");
  DCAE_CHECK(attributes_.storage == ShardStorage::raw, "shard '", path_, "' stores encoded images; read_raw needs raw");
  const std::vector<hsize_t> start = {static_cast<hsize_t>(i), 0, 0, 0};
  const std::vector<hsize_t> row = {1, static_cast<hsize_t>(image_shape_[0]), static_cast<hsize_t>(image_shape_[1]),
                                    3};
  hdf5::Lock lock;
  Handle file_space(H5Dget_space(files_->images.get()));
  H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, row.data(), nullptr);
  Handle memory_space(H5Screate_simple(4, row.data(), nullptr));
  DCAE_CHECK(H5Dread(files_->images.get(), H5T_NATIVE_UINT8, memory_space.get(), file_space.get(), H5P_DEFAULT,
                     out) >= 0,
             "shard '", path_, "': cannot read image ", i, " (corrupt or truncated?): ", hdf5::error_text());
}

std::vector<uint8_t> ShardReader::encoded(int64_t i) const {
  check_index(i, "image");
  DCAE_CHECK(attributes_.storage == ShardStorage::encoded, "shard '", path_,
             "' stores raw images; encoded() needs encoded storage");
  const hsize_t start = static_cast<hsize_t>(i), one = 1;
  hdf5::Lock lock;
  Handle type = hdf5::vlen_bytes_type();
  Handle file_space(H5Dget_space(files_->images.get()));
  H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &one, nullptr);
  Handle memory_space(H5Screate_simple(1, &one, nullptr));
  hvl_t entry{0, nullptr};
  DCAE_CHECK(H5Dread(files_->images.get(), type.get(), memory_space.get(), file_space.get(), H5P_DEFAULT,
                     &entry) >= 0,
             "shard '", path_, "': cannot read encoded image ", i, " (corrupt or truncated?): ", hdf5::error_text());
  const auto* bytes = static_cast<const uint8_t*>(entry.p);
  std::vector<uint8_t> out(bytes, bytes + entry.len);
  hdf5::reclaim_vlen(type.get(), memory_space.get(), &entry);
  return out;
}

Tensor ShardReader::image(int64_t i) const {
  if (attributes_.storage == ShardStorage::encoded)
    return decode_image(encoded(i), path_ + " image " + std::to_string(i) + " (" + name(i) + ")");
  Tensor out = empty(image_shape_, DType::u8);
  read_raw(i, out.data<uint8_t>());
  return out;
}

int64_t ShardReader::label(int64_t i) const {
  check_index(i, "label");
  return labels_[static_cast<size_t>(i)];
}

const std::string& ShardReader::name(int64_t i) const {
  check_index(i, "name");
  return names_[static_cast<size_t>(i)];
}

}  // namespace dcae::datasets
