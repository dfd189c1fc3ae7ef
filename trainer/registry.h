// Registry<Factory>: named factories of one kind (optimizers, LR schedules, ... and, from plugins, anything new).
// A recipe picks an implementation by name; an unknown name is an error that lists the known ones.
#pragma once
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor/error.h"

namespace dcae::trainer {

template <typename Factory>
class Registry {
 public:
  // `kind` names the registry in messages: "optimizer", "lr schedule".
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  const std::string& kind() const { return kind_; }

  // Registering a name twice is an error: a plugin must not silently replace a built-in.
  void add(const std::string& name, Factory factory, std::string doc = "") {
    DCAE_CHECK(!name.empty(), "cannot register an ", kind_, " with an empty name");
    DCAE_CHECK(entries_.count(name) == 0, kind_, " '", name, "' is already registered");
    entries_.emplace(name, Entry{std::move(factory), std::move(doc)});
  }

  bool contains(const std::string& name) const { return entries_.count(name) != 0; }

  const Factory& get(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) DCAE_FAIL("unknown ", kind_, " '", name, "'; known: ", known_list());
    return it->second.factory;
  }

  // Calls the named factory with `args`.
  template <typename... Args>
  auto create(const std::string& name, Args&&... args) const {
    return get(name)(std::forward<Args>(args)...);
  }

  const std::string& doc(const std::string& name) const {
    get(name);  // throws for an unknown name
    return entries_.at(name).doc;
  }

  std::vector<std::string> names() const {  // sorted
    std::vector<std::string> out;
    for (const auto& [name, entry] : entries_) out.push_back(name);
    return out;
  }

 private:
  struct Entry {
    Factory factory;
    std::string doc;
  };

  std::string known_list() const {
    if (entries_.empty()) return "(none registered)";
    std::ostringstream out;
    bool first = true;
    for (const auto& [name, entry] : entries_) {
      out << (first ? "" : ", ") << name;
      first = false;
    }
    return out.str();
  }

  std::string kind_;
  std::map<std::string, Entry> entries_;
};

}  // namespace dcae::trainer
