#include "dist/sharded_checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "dist/shard_layout.h"
#include "nn/io/safetensors.h"

namespace dcae::dist {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "dcae-sharded-checkpoint";
constexpr const char* kManifest = "manifest.json";
constexpr const char* kComplete = "COMPLETE";

std::string rank_file(int rank) {
  char name[40];
  std::snprintf(name, sizeof(name), "rank_%05d.safetensors", rank);
  return name;
}

int64_t row_count(const Shape& full_shape) { return full_shape.empty() ? 1 : full_shape[0]; }

// Rows [begin, end) of contiguous `t` (which holds `rows` rows), viewed as [rows, row_numel]: writes go to t.
Tensor row_block(const Tensor& t, const Shape& full_shape, int64_t rows, int64_t begin, int64_t end) {
  const int64_t row_numel = ShardLayout::make(full_shape, 1).row_numel;
  return t.view({rows, row_numel}).narrow(0, begin, end - begin);
}

// Stops every rank with the same error when any rank failed a local step (nobody is left waiting in a barrier).
void agree_on_failure(Communicator& comm, const std::string& local_error, const std::string& what) {
  Tensor failed = from_vector<int64_t>({local_error.empty() ? 0 : 1}, {1});
  comm.all_reduce(failed, ReduceOp::sum);
  DCAE_CHECK(local_error.empty(), local_error);
  DCAE_CHECK(failed.item<int64_t>() == 0, what, ": ", failed.item<int64_t>(),
             " other rank(s) failed (see their error)");
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  const fs::path temp = path.string() + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    DCAE_CHECK(out.good(), "cannot write '", temp.string(), "'");
    out << text;
    out.flush();
    DCAE_CHECK(out.good(), "writing '", temp.string(), "' failed (disk full?)");
  }
  fs::rename(temp, path);
}

}  // namespace

ShardedTensor replicated(const std::string& name, const Tensor& t, int rank, bool trainable) {
  const int64_t rows = row_count(t.shape());
  ShardLayout layout = ShardLayout::make(t.shape(), 1);
  Tensor all_rows = t.detach().reshape(layout.rows_shape(rows));
  const int64_t held = rank == 0 ? rows : 0;
  return {name, t.shape(), trainable, 0, held, all_rows.narrow(0, 0, held)};
}

void save_sharded_checkpoint(const std::string& dir, Communicator& comm, const std::vector<ShardedTensor>& tensors,
                             const nlohmann::json& metadata) {
  const int rank = comm.rank();
  const int world = comm.size();
  const std::string what = "sharded checkpoint '" + dir + "'";

  // Every rank must describe the same tensors: compare counts, then one hash per tensor, with rank 0's.
  Tensor counts = empty({world}, DType::i64);
  comm.all_gather(counts, from_vector<int64_t>({static_cast<int64_t>(tensors.size())}, {1}));
  for (int r = 0; r < world; ++r)
    DCAE_CHECK(counts.to_vector<int64_t>()[r] == static_cast<int64_t>(tensors.size()), what, ": rank ", r, " saves ",
               counts.to_vector<int64_t>()[r], " tensors but rank ", rank, " saves ", tensors.size());
  const int64_t n = static_cast<int64_t>(tensors.size());
  std::vector<int64_t> local(static_cast<size_t>(3 * n));
  for (int64_t i = 0; i < n; ++i) {
    const ShardedTensor& t = tensors[static_cast<size_t>(i)];
    const int64_t rows = row_count(t.full_shape);
    DCAE_CHECK(t.data.defined(), what, ": tensor '", t.name, "' has no data");
    DCAE_CHECK(t.row_begin >= 0 && t.row_begin <= t.row_end && t.row_end <= rows, what, ": tensor '", t.name,
               "' holds rows [", t.row_begin, ", ", t.row_end, ") of ", shape_str(t.full_shape));
    DCAE_CHECK(t.data.shape() == ShardLayout::make(t.full_shape, 1).rows_shape(t.row_end - t.row_begin), what,
               ": tensor '", t.name, "' data ", t.data.str(), " does not hold rows [", t.row_begin, ", ", t.row_end,
               ") of ", shape_str(t.full_shape));
    const std::string key =
        t.name + "|" + shape_str(t.full_shape) + "|" + dtype_name(t.data.dtype()) + "|" + (t.trainable ? "1" : "0");
    local[3 * i] = static_cast<int64_t>(std::hash<std::string>{}(key)&0x7fffffffffffffffULL);
    local[3 * i + 1] = t.row_begin;
    local[3 * i + 2] = t.row_end;
  }
  Tensor all = empty({world * 3 * n}, DType::i64);
  comm.all_gather(all, from_vector<int64_t>(local, {3 * n}));
  const std::vector<int64_t> table = all.to_vector<int64_t>();
  nlohmann::json entries = nlohmann::json::array();
  for (int64_t i = 0; i < n; ++i) {
    const ShardedTensor& t = tensors[static_cast<size_t>(i)];
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (int r = 0; r < world; ++r) {
      const int64_t* row = &table[static_cast<size_t>((r * n + i) * 3)];
      DCAE_CHECK(row[0] == local[3 * i], what, ": tensor #", i, " ('", t.name, "' ", shape_str(t.full_shape), " ",
                 dtype_name(t.data.dtype()), " on rank ", rank, ") differs in name, shape, dtype or trainable on rank ",
                 r);
      ranges.emplace_back(row[1], row[2]);
    }
    // Together the ranks must hold every row exactly once.
    std::vector<std::pair<int64_t, int64_t>> sorted = ranges;
    std::sort(sorted.begin(), sorted.end());
    int64_t covered = 0;
    for (const auto& [begin, end] : sorted) {
      if (begin == end) continue;
      DCAE_CHECK(begin == covered, what, ": tensor '", t.name, "': the ranks' row ranges do not tile [0, ",
                 row_count(t.full_shape), ") (", begin < covered ? "overlap" : "gap", " at row ",
                 std::min(begin, covered), ")");
      covered = end;
    }
    DCAE_CHECK(covered == row_count(t.full_shape), what, ": tensor '", t.name, "' rows [", covered, ", ",
               row_count(t.full_shape), ") are held by no rank");
    entries.push_back({{"name", t.name},
                       {"shape", t.full_shape},
                       {"dtype", dtype_name(t.data.dtype())},
                       {"trainable", t.trainable},
                       {"rows", ranges}});
  }

  const fs::path final_dir(dir);
  const fs::path partial(dir + ".partial");
  std::string error;
  if (rank == 0) {
    try {
      fs::remove_all(partial);
      fs::create_directories(partial);
    } catch (const std::exception& e) {
      error = what + ": cannot create '" + partial.string() + "': " + e.what();
    }
  }
  agree_on_failure(comm, error, what);
  try {
    // Rows a rank does not hold are not written (nn::SafetensorsFile refuses several empty tensors at one offset);
    // the manifest's empty range already says there is nothing to read.
    std::vector<nn::NamedTensor> named;
    for (const ShardedTensor& t : tensors)
      if (t.row_end > t.row_begin) named.emplace_back(t.name, t.data);
    nn::write_safetensors((partial / rank_file(rank)).string(), named, {{"rank", std::to_string(rank)}});
  } catch (const std::exception& e) {
    error = what + ": rank " + std::to_string(rank) + " could not write its shard file: " + e.what();
  }
  agree_on_failure(comm, error, what);
  if (rank == 0) {
    try {
      nlohmann::json files = nlohmann::json::array();
      for (int r = 0; r < world; ++r) files.push_back(rank_file(r));
      const nlohmann::json manifest = {{"format", kFormat}, {"version", 1},       {"world_size", world},
                                       {"files", files},    {"tensors", entries}, {"metadata", metadata}};
      write_text_atomically(partial / kManifest, manifest.dump(1));
      write_text_atomically(partial / kComplete, "ok\n");
      fs::remove_all(final_dir);
      fs::rename(partial, final_dir);
    } catch (const std::exception& e) {
      error = what + ": finishing the checkpoint failed: " + e.what();
    }
  }
  agree_on_failure(comm, error, what);
}

bool is_complete_sharded_checkpoint(const std::string& dir) {
  return fs::exists(fs::path(dir) / kComplete) && fs::exists(fs::path(dir) / kManifest);
}

ShardedManifest read_sharded_manifest(const std::string& dir) {
  DCAE_CHECK(is_complete_sharded_checkpoint(dir), "'", dir, "' is not a complete sharded checkpoint (no ", kComplete,
             " marker or no ", kManifest, ")");
  const std::string path = (fs::path(dir) / kManifest).string();
  std::ifstream in(path);
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    DCAE_FAIL("sharded checkpoint manifest '", path, "' is not valid JSON: ", e.what());
  }
  try {
    DCAE_CHECK(j.at("format").get<std::string>() == kFormat, "'", path, "' is not a ", kFormat, " manifest");
    ShardedManifest manifest;
    manifest.world_size = j.at("world_size").get<int>();
    manifest.metadata = j.value("metadata", nlohmann::json::object());
    for (const auto& e : j.at("tensors")) {
      ShardedManifest::Entry entry;
      entry.name = e.at("name").get<std::string>();
      entry.full_shape = e.at("shape").get<Shape>();
      entry.dtype = dtype_from_name(e.at("dtype").get<std::string>());
      entry.trainable = e.at("trainable").get<bool>();
      entry.rows = e.at("rows").get<std::vector<std::pair<int64_t, int64_t>>>();
      DCAE_CHECK(static_cast<int>(entry.rows.size()) == manifest.world_size, "'", path, "': tensor '", entry.name,
                 "' lists ", entry.rows.size(), " row ranges for ", manifest.world_size, " ranks");
      manifest.entries.push_back(std::move(entry));
    }
    return manifest;
  } catch (const nlohmann::json::exception& e) {
    DCAE_FAIL("sharded checkpoint manifest '", path, "' is malformed: ", e.what());
  }
}

namespace {

// The writing ranks' files, opened on first use.
class ShardFiles {
 public:
  ShardFiles(std::string dir, int world) : dir_(std::move(dir)), files_(static_cast<size_t>(world)) {}
  Tensor load(int rank, const std::string& name) {
    auto& file = files_[static_cast<size_t>(rank)];
    if (!file) file = std::make_unique<nn::SafetensorsFile>((fs::path(dir_) / rank_file(rank)).string());
    return file->load(name);
  }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<nn::SafetensorsFile>> files_;
};

// Copies the stored rows of `entry` that fall in [begin, end) into `into` (which holds rows [begin, end)).
void copy_rows(ShardFiles& files, const ShardedManifest::Entry& entry, int64_t begin, int64_t end, const Tensor& into) {
  for (size_t w = 0; w < entry.rows.size(); ++w) {
    const auto [stored_begin, stored_end] = entry.rows[w];
    const int64_t lo = std::max(begin, stored_begin), hi = std::min(end, stored_end);
    if (lo >= hi) continue;
    Tensor stored = files.load(static_cast<int>(w), entry.name);
    Tensor from = row_block(stored, entry.full_shape, stored_end - stored_begin, lo - stored_begin, hi - stored_begin);
    copy_strided(row_block(into, entry.full_shape, end - begin, lo - begin, hi - begin), from);
  }
}

}  // namespace

void load_sharded_checkpoint(const std::string& dir, const std::vector<ShardedTensor>& targets) {
  const ShardedManifest manifest = read_sharded_manifest(dir);
  std::map<std::string, const ShardedManifest::Entry*> by_name;
  for (const auto& entry : manifest.entries) by_name[entry.name] = &entry;
  ShardFiles files(dir, manifest.world_size);
  for (const ShardedTensor& target : targets) {
    auto it = by_name.find(target.name);
    DCAE_CHECK(it != by_name.end(), "sharded checkpoint '", dir, "' has no tensor '", target.name, "' (",
               manifest.entries.size(), " tensors)");
    const ShardedManifest::Entry& entry = *it->second;
    DCAE_CHECK(entry.full_shape == target.full_shape, "sharded checkpoint '", dir, "': tensor '", target.name, "' is ",
               shape_str(entry.full_shape), " there but ", shape_str(target.full_shape), " here");
    DCAE_CHECK(
        target.data.shape() == ShardLayout::make(target.full_shape, 1).rows_shape(target.row_end - target.row_begin),
        "load of '", target.name, "': data ", target.data.str(), " does not hold rows [", target.row_begin, ", ",
        target.row_end, ") of ", shape_str(target.full_shape));
    DCAE_CHECK(target.data.is_contiguous(), "load of '", target.name, "': data ", target.data.str(),
               " must be contiguous");
    if (target.row_end > target.row_begin) copy_rows(files, entry, target.row_begin, target.row_end, target.data);
  }
}

std::vector<nn::NamedTensor> consolidate_sharded_checkpoint(const std::string& dir) {
  const ShardedManifest manifest = read_sharded_manifest(dir);
  ShardFiles files(dir, manifest.world_size);
  std::vector<nn::NamedTensor> out;
  for (const auto& entry : manifest.entries) {
    Tensor full = empty(entry.full_shape, entry.dtype);
    copy_rows(files, entry, 0, row_count(entry.full_shape), full);
    out.emplace_back(entry.name, full);
  }
  return out;
}

void consolidate_to_safetensors(const std::string& dir, const std::string& path) {
  nn::write_safetensors(path, consolidate_sharded_checkpoint(dir), {{"format", "pt"}});
}

}  // namespace dcae::dist
