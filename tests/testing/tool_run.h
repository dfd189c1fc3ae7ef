// Running a built dcae executable from a test: $DCAE_BIN/<name>, else next to the test binary (both in build/bin).
#pragma once
#include <string>

namespace dcae::testing {

std::string built_tool_path(const std::string& name);

struct ToolRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `name arguments` through the shell, capturing its output in `log_path`.
ToolRun run_built_tool(const std::string& name, const std::string& arguments, const std::string& log_path);

}  // namespace dcae::testing
