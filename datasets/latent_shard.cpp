#include "datasets/latent_shard.h"

#include <filesystem>

#include "datasets/hdf5_util.h"

namespace dcae::datasets {

using hdf5::Handle;

namespace {

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

// hdf5_util has integer and string attributes only; the scaling factor is a double.
void write_double_attribute(hid_t object, const char* name, double value, const std::string& path) {
  Handle space(H5Screate(H5S_SCALAR));
  Handle attribute(H5Acreate2(object, name, H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  DCAE_CHECK(attribute.valid() && H5Awrite(attribute.get(), H5T_NATIVE_DOUBLE, &value) >= 0, "latent shard '", path,
             "': cannot write attribute '", name, "': ", hdf5::error_text());
}

bool read_double_attribute(hid_t object, const char* name, double& value) {
  if (H5Aexists(object, name) <= 0) return false;
  Handle attribute(H5Aopen(object, name, H5P_DEFAULT));
  if (!attribute.valid()) return false;
  Handle type(H5Aget_type(attribute.get()));
  const H5T_class_t type_class = H5Tget_class(type.get());
  if (type_class != H5T_FLOAT && type_class != H5T_INTEGER) return false;
  return H5Aread(attribute.get(), H5T_NATIVE_DOUBLE, &value) >= 0;
}

void write_vector_dataset(hid_t file, const char* name, hid_t file_type, hid_t memory_type, hsize_t count,
                          const void* data, const std::string& path) {
  Handle space(H5Screate_simple(1, &count, nullptr));
  Handle dataset(H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  DCAE_CHECK(dataset.valid(), "latent shard '", path, "': cannot create dataset '", name, "': ", hdf5::error_text());
  if (count > 0)
    DCAE_CHECK(H5Dwrite(dataset.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, "latent shard '",
               path, "': cannot write dataset '", name, "': ", hdf5::error_text());
}

Handle open_dataset(hid_t file, const char* name, const std::string& path, hid_t access = H5P_DEFAULT) {
  DCAE_CHECK(H5Lexists(file, name, H5P_DEFAULT) > 0, "latent shard '", path, "': dataset '", name, "' is missing");
  Handle dataset(H5Dopen2(file, name, access));
  DCAE_CHECK(dataset.valid(), "latent shard '", path, "': cannot open dataset '", name, "': ", hdf5::error_text());
  return dataset;
}

// The file-space selection of rows [start, start + count) of the [N, h, w, C] latents dataset.
Handle select_rows(hid_t dataset, const Shape& latent_shape, int64_t start, int64_t count) {
  const std::vector<hsize_t> first = {static_cast<hsize_t>(start), 0, 0, 0};
  const std::vector<hsize_t> rows = {static_cast<hsize_t>(count), static_cast<hsize_t>(latent_shape[0]),
                                     static_cast<hsize_t>(latent_shape[1]), static_cast<hsize_t>(latent_shape[2])};
  Handle space(H5Dget_space(dataset));
  H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, first.data(), nullptr, rows.data(), nullptr);
  return space;
}

Handle memory_rows(const Shape& latent_shape, int64_t count) {
  const std::vector<hsize_t> rows = {static_cast<hsize_t>(count), static_cast<hsize_t>(latent_shape[0]),
                                     static_cast<hsize_t>(latent_shape[1]), static_cast<hsize_t>(latent_shape[2])};
  return Handle(H5Screate_simple(4, rows.data(), nullptr));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------- writer

struct LatentShardWriter::Files {
  Handle file;  // declared first: closed last
  Handle latents;
};

LatentShardWriter::LatentShardWriter(std::string path, LatentShardAttributes attributes)
    : path_(std::move(path)), temp_path_(path_ + ".partial"), attributes_(std::move(attributes)) {
  hdf5::Lock lock;
  files_ = std::make_unique<Files>();
  files_->file = Handle(H5Fcreate(temp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  DCAE_CHECK(files_->file.valid(), "cannot create latent shard file '", temp_path_, "': ", hdf5::error_text());
}

LatentShardWriter::~LatentShardWriter() {
  if (closed_) return;
  files_.reset();
  std::error_code ignored;
  std::filesystem::remove(temp_path_, ignored);
}

void LatentShardWriter::append(const Tensor& latent, int64_t label, const std::string& name) {
  DCAE_CHECK(!closed_, "LatentShardWriter '", path_, "': append after close");
  DCAE_CHECK(latent.dim() == 3 && is_floating(latent.dtype()) && latent.device().is_cpu(), "LatentShardWriter '",
             path_, "': expected a floating-point CPU latent [h, w, C], got ", latent.str());
  hdf5::Lock lock;
  if (!files_->latents.valid()) {
    latent_shape_ = latent.shape();
    std::vector<hsize_t> dims = {0}, max_dims = {H5S_UNLIMITED}, chunk = {1};
    for (int64_t d : latent_shape_) {
      dims.push_back(static_cast<hsize_t>(d));
      max_dims.push_back(static_cast<hsize_t>(d));
      chunk.push_back(static_cast<hsize_t>(d));
    }
    Handle space(H5Screate_simple(4, dims.data(), max_dims.data()));
    Handle properties(H5Pcreate(H5P_DATASET_CREATE));
    H5Pset_chunk(properties.get(), 4, chunk.data());
    files_->latents = Handle(H5Dcreate2(files_->file.get(), "latents", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                                        properties.get(), H5P_DEFAULT));
    DCAE_CHECK(files_->latents.valid(), "latent shard '", path_, "': cannot create dataset 'latents': ",
               hdf5::error_text());
  }
  DCAE_CHECK(latent.shape() == latent_shape_, "LatentShardWriter '", path_,
             "': every latent of a shard has the same shape; expected ", shape_str(latent_shape_), ", got ",
             latent.str());
  const Tensor values = latent.to(DType::f32).contiguous();
  const std::vector<hsize_t> extent = {static_cast<hsize_t>(count() + 1), static_cast<hsize_t>(latent_shape_[0]),
                                       static_cast<hsize_t>(latent_shape_[1]), static_cast<hsize_t>(latent_shape_[2])};
  DCAE_CHECK(H5Dset_extent(files_->latents.get(), extent.data()) >= 0, "latent shard '", path_, "': cannot grow to ",
             count() + 1, " latents: ", hdf5::error_text());
  Handle file_space = select_rows(files_->latents.get(), latent_shape_, count(), 1);
  Handle memory_space = memory_rows(latent_shape_, 1);
  DCAE_CHECK(H5Dwrite(files_->latents.get(), H5T_NATIVE_FLOAT, memory_space.get(), file_space.get(), H5P_DEFAULT,
                      values.data<float>()) >= 0,
             "latent shard '", path_, "': cannot write latent ", count(), ": ", hdf5::error_text());
  labels_.push_back(label);
  names_.push_back(name);
}

void LatentShardWriter::close() {
  DCAE_CHECK(!closed_, "LatentShardWriter '", path_, "': closed twice");
  DCAE_CHECK(count() > 0, "LatentShardWriter '", path_, "': a latent shard needs at least one latent");
  {
    hdf5::Lock lock;
    const hid_t file = files_->file.get();
    const auto n = static_cast<hsize_t>(count());
    write_vector_dataset(file, "labels", H5T_STD_I64LE, H5T_NATIVE_INT64, n, labels_.data(), path_);
    std::vector<const char*> names(names_.size());
    for (size_t i = 0; i < names_.size(); ++i) names[i] = names_[i].c_str();
    Handle string_type = hdf5::vlen_string_type();
    write_vector_dataset(file, "names", string_type.get(), string_type.get(), n, names.data(), path_);
    hdf5::write_int_attribute(file, "format_version", kLatentShardFormatVersion);
    hdf5::write_int_attribute(file, "count", count());
    hdf5::write_string_attribute(file, "layout", kLatentLayout);
    write_double_attribute(file, "scaling_factor", attributes_.scaling_factor, path_);
    hdf5::write_string_attribute(file, "model", attributes_.model);
    hdf5::write_string_attribute(file, "source_shard", attributes_.source_shard);
    hdf5::write_int_attribute(file, "flipped", attributes_.flipped ? 1 : 0);
    files_->latents.reset();
    DCAE_CHECK(H5Fclose(files_->file.release()) >= 0, "latent shard '", path_,
               "': closing failed: ", hdf5::error_text());
  }
  std::filesystem::rename(temp_path_, path_);
  closed_ = true;
}

// ---------------------------------------------------------------------------------------------------- reader

struct LatentShardReader::Files {
  Handle file;  // declared first: closed last
  Handle latents;
};

LatentShardReader::LatentShardReader(std::string path) : path_(std::move(path)) {
  std::error_code error;
  DCAE_CHECK(std::filesystem::exists(path_, error), "latent shard '", path_, "' does not exist");
  DCAE_CHECK(std::filesystem::is_regular_file(path_, error), "latent shard '", path_, "' is not a regular file");
  hdf5::Lock lock;
  DCAE_CHECK(H5Fis_hdf5(path_.c_str()) > 0, "latent shard '", path_, "' is not an HDF5 file (",
             std::filesystem::file_size(path_, error), " bytes without the HDF5 signature)");
  files_ = std::make_unique<Files>();
  files_->file = Handle(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  DCAE_CHECK(files_->file.valid(), "latent shard '", path_, "' cannot be opened (corrupt or truncated): ",
             hdf5::error_text());
  const hid_t file = files_->file.get();

  DCAE_CHECK(H5Lexists(file, "latents", H5P_DEFAULT) > 0, "latent shard '", path_, "' has no 'latents' dataset",
             H5Lexists(file, "images", H5P_DEFAULT) > 0 || H5Lexists(file, "encoded", H5P_DEFAULT) > 0
                 ? " (it is an image shard; encode it with dcae-encode)"
                 : "");
  int64_t version = 0, count = -1, flipped = 0;
  DCAE_CHECK(hdf5::read_int_attribute(file, "format_version", version), "latent shard '", path_,
             "': no format_version attribute (not a dcae latent shard)");
  DCAE_CHECK(version == kLatentShardFormatVersion, "latent shard '", path_, "': format_version is ", version,
             " but this build reads version ", kLatentShardFormatVersion);
  std::string layout;
  DCAE_CHECK(hdf5::read_string_attribute(file, "layout", layout) && layout == kLatentLayout, "latent shard '", path_,
             "': the layout attribute must be '", kLatentLayout, "', got '", layout, "'");
  DCAE_CHECK(read_double_attribute(file, "scaling_factor", attributes_.scaling_factor), "latent shard '", path_,
             "': missing scaling_factor attribute");
  hdf5::read_string_attribute(file, "model", attributes_.model);
  hdf5::read_string_attribute(file, "source_shard", attributes_.source_shard);
  hdf5::read_int_attribute(file, "flipped", flipped);
  attributes_.flipped = flipped != 0;
  hdf5::read_int_attribute(file, "count", count);

  Handle labels = open_dataset(file, "labels", path_);
  const std::vector<int64_t> label_dims = hdf5::dataset_dims(labels.get());
  DCAE_CHECK(label_dims.size() == 1, "latent shard '", path_, "': labels must be 1-D, got ", dims_str(label_dims));
  labels_.resize(static_cast<size_t>(label_dims[0]));
  DCAE_CHECK(labels_.empty() || H5Dread(labels.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                        labels_.data()) >= 0,
             "latent shard '", path_, "': cannot read labels: ", hdf5::error_text());
  const int64_t n = size();
  DCAE_CHECK(count == n, "latent shard '", path_, "': the count attribute says ", count, " latents but labels has ",
             n);

  Handle names = open_dataset(file, "names", path_);
  DCAE_CHECK(hdf5::dataset_dims(names.get()) == std::vector<int64_t>{n}, "latent shard '", path_,
             "': names has shape ", dims_str(hdf5::dataset_dims(names.get())), ", expected [", n, "]");
  Handle string_type = hdf5::vlen_string_type();
  std::vector<char*> texts(static_cast<size_t>(n), nullptr);
  DCAE_CHECK(n == 0 || H5Dread(names.get(), string_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, texts.data()) >= 0,
             "latent shard '", path_, "': cannot read names: ", hdf5::error_text());
  for (char* text : texts) names_.emplace_back(text != nullptr ? text : "");
  if (n > 0) {
    Handle space(H5Dget_space(names.get()));
    hdf5::reclaim_vlen(string_type.get(), space.get(), texts.data());
  }

  files_->latents = open_dataset(file, "latents", path_);
  const std::vector<int64_t> dims = hdf5::dataset_dims(files_->latents.get());
  DCAE_CHECK(dims.size() == 4 && dims[0] == n && dims[1] > 0 && dims[2] > 0 && dims[3] > 0, "latent shard '", path_,
             "': latents has shape ", dims_str(dims), ", expected [", n, ", h, w, C]");
  Handle type(H5Dget_type(files_->latents.get()));
  DCAE_CHECK(H5Tget_class(type.get()) == H5T_FLOAT && H5Tget_size(type.get()) == 4, "latent shard '", path_,
             "': latents must be float32");
  latent_shape_ = {dims[1], dims[2], dims[3]};
}

LatentShardReader::~LatentShardReader() = default;

Tensor LatentShardReader::latents(int64_t start, int64_t count) const {
  DCAE_CHECK(start >= 0 && count >= 0 && start + count <= size(), "latent shard '", path_, "': latents [", start,
             ", ", start + count, ") out of range [0, ", size(), ")");
  Tensor out = empty({count, latent_shape_[0], latent_shape_[1], latent_shape_[2]}, DType::f32);
  if (count == 0) return out;
  hdf5::Lock lock;
  Handle file_space = select_rows(files_->latents.get(), latent_shape_, start, count);
  Handle memory_space = memory_rows(latent_shape_, count);
  DCAE_CHECK(H5Dread(files_->latents.get(), H5T_NATIVE_FLOAT, memory_space.get(), file_space.get(), H5P_DEFAULT,
                     out.data<float>()) >= 0,
             "latent shard '", path_, "': cannot read latents [", start, ", ", start + count,
             ") (corrupt or truncated?): ", hdf5::error_text());
  return out;
}

Tensor LatentShardReader::latent(int64_t i) const {
  DCAE_CHECK(i >= 0 && i < size(), "latent shard '", path_, "': latent index ", i, " out of range [0, ", size(), ")");
  return latents(i, 1).select(0, 0);
}

int64_t LatentShardReader::label(int64_t i) const {
  DCAE_CHECK(i >= 0 && i < size(), "latent shard '", path_, "': label index ", i, " out of range [0, ", size(), ")");
  return labels_[static_cast<size_t>(i)];
}

const std::string& LatentShardReader::name(int64_t i) const {
  DCAE_CHECK(i >= 0 && i < size(), "latent shard '", path_, "': name index ", i, " out of range [0, ", size(), ")");
  return names_[static_cast<size_t>(i)];
}

}  // namespace dcae::datasets
