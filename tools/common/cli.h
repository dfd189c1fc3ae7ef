// The frame every dcae executable runs in: glog set up, Boost.Program_options with --help, and any error turned
// into one clear line on stderr and a non-zero exit.
#pragma once
#include <boost/program_options.hpp>
#include <functional>
#include <string>

namespace dcae::tools {

namespace po = boost::program_options;

// Parses argv against `options` (adds --help and --log-dir), initialises glog, runs `body`. Returns the exit code.
int run_tool(int argc, char** argv, const std::string& summary, po::options_description options,
             const std::function<int(const po::variables_map&)>& body);

}  // namespace dcae::tools
