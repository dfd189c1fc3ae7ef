#include "tests/testing/tool_run.h"

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace dcae::testing {

std::string built_tool_path(const std::string& name) {
  namespace fs = std::filesystem;
  const char* bin = std::getenv("DCAE_BIN");
  const fs::path dir = bin != nullptr && *bin != '\0' ? fs::path(bin) : fs::read_symlink("/proc/self/exe").parent_path();
  return (dir / name).string();
}

ToolRun run_built_tool(const std::string& name, const std::string& arguments, const std::string& log_path) {
  const std::string command = "'" + built_tool_path(name) + "' " + arguments + " > '" + log_path + "' 2>&1";
  const int status = std::system(command.c_str());
  ToolRun result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(log_path);
  std::stringstream text;
  text << in.rdbuf();
  result.output = text.str();
  return result;
}

}  // namespace dcae::testing
