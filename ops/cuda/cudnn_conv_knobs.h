// Engine configurations beyond what cuDNN's heuristics propose: the same engine with its knobs (tile shapes,
// split-K, cluster shape, swizzling, ...) moved off the heuristic's setting, for the convolution autotuner to time.
#pragma once
#include <vector>

#include "ops/cuda/cudnn_descriptor.h"

namespace dcae::ops::cuda::cudnn_conv_detail {

using cudnn::Descriptor;

// A finalized engine configuration and the engine and knob-choice descriptors it was made of (kept alive with it,
// as cudnn-frontend does, since the configuration refers to them).
struct KnobVariant {
  Descriptor config;
  std::vector<Descriptor> parts;
};

// Finalized engine configurations of `config`'s engine for the finalized operation graph `graph`, each with one
// knob at another legal value (up to kValuesPerKnob of them per knob) and the others as `config` sets them; at
// most `max_variants`, those cuDNN refuses left out.
std::vector<KnobVariant> knob_variants(const Descriptor& graph, const Descriptor& config, int max_variants);

// Engine `engine_index` of the finalized `graph` with its default knob settings, finalized; empty when cuDNN
// refuses it (the engine does not support the graph).
std::vector<KnobVariant> default_engine_config(const Descriptor& graph, int64_t engine_index);

// How many engines cuDNN has for the finalized `graph` (global indices 0..count-1); 0 when it does not say.
int64_t engine_count(const Descriptor& graph);

}  // namespace dcae::ops::cuda::cudnn_conv_detail
