// dcae-shard end to end: the built tool runs on a generated folder with bad files inside.
#include <gtest/gtest.h>

#include "tests/testing/tool_run.h"
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "datasets/image_decode.h"
#include "datasets/image_resize.h"
#include "datasets/manifest.h"
#include "datasets/png.h"
#include "datasets/shard_format.h"
#include "tests/datasets/datasets_testing.h"

namespace dcae::datasets {
namespace {

using testing::ScratchDir;
using testing::synthetic_image;
namespace fs = std::filesystem;

// $DCAE_BIN/dcae-shard, else next to this test binary (both land in build/bin).
using RunResult = dcae::testing::ToolRun;

RunResult run_tool(const std::string& arguments, const ScratchDir& scratch) {
  return dcae::testing::run_built_tool("dcae-shard", arguments, scratch / "tool.log");
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// in/cat/{a.png, b.jpg, broken.jpg}, in/dog/{c.png, nested/d.png, notes.txt, e.jpg}, in/README (top level).
// Good images have assorted sizes and aspect ratios; returns the good ones' relative names in sorted order.
std::vector<std::string> make_image_folder(const std::string& root) {
  fs::create_directories(fs::path(root) / "cat");
  fs::create_directories(fs::path(root) / "dog" / "nested");
  write_png(root + "/cat/a.png", synthetic_image(40, 60, 1));
  write_bytes(root + "/cat/b.jpg", encode_jpeg(synthetic_image(33, 21, 2), 95));
  std::vector<uint8_t> broken = encode_jpeg(synthetic_image(64, 64, 3), 95);
  broken.resize(broken.size() * 2 / 3);
  write_bytes(root + "/cat/broken.jpg", broken);
  write_png(root + "/dog/c.png", synthetic_image(16, 16, 4));
  write_png(root + "/dog/nested/d.png", synthetic_image(70, 35, 5));
  std::ofstream(root + "/dog/notes.txt") << "not an image";
  write_bytes(root + "/dog/e.jpg", encode_jpeg(synthetic_image(50, 50, 6), 95));
  std::ofstream(root + "/README") << "top-level file";
  return {"cat/a.png", "cat/b.jpg", "dog/c.png", "dog/e.jpg", "dog/nested/d.png"};
}

TEST(ShardTool, ShardsAFolderSkippingBadFilesWithLabelsFromFolders) {
  ScratchDir scratch("tool");
  ASSERT_TRUE(fs::exists(dcae::testing::built_tool_path("dcae-shard"))) << dcae::testing::built_tool_path("dcae-shard") << " was not built (it is a dependency of this test binary)";
  const std::string in = scratch / "in", out = scratch / "out";
  const std::vector<std::string> good = make_image_folder(in);
  const RunResult run = run_tool("--input '" + in + "' --output '" + out +
                                     "' --resolution 16 --images-per-shard 2 --workers 3 --labels-from-folders",
                                 scratch);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  // One warning per bad file, and the summary counts them.
  for (const std::string bad : {"'" + in + "/cat/broken.jpg': truncated JPEG", "'" + in + "/dog/notes.txt': '",
                                 in + "/README: not inside a class folder"})
    EXPECT_NE(run.output.find("skipping " + bad), std::string::npos) << bad << "\n" << run.output;
  EXPECT_NE(run.output.find("wrote 5 images in 3 shards"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("skipped 3 of 8 files"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("files/s, ETA"), std::string::npos) << run.output;

  const Manifest manifest = read_manifest(out);
  EXPECT_EQ(manifest.total(), 5);
  ASSERT_EQ(manifest.shards.size(), 3u);
  EXPECT_EQ(manifest.shards[2].file, "shard-00002.h5");
  EXPECT_EQ(manifest.num_classes, 2);
  EXPECT_EQ(read_classes(out), (std::vector<std::string>{"cat", "dog"}));
  std::vector<std::string> names;
  for (const ShardEntry& entry : manifest.shards) {
    EXPECT_EQ(check_shard_file(out, entry), "");
    const ShardReader reader((fs::path(out) / entry.file).string());
    EXPECT_EQ(reader.size(), entry.count);
    EXPECT_EQ(reader.attributes().crop, "dmcrop");
    for (int64_t i = 0; i < reader.size(); ++i) {
      names.push_back(reader.name(i));
      EXPECT_EQ(reader.label(i), reader.name(i).rfind("cat/", 0) == 0 ? 0 : 1) << reader.name(i);
      const Tensor expected = dmcrop(read_image_file(in + "/" + reader.name(i)), 16);
      EXPECT_EQ(reader.image(i).to_vector<uint8_t>(), expected.to_vector<uint8_t>()) << reader.name(i);
    }
  }
  EXPECT_EQ(names, good);

  // A second run refuses to overwrite; --overwrite replaces the earlier shards.
  const std::string again = "--input '" + in + "' --output '" + out + "' --resolution 8 --images-per-shard 10";
  const RunResult refused = run_tool(again, scratch);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("refusing to overwrite"), std::string::npos) << refused.output;
  const RunResult replaced = run_tool(again + " --overwrite", scratch);
  ASSERT_EQ(replaced.exit_code, 0) << replaced.output;
  EXPECT_EQ(read_manifest(out).shards.size(), 1u);
  EXPECT_FALSE(fs::exists(fs::path(out) / "shard-00002.h5"));
  EXPECT_FALSE(fs::exists(fs::path(out) / "classes.json"));
  EXPECT_EQ(ShardReader((fs::path(out) / "shard-00000.h5").string()).label(0), -1);
}

TEST(ShardTool, FileListsEncodedStorageAndResizeMode) {
  ScratchDir scratch("tool_list");
  const std::string in = scratch / "in", out = scratch / "out";
  make_image_folder(in);
  std::ofstream(scratch / "list.txt") << "# two images\nin/dog/c.png\n\n" << in << "/cat/a.png  \nin/cat/broken.jpg\n";
  const RunResult run = run_tool("--input-list '" + (scratch / "list.txt") + "' --output '" + out +
                                     "' --resolution 12 --storage encoded --crop resize --labels-from-folders",
                                 scratch);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("skipped 1 of 3 files"), std::string::npos) << run.output;
  const ShardReader reader(out + "/shard-00000.h5");
  ASSERT_EQ(reader.size(), 2);
  EXPECT_EQ(reader.attributes().storage, ShardStorage::encoded);
  EXPECT_EQ(reader.attributes().crop, "resize");
  EXPECT_EQ(reader.name(0), "in/dog/c.png");
  EXPECT_EQ(reader.labels(), (std::vector<int64_t>{1, 0}));  // classes sorted: cat, dog
  const Tensor expected = resize_image(read_image_file(in + "/cat/a.png"), 12, 12, ResizeFilter::bicubic);
  EXPECT_EQ(reader.image(1).to_vector<uint8_t>(), expected.to_vector<uint8_t>());  // PNG is lossless
}

TEST(ShardTool, EmptyOrUnusableInputAndBadOptionsAreErrors) {
  ScratchDir scratch("tool_errors");
  fs::create_directories(scratch / "empty");
  RunResult run = run_tool("--input '" + (scratch / "empty") + "' --output '" + (scratch / "o1") + "' --resolution 8",
                           scratch);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("no input files found"), std::string::npos) << run.output;
  fs::create_directories(scratch / "junk");
  std::ofstream(scratch / "junk/a.txt") << "text";
  run = run_tool("--input '" + (scratch / "junk") + "' --output '" + (scratch / "o2") + "' --resolution 8", scratch);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("could be used"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(fs::path(scratch / "o2") / "manifest.json"));
  run = run_tool("--input '" + (scratch / "junk") + "' --output x --resolution 8 --crop squash", scratch);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("squash"), std::string::npos) << run.output;
  run = run_tool("--output x", scratch);  // --resolution missing
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("resolution"), std::string::npos) << run.output;
}

}  // namespace
}  // namespace dcae::datasets
