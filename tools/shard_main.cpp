// dcae-shard: image folders or file lists -> HDF5 shards + manifest.json (+ classes.json) for the loader.
#include <glog/logging.h>

#include <thread>

#include "datasets/shard_builder.h"
#include "tools/common/cli.h"

namespace {

using namespace dcae;
using namespace dcae::datasets;
namespace po = boost::program_options;

int run(const po::variables_map& vm) {
  const std::string input = vm["input"].as<std::string>(), input_list = vm["input-list"].as<std::string>();
  DCAE_CHECK(input.empty() != input_list.empty(), "give exactly one of --input DIR and --input-list FILE");
  const bool labels = vm.count("labels-from-folders") > 0;
  const InputSet inputs = input.empty() ? list_from_file(input_list, labels) : list_image_folder(input, labels);

  ShardBuildOptions options;
  options.output_dir = vm["output"].as<std::string>();
  options.resolution = vm["resolution"].as<int64_t>();
  options.images_per_shard = vm["images-per-shard"].as<int64_t>();
  options.workers = vm["workers"].as<int>();
  if (options.workers <= 0) options.workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  options.crop = crop_method_from_name(vm["crop"].as<std::string>());
  options.storage = storage_from_name(vm["storage"].as<std::string>());
  options.codec = vm["codec"].as<std::string>();
  options.jpeg_quality = vm["jpeg-quality"].as<int>();
  options.overwrite = vm.count("overwrite") > 0;
  options.progress_seconds = vm["progress-seconds"].as<double>();

  LOG(INFO) << "dcae-shard: " << inputs.images.size() << " files from '" << inputs.source << "'"
            << (labels ? ", " + std::to_string(inputs.classes.size()) + " classes" : std::string())
            << " -> '" << options.output_dir << "' at " << options.resolution << "^2 ("
            << crop_method_name(options.crop) << ", " << storage_name(options.storage)
            << (options.storage == ShardStorage::encoded ? " " + options.codec : std::string()) << "), "
            << options.workers << " workers";
  const ShardBuildSummary summary = build_shards(inputs, options);
  LOG(INFO) << "dcae-shard: wrote " << summary.written << " images in " << summary.shards << " shards to '"
            << options.output_dir << "' in " << summary.seconds << " s; skipped " << summary.skipped << " of "
            << summary.inputs << " files (corrupt, truncated, not an image or unlabelled)";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description options("dcae-shard options");
  options.add_options()
      ("input", po::value<std::string>()->default_value(""), "image folder, searched recursively")
      ("input-list", po::value<std::string>()->default_value(""), "text file with one image path per line")
      ("output", po::value<std::string>()->required(), "output folder for shard-*.h5 and manifest.json")
      ("resolution", po::value<int64_t>()->required(), "side of the stored square images")
      ("images-per-shard", po::value<int64_t>()->default_value(1000), "images per shard file")
      ("workers", po::value<int>()->default_value(0), "decoding threads (0: one per core)")
      ("crop", po::value<std::string>()->default_value("dmcrop"), "dmcrop (ADM centre crop) or resize")
      ("storage", po::value<std::string>()->default_value("raw"), "raw (uint8 pixels) or encoded (image bytes)")
      ("codec", po::value<std::string>()->default_value("png"), "encoded storage: png (lossless) or jpeg")
      ("jpeg-quality", po::value<int>()->default_value(95), "JPEG quality for --codec jpeg")
      ("labels-from-folders", "label each image by its class folder; class list saved as classes.json")
      ("overwrite", "replace the shards of an earlier run in --output")
      ("progress-seconds", po::value<double>()->default_value(5.0), "seconds between progress lines");
  return dcae::tools::run_tool(argc, argv,
                               "dcae-shard: convert image folders to HDF5 shards for dcae training.\n"
                               "  dcae-shard --input DIR --output DIR --resolution N [options]",
                               options, run);
}
