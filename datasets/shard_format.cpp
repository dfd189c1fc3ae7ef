#include "datasets/shard_format.h"

#include <filesystem>

#include "datasets/hdf5_util.h"
#include "datasets/image_decode.h"

namespace dcae::datasets {

using hdf5::Handle;

namespace {

constexpr hsize_t kEncodedChunk = 256;  // entries per chunk of the variable-length `encoded` dataset

void write_vector_dataset(hid_t file, const char* name, hid_t file_type, hid_t memory_type, hsize_t count,
                          const void* data, const std::string& path) {
  Handle space(H5Screate_simple(1, &count, nullptr));
  Handle dataset(H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  DCAE_CHECK(dataset.valid(), "shard '", path, "': cannot create dataset '", name, "': ", hdf5::error_text());
  if (count > 0)
    DCAE_CHECK(H5Dwrite(dataset.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, "shard '", path,
               "': cannot write dataset '", name, "': ", hdf5::error_text());
}

// Grows a 1-row-per-item dataset by one and returns the file space selecting the new row.
Handle append_row(hid_t dataset, const std::vector<hsize_t>& row_dims, hsize_t row, const std::string& path) {
  std::vector<hsize_t> extent = row_dims, start(row_dims.size(), 0);
  extent[0] = row + 1;
  start[0] = row;
  DCAE_CHECK(H5Dset_extent(dataset, extent.data()) >= 0, "shard '", path, "': cannot grow to ", row + 1,
             " images: ", hdf5::error_text());
  Handle space(H5Dget_space(dataset));
  H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr, row_dims.data(), nullptr);
  return space;
}

Handle create_growable(hid_t file, const char* name, hid_t type, std::vector<hsize_t> chunk, const std::string& path) {
  std::vector<hsize_t> dims = chunk, max_dims = chunk;
  dims[0] = 0;
  max_dims[0] = H5S_UNLIMITED;
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), max_dims.data()));
  Handle properties(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_chunk(properties.get(), static_cast<int>(chunk.size()), chunk.data());
  Handle dataset(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, properties.get(), H5P_DEFAULT));
  DCAE_CHECK(dataset.valid(), "shard '", path, "': cannot create dataset '", name, "': ", hdf5::error_text());
  return dataset;
}

}  // namespace

const char* storage_name(ShardStorage storage) { return storage == ShardStorage::raw ? "raw" : "encoded"; }

ShardStorage storage_from_name(const std::string& name) {
  if (name == "raw") return ShardStorage::raw;
  if (name == "encoded") return ShardStorage::encoded;
  DCAE_FAIL("unknown shard storage '", name, "' (expected raw or encoded)");
}

// ---------------------------------------------------------------------------------------------------- writer

struct ShardWriter::Files {
  Handle file;  // declared first: closed last
  Handle images;
};

ShardWriter::ShardWriter(std::string path, ShardAttributes attributes)
    : path_(std::move(path)), temp_path_(path_ + ".partial"), attributes_(std::move(attributes)) {
  const bool encoded = attributes_.storage == ShardStorage::encoded;
  DCAE_CHECK(encoded == (attributes_.codec == "png" || attributes_.codec == "jpeg") &&
                 (encoded || attributes_.codec.empty()),
             "ShardWriter '", path_, "': storage ", storage_name(attributes_.storage), " with codec '",
             attributes_.codec, "' (encoded storage needs codec png or jpeg, raw storage none)");
  DCAE_CHECK(attributes_.resolution > 0, "ShardWriter '", path_, "': resolution must be positive, got ",
             attributes_.resolution);
  hdf5::Lock lock;
  files_ = std::make_unique<Files>();
  files_->file = Handle(H5Fcreate(temp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  DCAE_CHECK(files_->file.valid(), "cannot create shard file '", temp_path_, "': ", hdf5::error_text());
  if (encoded) {
    Handle type = hdf5::vlen_bytes_type();
    files_->images = create_growable(files_->file.get(), "encoded", type.get(), {kEncodedChunk}, path_);
  }
}

ShardWriter::~ShardWriter() {
  if (closed_) return;
  files_.reset();
  std::error_code ignored;
  std::filesystem::remove(temp_path_, ignored);
}

void ShardWriter::open_images(int64_t height, int64_t width) {
  height_ = height;
  width_ = width;
  const std::vector<hsize_t> chunk = {1, static_cast<hsize_t>(height), static_cast<hsize_t>(width), 3};
  files_->images = create_growable(files_->file.get(), "images", H5T_NATIVE_UINT8, chunk, path_);
}

void ShardWriter::append(const Tensor& image, int64_t label, const std::string& name) {
  DCAE_CHECK(!closed_, "ShardWriter '", path_, "': append after close");
  DCAE_CHECK(attributes_.storage == ShardStorage::raw, "ShardWriter '", path_,
             "': append(image) needs raw storage; use append_encoded for encoded shards");
  DCAE_CHECK(image.dim() == 3 && image.size(2) == 3 && image.dtype() == DType::u8 && image.device().is_cpu(),
             "ShardWriter '", path_, "': expected a u8 CPU image [H, W, 3], got ", image.str());
  hdf5::Lock lock;
  if (!files_->images.valid()) open_images(image.size(0), image.size(1));
  DCAE_CHECK(image.size(0) == height_ && image.size(1) == width_, "ShardWriter '", path_,
             "': every image of a shard has the same shape; expected [", height_, ", ", width_, ", 3], got ",
             image.str());
  const Tensor pixels = image.contiguous();
  const std::vector<hsize_t> row = {1, static_cast<hsize_t>(height_), static_cast<hsize_t>(width_), 3};
  Handle file_space = append_row(files_->images.get(), row, static_cast<hsize_t>(count()), path_);
  Handle memory_space(H5Screate_simple(4, row.data(), nullptr));
  DCAE_CHECK(H5Dwrite(files_->images.get(), H5T_NATIVE_UINT8, memory_space.get(), file_space.get(), H5P_DEFAULT,
                      pixels.data<uint8_t>()) >= 0,
             "shard '", path_, "': cannot write image ", count(), ": ", hdf5::error_text());
  labels_.push_back(label);
  names_.push_back(name);
}

void ShardWriter::append_encoded(const std::vector<uint8_t>& bytes, int64_t label, const std::string& name) {
  DCAE_CHECK(!closed_, "ShardWriter '", path_, "': append after close");
  DCAE_CHECK(attributes_.storage == ShardStorage::encoded, "ShardWriter '", path_,
             "': append_encoded needs encoded storage; use append(image) for raw shards");
  DCAE_CHECK(!bytes.empty(), "ShardWriter '", path_, "': empty encoded image '", name, "'");
  hdf5::Lock lock;
  Handle type = hdf5::vlen_bytes_type();
  Handle file_space = append_row(files_->images.get(), {1}, static_cast<hsize_t>(count()), path_);
  const hsize_t one = 1;
  Handle memory_space(H5Screate_simple(1, &one, nullptr));
  hvl_t entry{bytes.size(), const_cast<uint8_t*>(bytes.data())};
  DCAE_CHECK(H5Dwrite(files_->images.get(), type.get(), memory_space.get(), file_space.get(), H5P_DEFAULT,
                      &entry) >= 0,
             "shard '", path_, "': cannot write encoded image ", count(), ": ", hdf5::error_text());
  labels_.push_back(label);
  names_.push_back(name);
}

void ShardWriter::close() {
  DCAE_CHECK(!closed_, "ShardWriter '", path_, "': closed twice");
  {
    hdf5::Lock lock;
    if (attributes_.storage == ShardStorage::raw && !files_->images.valid())
      open_images(attributes_.resolution, attributes_.resolution);  // an empty shard still has the dataset
    const hid_t file = files_->file.get();
    const auto n = static_cast<hsize_t>(count());
    write_vector_dataset(file, "labels", H5T_STD_I64LE, H5T_NATIVE_INT64, n, labels_.data(), path_);
    std::vector<const char*> names(names_.size());
    for (size_t i = 0; i < names_.size(); ++i) names[i] = names_[i].c_str();
    Handle string_type = hdf5::vlen_string_type();
    write_vector_dataset(file, "names", string_type.get(), string_type.get(), n, names.data(), path_);
    hdf5::write_int_attribute(file, "format_version", kShardFormatVersion);
    hdf5::write_int_attribute(file, "count", count());
    hdf5::write_int_attribute(file, "resolution", attributes_.resolution);
    hdf5::write_string_attribute(file, "crop", attributes_.crop);
    hdf5::write_string_attribute(file, "storage", storage_name(attributes_.storage));
    hdf5::write_string_attribute(file, "codec", attributes_.codec);
    hdf5::write_string_attribute(file, "source", attributes_.source);
    files_->images.reset();
    DCAE_CHECK(H5Fclose(files_->file.release()) >= 0, "shard '", path_, "': closing failed: ", hdf5::error_text());
  }
  std::filesystem::rename(temp_path_, path_);
  closed_ = true;
}

}  // namespace dcae::datasets
