// Errors are exceptions that name what was expected and what was found; tools print them as one line.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace dcae {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& out, const T& first, const Rest&... rest) {
  out << first;
  append(out, rest...);
}
template <typename... Args>
[[noreturn]] void fail(const char* file, int line, const char* condition, const Args&... args) {
  std::ostringstream out;
  append(out, args...);
  if (condition != nullptr) out << " [check '" << condition << "' failed at " << file << ":" << line << "]";
  throw Error(out.str());
}
}  // namespace detail

}  // namespace dcae

// DCAE_CHECK(cond, "message parts", shape, ...): throws dcae::Error with the parts streamed together.
#define DCAE_CHECK(cond, ...)                                                    \
  do {                                                                           \
    if (!(cond)) ::dcae::detail::fail(__FILE__, __LINE__, #cond, __VA_ARGS__);   \
  } while (0)

#define DCAE_FAIL(...) ::dcae::detail::fail(__FILE__, __LINE__, nullptr, __VA_ARGS__)
