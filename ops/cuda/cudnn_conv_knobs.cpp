#include "ops/cuda/cudnn_conv_knobs.h"

#include <algorithm>
#include <cstdint>
#include <map>

namespace dcae::ops::cuda::cudnn_conv_detail {

namespace {

constexpr int kValuesPerKnob = 8;

// Reads an array attribute of descriptors of `type` that cuDNN fills into descriptors we create.
std::vector<Descriptor> descriptor_array(const Descriptor& owner, cudnnBackendAttributeName_t name,
                                         cudnnBackendDescriptorType_t type, int64_t capacity) {
  std::vector<Descriptor> items;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < capacity; ++i) {
    items.emplace_back(type);
    raw.push_back(items.back().get());
  }
  int64_t returned = 0;
  if (cudnnBackendGetAttribute(owner.get(), name, CUDNN_TYPE_BACKEND_DESCRIPTOR, capacity, &returned, raw.data()) !=
      CUDNN_STATUS_SUCCESS)
    return {};
  items.erase(items.begin() + std::clamp<int64_t>(returned, 0, capacity), items.end());
  return items;
}

int64_t int_attribute(const Descriptor& d, cudnnBackendAttributeName_t name, int64_t fallback) {
  int64_t value = fallback, returned = 0;
  if (cudnnBackendGetAttribute(d.get(), name, CUDNN_TYPE_INT64, 1, &returned, &value) != CUDNN_STATUS_SUCCESS)
    return fallback;
  return value;
}

struct KnobRange {
  int64_t min, max, stride;
};

// The configuration of engine `engine_index` on `graph` with `choices` (knob type -> value); empty when cuDNN
// refuses it.
std::vector<KnobVariant> make_config(const Descriptor& graph, int64_t engine_index,
                                     const std::map<cudnnBackendKnobType_t, int64_t>& choices) {
  std::vector<KnobVariant> out;
  Descriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  engine.set_descriptor(CUDNN_ATTR_ENGINE_OPERATION_GRAPH, graph);
  engine.set(CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &engine_index);
  if (!engine.try_finalize()) return out;
  std::vector<Descriptor> knobs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (const auto& [type, value] : choices) {
    Descriptor& knob = knobs.emplace_back(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
    knob.set(CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &type);
    knob.set(CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &value);
    if (!knob.try_finalize()) return out;
    raw.push_back(knob.get());
  }
  Descriptor config(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
  config.set_descriptor(CUDNN_ATTR_ENGINECFG_ENGINE, engine);
  if (!raw.empty())
    config.set(CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(raw.size()),
               raw.data());
  if (!config.try_finalize()) return out;
  KnobVariant& made = out.emplace_back(KnobVariant{std::move(config), std::move(knobs)});
  made.parts.push_back(std::move(engine));
  return out;
}

}  // namespace

std::vector<KnobVariant> knob_variants(const Descriptor& graph, const Descriptor& config, int max_variants) {
  std::vector<KnobVariant> variants;
  std::vector<Descriptor> engines =
      descriptor_array(config, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_BACKEND_ENGINE_DESCRIPTOR, 1);
  if (engines.empty()) return variants;
  const int64_t engine_index = int_attribute(engines[0], CUDNN_ATTR_ENGINE_GLOBAL_INDEX, -1);
  if (engine_index < 0) return variants;
  // The heuristic's knob settings, then the legal range of every knob the engine has.
  std::map<cudnnBackendKnobType_t, int64_t> chosen;
  for (const Descriptor& choice : descriptor_array(config, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES,
                                                   CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR, CUDNN_KNOB_TYPE_COUNTS)) {
    cudnnBackendKnobType_t type{};
    int64_t returned = 0, value = 0;
    if (cudnnBackendGetAttribute(choice.get(), CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &returned,
                                 &type) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendGetAttribute(choice.get(), CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &returned,
                                 &value) != CUDNN_STATUS_SUCCESS)
      continue;
    chosen[type] = value;
  }
  std::map<cudnnBackendKnobType_t, KnobRange> ranges;
  for (const Descriptor& info : descriptor_array(engines[0], CUDNN_ATTR_ENGINE_KNOB_INFO,
                                                 CUDNN_BACKEND_KNOB_INFO_DESCRIPTOR, CUDNN_KNOB_TYPE_COUNTS)) {
    cudnnBackendKnobType_t type{};
    int64_t returned = 0;
    if (cudnnBackendGetAttribute(info.get(), CUDNN_ATTR_KNOB_INFO_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &returned, &type) !=
        CUDNN_STATUS_SUCCESS)
      continue;
    ranges[type] = {int_attribute(info, CUDNN_ATTR_KNOB_INFO_MINIMUM_VALUE, 0),
                    int_attribute(info, CUDNN_ATTR_KNOB_INFO_MAXIMUM_VALUE, -1),
                    std::max<int64_t>(1, int_attribute(info, CUDNN_ATTR_KNOB_INFO_STRIDE, 1))};
  }
  for (const auto& [type, range] : ranges) {
    const auto it = chosen.find(type);
    const int64_t current = it != chosen.end() ? it->second : range.min;
    int tried = 0;
    for (int64_t value = range.min; value <= range.max && tried < kValuesPerKnob; value += range.stride) {
      if (value == current) continue;
      if (static_cast<int>(variants.size()) >= max_variants) return variants;
      ++tried;
      std::map<cudnnBackendKnobType_t, int64_t> choices = chosen;
      choices[type] = value;
      for (KnobVariant& made : make_config(graph, engine_index, choices)) variants.push_back(std::move(made));
    }
  }
  return variants;
}

std::vector<KnobVariant> default_engine_config(const Descriptor& graph, int64_t engine_index) {
  return make_config(graph, engine_index, {});
}

int64_t engine_count(const Descriptor& graph) {
  return int_attribute(graph, CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT, 0);
}

}  // namespace dcae::ops::cuda::cudnn_conv_detail
