#include "tools/common/cli.h"

#include <glog/logging.h>

#include <iostream>

#include "core/tensor/error.h"

namespace dcae::tools {

int run_tool(int argc, char** argv, const std::string& summary, po::options_description options,
             const std::function<int(const po::variables_map&)>& body) {
  const std::string program = argc > 0 ? argv[0] : "dcae";
  options.add_options()("help,h", "print this help")(
      "log-dir", po::value<std::string>()->default_value(""), "also write glog files here (default: stderr only)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    if (vm.count("help")) {
      std::cout << summary << "\n\n" << options << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << program << ": " << e.what() << " (see --help)\n";
    return 2;
  }
  FLAGS_logtostderr = vm["log-dir"].as<std::string>().empty();
  FLAGS_alsologtostderr = true;
  if (!FLAGS_logtostderr) FLAGS_log_dir = vm["log-dir"].as<std::string>();
  google::InitGoogleLogging(program.c_str());
  try {
    return body(vm);
  } catch (const Error& e) {
    std::cerr << program << ": error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << program << ": unexpected error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace dcae::tools
